"""Raster files: opening with clear errors, grids, GeoTIFF profiles, class metadata, atomic writes.

This subpackage (``s2landcover.io``) is the only place that opens files; the rest of the package
works on arrays, windows and plain values. Grids are (CRS, affine transform, width, height): the
transform maps pixel (col, row) to map coordinates in the CRS's units (metres for UTM).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from s2landcover.classes import (
    NOT_OBSERVED,
    NOT_OBSERVED_COLOR,
    NOT_OBSERVED_NAME,
    ClassTable,
)
from s2landcover.errors import InputError

# GeoTIFF creation options used for every product: tiled, compressed with a predictor, BigTIFF when
# the file could pass 4 GB. Blocks of 512 suit both windowed processing and QGIS display.
BLOCK_SIZE = 512
GTIFF_OPTIONS: dict[str, Any] = {
    "driver": "GTiff",
    "tiled": True,
    "blockxsize": BLOCK_SIZE,
    "blockysize": BLOCK_SIZE,
    "compress": "deflate",
    "zlevel": 6,
    "bigtiff": "IF_SAFER",
    "num_threads": "ALL_CPUS",
}


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform (pixel -> map units), width and height in pixels."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return min(left, right), min(top, bottom), max(left, right), max(top, bottom)

    def window_transform(self, window: Window) -> Affine:
        """Transform of a window of this grid (the grid's transform offset by the window)."""
        return rasterio.windows.transform(window, self.transform)

    def same_as(self, other: Grid, tolerance: float = 1e-6) -> bool:
        """True when both grids have the same CRS, size and (almost) the same transform."""
        return (
            self.crs == other.crs
            and self.width == other.width
            and self.height == other.height
            and self.transform.almost_equals(other.transform, precision=tolerance)
        )

    def describe(self) -> str:
        """One line for error messages."""
        return (
            f"{self.width} x {self.height} px, {self.resolution[0]:g} m pixels, "
            f"CRS {self.crs.to_string() if self.crs else None}, origin "
            f"({self.transform.c:.2f}, {self.transform.f:.2f})"
        )


def open_raster(path: str | Path, mode: str = "r", **kwargs: Any) -> rasterio.DatasetReader:
    """Open a raster with rasterio; a missing or unreadable file becomes an :class:`InputError`."""
    path = str(path)
    if (
        mode == "r"
        and "://" not in path
        and not path.startswith("/vsi")
        and not os.path.exists(path)
    ):
        raise InputError(f"raster file {path} does not exist")
    try:
        return rasterio.open(path, mode, **kwargs)
    except RasterioIOError as error:
        raise InputError(f"cannot read raster {path}: {error}") from None


def read_grid(path: str | Path) -> Grid:
    """The grid of a raster file."""
    with open_raster(path) as src:
        return grid_of(src)


def grid_of(dataset: rasterio.io.DatasetReaderBase) -> Grid:
    """The grid of an open dataset."""
    return Grid(dataset.crs, dataset.transform, dataset.width, dataset.height)


def geotiff_profile(grid: Grid, count: int, dtype: str, nodata: float | None, **extra: Any) -> dict:
    """A rasterio profile for a tiled, compressed GeoTIFF on ``grid``.

    Integer data gets horizontal differencing (predictor 2), floats predictor 3. Blocks shrink to
    the raster size for small rasters (a block may not exceed 512 but must be a multiple of 16).
    """
    profile = dict(GTIFF_OPTIONS)
    profile.update(
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        count=count,
        dtype=dtype,
        nodata=nodata,
        predictor=3 if dtype.startswith("float") else 2,
    )
    if grid.width < BLOCK_SIZE or grid.height < BLOCK_SIZE:
        side = max(16, min(BLOCK_SIZE, (min(grid.width, grid.height) // 16) * 16))
        profile.update(blockxsize=side, blockysize=side)
    profile.update(extra)
    return profile


def write_class_metadata(
    dataset: rasterio.io.DatasetWriter, classes: ClassTable, band: int = 1
) -> None:
    """Embed the class table in an open class raster: colour table, band description, class names.

    The colour table is what QGIS shows as the paletted style; class names go into the GDAL metadata
    (``CLASS_NAMES``, JSON list, index 0 = no data) and, as GDAL category names, into the
    ``.aux.xml`` written by :func:`write_category_names`.
    """
    dataset.write_colormap(band, classes.colormap())
    dataset.set_band_description(band, "land cover class")
    dataset.update_tags(
        band,
        CLASS_NAMES=json.dumps(["no data", *classes.names]),
        CLASS_COLORS=json.dumps(["#000000", *classes.colors]),
    )
    dataset.update_tags(CLASS_TABLE=json.dumps(classes.to_dict()))
    if classes.not_observed:
        dataset.update_tags(
            band,
            NOT_OBSERVED=json.dumps(
                {"value": NOT_OBSERVED, "name": NOT_OBSERVED_NAME, "color": NOT_OBSERVED_COLOR}
            ),
        )


def write_category_names(path: str | Path, classes: ClassTable, band: int = 1) -> Path:
    """Write a GDAL PAM sidecar (``<path>.aux.xml``) with the category names of a class raster.

    GeoTIFF cannot hold category names itself; GDAL (and so QGIS) reads them from this sidecar.
    """
    names = ["no data", *classes.names]
    if classes.not_observed:  # category names are by position: blanks up to 255
        names += [""] * (NOT_OBSERVED - len(names)) + [NOT_OBSERVED_NAME]
    categories = "".join(f"<Category>{escape(n)}</Category>" for n in names)
    xml = (
        f'<PAMDataset><PAMRasterBand band="{band}"><CategoryNames>{categories}</CategoryNames>'
        "</PAMRasterBand></PAMDataset>\n"
    )
    sidecar = Path(f"{path}.aux.xml")
    with atomic_path(sidecar) as tmp:
        tmp.write_text(xml)
    return sidecar


def read_class_table(path: str | Path) -> ClassTable | None:
    """The class table embedded by :func:`write_class_metadata`, or None when there is none."""
    with open_raster(path) as src:
        text = src.tags().get("CLASS_TABLE")
    return ClassTable.from_dict(json.loads(text)) if text else None


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds.

    Works for files and folders. On error the temporary is removed, so an interrupted or failed run
    never leaves something that looks complete. Sidecars (``<tmp>.aux.xml``, ``<tmp>.ovr``) follow.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp{final.suffix}")
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        for sidecar in tmp.parent.glob(tmp.name + ".*"):
            _remove(sidecar)
        raise
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for sidecar in tmp.parent.glob(tmp.name + ".*"):
        os.replace(sidecar, final.with_name(final.name + sidecar.name[len(tmp.name) :]))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
