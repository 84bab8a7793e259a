"""Raster files: opening with clear errors, grids, GeoTIFF profiles, class metadata.

Atomic writes (:func:`atomic_path`, re-exported here) live in :mod:`s2landcover.io.atomic`.

This subpackage (``s2landcover.io``) is the only place that opens files; the rest of the package
works on arrays, windows and plain values. Grids are (CRS, affine transform, width, height): the
transform maps pixel (col, row) to map coordinates in the CRS's units (metres for UTM).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from s2landcover.classes import (
    NOT_OBSERVED,
    NOT_OBSERVED_COLOR,
    NOT_OBSERVED_NAME,
    ClassTable,
)
from s2landcover.errors import InputError
from s2landcover.io.atomic import LOW_SPACE_BYTES, atomic_path, check_written

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


def require_grid(path: str | Path, grid: Grid, name: str, reference: str, hint: str) -> None:
    """:class:`InputError` unless the raster at ``path`` is exactly on ``grid`` (same CRS,
    transform and size): "``name`` ``path`` (its grid) is not on the grid of ``reference`` (the
    grid); ``hint``"."""
    own = read_grid(path)
    if not own.same_as(grid):
        raise InputError(
            f"{name} {path} ({own.describe()}) is not on the grid of {reference} "
            f"({grid.describe()}); {hint}"
        )


def warped_onto(
    dataset: rasterio.io.DatasetReaderBase,
    grid: Grid,
    resampling: Resampling,
    nodata: float | None,
    **source_nodata: float | None,
) -> WarpedVRT:
    """GDAL's warper: ``dataset`` seen on ``grid`` (a :class:`rasterio.vrt.WarpedVRT`, read
    lazily window by window), ``nodata`` outside the source; ``src_nodata=`` overrides the
    source's own no-data value."""
    return WarpedVRT(
        dataset,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=resampling,
        nodata=nodata,
        **source_nodata,
    )


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
    (``CLASS_NAMES``, JSON list, index 0 = no data), as one item per value (``CLASS_001=Water``,
    :func:`class_value_items`) and, as GDAL category names, into the ``.aux.xml`` written by
    :func:`write_category_names`. The metadata is stored in the GeoTIFF itself (its
    ``GDAL_METADATA`` tag), so ``gdalinfo`` and ``rasterio`` show the names on a copy of the
    ``.tif`` alone; GeoTIFF has no place for category names or a raster attribute table (GDAL
    keeps those only in the ``.aux.xml``: measured with GDAL 3.6 and 3.10, both drop them silently
    when PAM sidecars are disabled).
    """
    dataset.write_colormap(band, classes.colormap())
    dataset.set_band_description(band, "land cover class")
    dataset.update_tags(
        band,
        CLASS_NAMES=json.dumps(["no data", *classes.names]),
        CLASS_COLORS=json.dumps(["#000000", *classes.colors]),
        **class_value_items(classes),
    )
    dataset.update_tags(CLASS_TABLE=json.dumps(classes.to_dict()))
    if classes.not_observed:
        dataset.update_tags(
            band,
            NOT_OBSERVED=json.dumps(
                {"value": NOT_OBSERVED, "name": NOT_OBSERVED_NAME, "color": NOT_OBSERVED_COLOR}
            ),
        )


def class_value_items(classes: ClassTable) -> dict[str, str]:
    """Band metadata items naming each value of a class raster: ``CLASS_000=no data``,
    ``CLASS_001=<class 1>``, ... and ``CLASS_255=Not observed`` when the raster can hold it
    (zero-padded so that ``gdalinfo`` lists them in value order)."""
    items = {f"CLASS_{0:03d}": "no data"}
    for index, name in zip(classes.indices, classes.names, strict=True):
        items[f"CLASS_{index:03d}"] = name
    if classes.not_observed:
        items[f"CLASS_{NOT_OBSERVED:03d}"] = NOT_OBSERVED_NAME
    return items


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


def overview_block_size(width: int, height: int) -> int:
    """The block side the overview policy aims at: 512 px, halved (down to 64) while the raster's
    smaller side does not exceed it, so that small rasters still get overviews."""
    side = BLOCK_SIZE
    while side > 64 and min(width, height) <= side:
        side //= 2
    return side


def overview_factors(width: int, height: int) -> list[int]:
    """The one overview policy of every raster the package writes (scene stack, mask, prediction,
    validity, composites): factors 2, 4, 8, ... until the smallest overview fits in one block of
    :func:`overview_block_size` px (GDAL's COG-driver rule), so a scene and its mask, on one grid,
    get the same levels.

    A 10,980 px Sentinel-2 tile gets 2 ... 32 (the 1/32 overview is 344 px), a 600 x 400 px
    raster 2 and 4 (blocks of 256 px), a 300 x 200 px raster 2 and 4 (blocks of 128 px).
    """
    block = overview_block_size(width, height)
    factors: list[int] = []
    factor = 1
    while max(width, height) / factor > block:
        factor *= 2
        factors.append(factor)
    return factors


def overview_bytes(size_bytes: float, factors: Sequence[int]) -> float:
    """About the bytes that overviews of ``factors`` add to a file of ``size_bytes`` (1/f² each)."""
    return size_bytes * sum(1.0 / (f * f) for f in factors)


def finish_overviews(
    path: str | Path,
    factors: Sequence[int],
    resampling: Resampling,
    profile: Mapping[str, Any],
) -> None:
    """Check a GeoTIFF just written and closed, then build its internal overviews in place.

    Closing the dataset first flushes every block, so the file's size is known: the device must
    have room for the overviews (about a third of it) before GDAL starts, which crashed with a
    segmentation fault on a full device, and a device left nearly full after the write means GDAL
    most likely dropped blocks it could not flush (:func:`s2landcover.io.atomic.check_written`).
    Overviews get the file's own compression, level and predictor (as when built before closing;
    measured byte-identical), ``profile`` being its creation profile.
    """
    path = Path(path)
    if not factors:
        check_written(path.parent, output_bytes=path.stat().st_size)
        return
    size = path.stat().st_size
    overviews = overview_bytes(size, factors)
    check_written(path.parent, overviews + LOW_SPACE_BYTES, output_bytes=size + overviews)
    options: dict[str, Any] = {}
    compress = profile.get("compress")
    if compress:
        options["COMPRESS_OVERVIEW"] = str(compress).upper()
    for key, option in (
        ("zstd_level", "ZSTD_LEVEL_OVERVIEW"),
        ("zlevel", "ZLEVEL_OVERVIEW"),
        ("predictor", "PREDICTOR_OVERVIEW"),
    ):
        if profile.get(key) is not None and (key != "predictor" or compress):
            options[option] = str(profile[key])
    threads = profile.get("num_threads")
    open_options = {"num_threads": threads} if threads else {}
    with rasterio.Env(**options), rasterio.open(path, "r+", **open_options) as dst:
        dst.build_overviews(list(factors), resampling)
        dst.update_tags(ns="rio_overview", resampling=resampling.name)
        # also in the default domain, the one a copy to a COG keeps (copy_as_cog)
        dst.update_tags(OVERVIEW_RESAMPLING=resampling.name)
    check_written(path.parent, output_bytes=path.stat().st_size)


def copy_as_cog(stage: str | Path, out: str | Path, profile: Mapping[str, Any]) -> None:
    """Copy a finished, tiled GeoTIFF with internal overviews (``stage``) to ``out`` as a
    Cloud-Optimized GeoTIFF: the same tiles, compression, predictor, interleaving and overviews,
    laid out as COG readers expect (IFDs first, overviews before the full resolution).

    Uses the GTiff driver with ``COPY_SRC_OVERVIEWS=YES`` (the COG driver of GDAL 3.10 would
    make a band-interleaved stack pixel-interleaved); rio-cogeo's ``cog_validate`` passes on the
    result. Pixel values, band descriptions, scale/offset, nodata, colour table and metadata are
    copied; ``profile`` is the stage's creation profile (:func:`geotiff_profile`). The device must
    have room for about the stage's size again (checked; :func:`check_written` after).
    """
    stage, out = Path(stage), Path(out)
    size = stage.stat().st_size
    check_written(out.parent, size + LOW_SPACE_BYTES, output_bytes=size)
    options: dict[str, Any] = {
        "COPY_SRC_OVERVIEWS": "YES",
        "TILED": "YES",
        "BLOCKXSIZE": profile.get("blockxsize", BLOCK_SIZE),
        "BLOCKYSIZE": profile.get("blockysize", BLOCK_SIZE),
        "BIGTIFF": profile.get("bigtiff", "IF_SAFER"),
    }
    if profile.get("interleave"):
        options["INTERLEAVE"] = str(profile["interleave"]).upper()
    compress = profile.get("compress")
    if compress:
        options["COMPRESS"] = str(compress).upper()
        for key, option in (
            ("zstd_level", "ZSTD_LEVEL"),
            ("zlevel", "ZLEVEL"),
            ("predictor", "PREDICTOR"),
        ):
            if profile.get(key) is not None:
                options[option] = str(profile[key])
    if profile.get("num_threads"):
        options["NUM_THREADS"] = str(profile["num_threads"])
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        rasterio.shutil.copy(str(stage), str(out), driver="GTiff", **options)
    check_written(out.parent, output_bytes=out.stat().st_size)
