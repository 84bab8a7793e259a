"""Ingest: a Sentinel-2 product on disk -> the 10 m scene stack (``results/scenes/{scene}.tif``).

Sources (the scene's ``source`` entry of the config):

- ``safe`` / ``demo``: a SAFE product (``.SAFE`` folder or ``.zip``), L2A or L1C. Bands come from
  the granule's JP2 files, scale and offset from the product metadata (L2A
  ``BOA_QUANTIFICATION_VALUE`` and per-band ``BOA_ADD_OFFSET``; L1C ``QUANTIFICATION_VALUE`` and
  ``RADIO_ADD_OFFSET``; the offset is -1000 from processing baseline 04.00 on and absent, i.e. 0,
  before).
- ``band_files``: a folder of one raster per band (``<patch>_B02.tif`` as in BigEarthNet, or
  ``B02.tif``), with an optional ``scene.json`` (written by ``download``) giving files, scales and
  offsets.
- ``geotiff``: one multiband raster whose band order (``band_order`` or the band descriptions) and
  scale (``scale``, ``offset`` or the file's own scale/offset metadata) are known.

The stack holds the stored values of the product (uint16, 0 = no data), band descriptions = band
names, per-band GDAL scale/offset (reflectance = stored * scale + offset), tags (date, product
level, source) and overviews.

Grid: the stack is on the grid of the product's 10 m-class bands, as the source has it. A GeoTIFF
or band folder whose bands share a grid that is not exactly 10 m (9.995 m x 9.997 m) or not on a
10 m raster keeps that grid (with a warning saying so) and those bands keep their values. Only
bands stored on another grid (20 m, 60 m) are resampled onto it, window by window
(``ingest.resampling``, bilinear by default), with a warning naming them and the method; a source
whose bands are all coarser (20 m only) gets a 10 m grid over the same bounds.

Memory: two windows of ``ingest.block_size`` pixels a side of every band at a time (one being
read while the other is written), resampling buffers, and GDAL's block cache (capped at 256 MB):
bounded by the window size and the band count, whatever the scene size (figures measured on a
10,980 x 10,980 px scene in docs/benchmarks/ingest.md).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from s2landcover.errors import InputError
from s2landcover.io.rasters import Grid, overview_factors, read_grid
from s2landcover.io.sentinel2 import (
    ALL_BANDS,
    L2A_BANDS,
    NATIVE_RESOLUTION,
    find_band_files,
    folder_metadata,
    normalize_band_name,
    open_safe_product,
)
from s2landcover.io.stack import StackWriter, band_readers, describe_raster, ingest_env
from s2landcover.windows import block_windows

log = logging.getLogger(__name__)

TEN_M_BANDS = ("B02", "B03", "B04", "B08")
# Pixels finer than this (metres) are "10 m-class": a scene whose bands share such a grid keeps it
# (a 9.995 m GeoTIFF stays 9.995 m). Coarser grids (20 m, 60 m bands only) get a 10 m grid.
TEN_M_CLASS_MAX = 15.0
# Keys of each source type (a typo must not be silently ignored); stac sources are checked by
# download, and ingest reads their download folder as band_files.
SOURCE_KEYS = {
    "demo": {"type", "path", "level"},
    "safe": {"type", "path", "level"},
    "band_files": {"type", "path", "level", "scale", "offset", "nodata"},
    "geotiff": {"type", "path", "level", "band_order", "scale", "offset", "nodata"},
}
# Encoding used when a source is not stored as unsigned integers (floats, int16): L2A's own.
L2A_SCALE, L2A_OFFSET = 1e-4, -0.1
SCL_CLASSES = (
    "no data",
    "saturated or defective",
    "dark area pixels",
    "cloud shadows",
    "vegetation",
    "not vegetated",
    "water",
    "unclassified",
    "cloud medium probability",
    "cloud high probability",
    "thin cirrus",
    "snow",
)


@dataclass
class BandPlan:
    """Where one output band comes from and how its stored values are read."""

    name: str
    path: str
    index: int  # 1-based band of the file
    scale: float  # of the source values
    offset: float
    src_nodata: float | None
    dtype: str = "uint16"
    native_resolution: float | None = None


@dataclass
class IngestPlan:
    """Everything needed to write a scene stack, resolved and checked before anything is written."""

    source_type: str
    grid: Grid
    bands: list[BandPlan]
    level: str
    date: str
    tags: dict[str, str] = field(default_factory=dict)
    scl: BandPlan | None = None
    # True when ``grid`` is a 10 m grid made over bands that are all coarser (no band's own grid)
    refined: bool = False

    @property
    def converted(self) -> bool:
        """True when source values are re-encoded (not uint8/uint16) as L2A DN."""
        return any(b.dtype not in ("uint8", "uint16") for b in self.bands)


# ----------------------------------------------------------------------------------------------
# Resolving sources
# ----------------------------------------------------------------------------------------------


def _missing_band_error(where: str, missing: Sequence[str], found: Sequence[str]) -> InputError:
    return InputError(
        f"{where} has no band {', '.join(missing)} (configured bands); bands found: "
        f"{', '.join(sorted(found, key=_band_order)) or 'none'}"
    )


def _band_order(name: str) -> int:
    return ALL_BANDS.index(name) if name in ALL_BANDS else len(ALL_BANDS)


def _check_band_names(bands: Sequence[str]) -> list[str]:
    names = []
    for band in bands:
        name = normalize_band_name(band)
        if name is None or name == "SCL":
            raise InputError(
                f"bands: {band!r} is not a Sentinel-2 band; expected one of {list(ALL_BANDS)}"
            )
        names.append(name)
    return names


def _per_band(value: Any, band: str, key: str) -> float | None:
    """A source's ``scale``/``offset``: one number for all bands or a mapping band -> number."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        if band not in value:
            raise InputError(f"source.{key} gives no value for band {band}; it has {sorted(value)}")
        value = value[band]
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"source.{key} {value!r} is not a number") from None


def refined_grid(grid: Grid, resolution: float = 10.0) -> Grid:
    """A grid of ``resolution`` (CRS units) pixels over the same bounds as ``grid`` (north-up)."""
    left, bottom, right, top = grid.bounds
    width = max(1, round((right - left) / resolution))
    height = max(1, round((top - bottom) / resolution))
    return Grid(grid.crs, Affine(resolution, 0, left, 0, -resolution, top), width, height)


def _ten_metre_class(grid: Grid) -> bool:
    """True when ``grid`` is kept as the stack grid: 10 m-class pixels (finer than
    :data:`TEN_M_CLASS_MAX`), or a grid that is not a north-up grid in metres (left as it is)."""
    if grid.crs is None or not grid.crs.is_projected or grid.transform.b or grid.transform.d:
        return True
    return max(grid.resolution) < TEN_M_CLASS_MAX


def _stack_grid(grid: Grid) -> Grid:
    """The stack grid of bands on ``grid``: ``grid`` itself when its pixels are 10 m-class (a
    9.995 m grid stays 9.995 m: the user's grid is kept, no pixel resampled), else (20 m or 60 m
    bands only) a 10 m grid over the same bounds, onto which every band is resampled."""
    return grid if _ten_metre_class(grid) else refined_grid(grid, 10.0)


def off_ten_metre_raster(grid: Grid) -> str | None:
    """How a grid kept as the stack grid departs from an exact 10 m raster, or None.

    Pixels not exactly 10 m (9.995 m x 9.997 m), or corners not on multiples of 10 m.
    """
    if grid.crs is None or not grid.crs.is_projected or grid.transform.b or grid.transform.d:
        return None
    res_x, res_y = grid.resolution
    if abs(res_x - 10.0) > 1e-6 or abs(res_y - 10.0) > 1e-6:
        return f"{res_x:.6g} m x {res_y:.6g} m pixels, not exactly 10 m"
    x0, y0 = grid.transform.c, grid.transform.f
    if abs(x0 / 10 - round(x0 / 10)) > 1e-6 or abs(y0 / 10 - round(y0 / 10)) > 1e-6:
        return f"corner ({x0:.3f}, {y0:.3f}) not on a 10 m raster"
    return None


def plan_safe(
    source: Mapping[str, Any], bands: Sequence[str], want_scl: bool, expected_level: str | None
) -> IngestPlan:
    """Resolve a SAFE source (folder or zip) into an :class:`IngestPlan`."""
    path = source.get("path")
    if not path:
        raise InputError(
            f"source of type {source.get('type')!r} needs `path` (a .SAFE folder or .zip)"
        )
    product = open_safe_product(path)
    expected = expected_level or source.get("level")
    if expected and product.level != str(expected).upper():
        raise InputError(
            f"SAFE product {path} is {product.level} "
            f"(PROCESSING_LEVEL in {product.metadata_file}); "
            f"the config expects source.level {expected}"
        )
    if product.level == "L2A" and "B10" in bands:
        raise InputError(
            f"band B10 (cirrus) is not in L2A products (Sen2Cor drops it); {path} is L2A. "
            "Remove B10 "
            f"from `bands` (the 12-band L2A set is {list(L2A_BANDS)}) or ingest the L1C product"
        )
    spectral = [b for b in product.files if b != "SCL"]
    missing = [b for b in bands if b not in product.files]
    if missing:
        raise _missing_band_error(f"SAFE product {path}", missing, spectral)
    reference = next((b for b in TEN_M_BANDS if b in product.files), None)
    if reference is None:
        raise InputError(
            f"SAFE product {path} has none of the 10 m bands {TEN_M_BANDS} to define the grid"
        )
    grid = read_grid(product.files[reference])
    plans = [
        BandPlan(
            b,
            product.files[b],
            1,
            product.scales[b],
            product.offsets[b],
            0,
            native_resolution=NATIVE_RESOLUTION[b],
        )
        for b in bands
    ]
    scl = None
    if want_scl:
        if "SCL" not in product.files:
            raise InputError(
                f"SAFE product {path} ({product.level}) has no scene classification (SCL) band; "
                "SCL exists in L2A products only: set ingest.include_scl to false"
            )
        scl = BandPlan(
            "SCL", product.files["SCL"], 1, 1.0, 0.0, 0, dtype="uint8", native_resolution=20
        )
    return IngestPlan(
        source_type=str(source.get("type")),
        grid=grid,
        bands=plans,
        level=product.level,
        date=product.sensing_time[:10],
        tags={
            "SENSING_TIME": product.sensing_time,
            "PROCESSING_BASELINE": product.processing_baseline,
            "SOURCE_PATH": str(path),
        },
        scl=scl,
    )


def plan_band_files(source: Mapping[str, Any], bands: Sequence[str], want_scl: bool) -> IngestPlan:
    """Resolve a folder of one raster per band (BigEarthNet layout or ``download`` output)."""
    folder = source.get("path")
    if not folder:
        raise InputError(
            "source of type 'band_files' needs `path` (a folder of one raster per band)"
        )
    folder = Path(folder)
    files = {band: str(path) for band, path in find_band_files(folder).items()}
    meta = folder_metadata(folder)
    scene = meta.get("scene", {})
    for band, name in (scene.get("files") or {}).items():
        band_name = normalize_band_name(band)
        if band_name:
            files[band_name] = str(folder / name)
    missing = [b for b in bands if b not in files]
    if missing:
        raise _missing_band_error(
            f"band folder {folder}", missing, [b for b in files if b != "SCL"]
        )
    reference = next((b for b in TEN_M_BANDS if b in files), None)
    headers = {
        b: describe_raster(files[b])
        for b in dict.fromkeys([*bands, *([reference] if reference else [])])
    }
    for band in bands:
        if headers[band]["count"] != 1:
            raise InputError(
                f"band file {files[band]} has {headers[band]['count']} bands; "
                "a band folder holds one "
                "band per file (use source type 'geotiff' for a multiband file)"
            )
    if reference is not None:  # the grid of the user's 10 m band, whatever its pixel size
        grid, refined = headers[reference]["grid"], False
    else:
        finest = min(bands, key=lambda b: headers[b]["grid"].resolution[0])
        grid = _stack_grid(headers[finest]["grid"])
        refined = grid is not headers[finest]["grid"]
    plans = []
    scene_scales, scene_offsets = scene.get("scales") or {}, scene.get("offsets") or {}
    for band in bands:
        header = headers[band]
        scale = _per_band(source.get("scale"), band, "scale")
        if scale is None:
            scale = scene_scales.get(band)
        if scale is None and header["scales"][0] not in (None, 1.0):
            scale = header["scales"][0]
        offset = _per_band(source.get("offset"), band, "offset")
        if offset is None:
            offset = scene_offsets.get(band)
        if offset is None:
            offset = header["offsets"][0] or 0.0
        nodata = _source_nodata(source, header)
        plans.append(
            BandPlan(
                band,
                files[band],
                1,
                1e-4 if scale is None else float(scale),  # Sen2Cor / BigEarthNet convention
                float(offset),
                nodata,
                dtype=header["dtypes"][0],
                native_resolution=header["grid"].resolution[0],
            )
        )
    scl = None
    if want_scl:
        if "SCL" not in files:
            raise InputError(
                f"band folder {folder} has no SCL file; set ingest.include_scl to false"
            )
        scl = BandPlan("SCL", files["SCL"], 1, 1.0, 0.0, 0, dtype="uint8")
    date = str(scene.get("datetime") or meta.get("labels", {}).get("acquisition_date") or "")[:10]
    level = str(
        source.get("level")
        or ("L2A" if "MSIL2A" in folder.name else "L1C" if "MSIL1C" in folder.name else "")
    )
    tags = {"SOURCE_PATH": str(folder)}
    if scene.get("item_id"):
        tags["STAC_ITEM"] = str(scene["item_id"])
    if scene.get("processing_baseline"):
        tags["PROCESSING_BASELINE"] = str(scene["processing_baseline"])
    return IngestPlan("band_files", grid, plans, level or "unknown", date, tags, scl, refined)


def _source_nodata(source: Mapping[str, Any], header: Mapping[str, Any]) -> float | None:
    value = source.get("nodata")
    if value is not None:
        if str(value).lower() == "none":
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InputError(f"source.nodata {value!r} is not a number or 'none'") from None
    return header["nodata"] if header["nodata"] is not None else 0.0


def plan_geotiff(source: Mapping[str, Any], bands: Sequence[str]) -> IngestPlan:
    """Resolve one multiband raster whose band order and scale are stated or in its metadata."""
    path = source.get("path")
    if not path:
        raise InputError("source of type 'geotiff' needs `path` (a multiband raster)")
    header = describe_raster(str(path))
    count = header["count"]
    described = [normalize_band_name(d) if d else None for d in header["descriptions"]]
    order = source.get("band_order")
    if order is not None:
        if not isinstance(order, list | tuple):
            raise InputError(f"source.band_order must be a list of band names, found {order!r}")
        names = [normalize_band_name(str(b)) for b in order]
        if None in names:
            raise InputError(
                f"source.band_order {list(order)} holds names that are not Sentinel-2 bands"
            )
        if len(names) != count:
            raise InputError(
                f"source.band_order lists {len(names)} bands {list(order)} "
                f"but {path} has {count} bands"
            )
        if all(described) and described != names:
            raise InputError(
                f"source.band_order {names} does not match the band descriptions of {path}: "
                f"{described}"
            )
    else:
        if not all(described):
            raise InputError(
                f"{path} has {count} bands whose descriptions {header['descriptions']} "
                "do not all name "
                "Sentinel-2 bands; state source.band_order (the band names in file order)"
            )
        names = described
    if len(set(names)) != len(names):
        raise InputError(f"band names of {path} repeat: {names}")
    missing = [b for b in bands if b not in names]
    if missing:
        raise _missing_band_error(str(path), missing, [n for n in names if n])
    file_scales, file_offsets = header["scales"], header["offsets"]
    plans = []
    for band in bands:
        index = names.index(band) + 1
        scale = _per_band(source.get("scale"), band, "scale")
        if scale is None and file_scales[index - 1] not in (None, 1.0):
            scale = file_scales[index - 1]
        if scale is None:
            raise InputError(
                f"{path} carries no scale metadata and source.scale is not set; state source.scale "
                "(0.0001 for ESA reflectance x 10000, 0.001 for x 1000)"
            )
        offset = _per_band(source.get("offset"), band, "offset")
        if offset is None:
            offset = file_offsets[index - 1] or 0.0
        plans.append(
            BandPlan(
                band,
                str(path),
                index,
                float(scale),
                float(offset),
                _source_nodata(source, header),
                dtype=header["dtypes"][index - 1],
                native_resolution=header["grid"].resolution[0],
            )
        )
    grid = _stack_grid(header["grid"])
    tags = {"SOURCE_PATH": str(path)}
    date = str(
        source.get("date") or header["tags"].get("date") or header["tags"].get("DATE") or ""
    )[:10]
    level = str(source.get("level") or "unknown")
    refined = grid is not header["grid"]
    return IngestPlan("geotiff", grid, plans, level, date, tags, refined=refined)


def _user_file(path: str) -> str:
    """The file a user knows: ``/vsizip/a.zip/x/B02.jp2`` -> ``B02.jp2 in a.zip``."""
    if path.startswith("/vsizip/"):
        inner = path[len("/vsizip/") :]
        cut = inner.lower().find(".zip")
        if cut >= 0:
            return f"{inner[cut + 5 :]} in {inner[: cut + 4]}"
    return path


def grid_problem(grid: Grid) -> str | None:
    """Why ``grid`` cannot place a scene on the Earth (no CRS, no geotransform), or None."""
    transform = grid.transform
    if grid.crs is None or not grid.crs.to_wkt():
        return "has no coordinate reference system (CRS)"
    if (
        transform.is_identity
        or transform.determinant == 0
        or not all(np.isfinite(list(transform)[:6]))
    ):
        return (
            f"has no geotransform (pixel size and origin; found {tuple(transform)[:6]}, "
            "GDAL's default for a file without georeferencing)"
        )
    return None


def check_georeferenced(plan: IngestPlan) -> IngestPlan:
    """Every file of ``plan`` has a CRS and a geotransform; :class:`InputError` naming it otherwise.

    A file without georeferencing reads as pixel (col, row) coordinates (identity transform, no
    CRS): the stack would have no place on the Earth and every later stage would fail on it, naming
    derived files. Reads file headers only.
    """
    paths = dict.fromkeys(b.path for b in [*plan.bands, *([plan.scl] if plan.scl else [])])
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            grid = read_grid(path)
        problem = grid_problem(grid)
        if problem is not None:
            raise InputError(
                f"scene file {_user_file(path)} {problem}; expected a georeferenced raster (a "
                "projected CRS such as UTM, e.g. EPSG:32631, with the pixel size and origin in "
                "metres). Georeference it first (e.g. gdal_edit.py -a_srs EPSG:<code> -a_ullr "
                "<ulx> <uly> <lrx> <lry>, or gdalwarp for a file with ground control points)"
            )
    return plan


def plan_ingest(
    source: Mapping[str, Any], bands: Sequence[str], want_scl: bool = False
) -> IngestPlan:
    """Check a scene source and the configured bands; say where every output band comes from.

    Opens only headers and metadata, so every user mistake is reported before anything is written.
    """
    if not isinstance(source, Mapping) or "type" not in source:
        raise InputError(f"scene source {source!r} must be a mapping with a `type`")
    names = _check_band_names(bands)
    kind = source["type"]
    allowed = SOURCE_KEYS.get(kind, set())
    unknown = sorted(set(source) - allowed) if allowed else []
    if unknown:
        raise InputError(
            f"scene source of type {kind!r} has unknown key(s) {unknown}; "
            f"allowed: {sorted(allowed)}"
        )
    if kind == "demo":
        return check_georeferenced(plan_safe(source, names, want_scl, expected_level="L2A"))
    if kind == "safe":
        return check_georeferenced(plan_safe(source, names, want_scl, expected_level=None))
    if kind == "band_files":
        return check_georeferenced(plan_band_files(source, names, want_scl))
    if kind == "geotiff":
        if want_scl:
            raise InputError(
                f"scene source {source.get('path')} is a multiband GeoTIFF without a scene "
                "classification band; set ingest.include_scl to false"
            )
        return check_georeferenced(plan_geotiff(source, names))
    if kind == "stac":
        raise InputError("a `stac` source is ingested from its download folder: pass source.path")
    raise InputError(f"source.type {kind!r} is not one of demo, safe, band_files, geotiff, stac")


# ----------------------------------------------------------------------------------------------
# Window arithmetic (pure)
# ----------------------------------------------------------------------------------------------


def aligned_block_size(block_size: int, tile: int = 512) -> tuple[int, int]:
    """(window side, file tile side): windows are whole multiples of the file's tiles.

    ``block_size`` >= ``tile`` is rounded down to a multiple of ``tile``; a smaller one becomes the
    tile size itself (rounded down to a multiple of 16, as GeoTIFF requires).
    """
    if block_size >= tile:
        return (block_size // tile) * tile, tile
    side = max(16, (block_size // 16) * 16)
    return side, side


def _axis_weights(start: float, count: int, factor: int, size: int) -> tuple[np.ndarray, ...]:
    """Bilinear taps along one axis: output pixel ``i`` of a grid ``factor`` times finer, whose
    first pixel centre lies at source pixel coordinate ``start + 0.5 / factor`` (pixel edges at
    integers), in a source block of ``size`` pixels. Returns (index0, index1, weight1)."""
    centre = start + (np.arange(count) + 0.5) / factor - 0.5  # in source pixel-centre units
    low = np.floor(centre).astype(np.int64)
    weight = (centre - low).astype(np.float32)
    return np.clip(low, 0, size - 1), np.clip(low + 1, 0, size - 1), weight


def upsample_aligned(
    block: np.ndarray,
    factor: int,
    row_start: float,
    col_start: float,
    out_shape: tuple[int, int],
    nodata: float | None,
    method: str,
) -> np.ndarray:
    """Resample a source block onto a grid ``factor`` times finer that shares its pixel edges.

    ``row_start`` / ``col_start`` locate the output window's upper-left corner in the block's pixel
    coordinates (may be fractional, a multiple of 1 / factor). ``method`` is ``nearest`` or
    ``bilinear``. As GDAL's warper with a source nodata value: bilinear weights are renormalised
    over valid source pixels, an output pixel whose centre falls in a no-data source pixel is no
    data, and halves round up (tested equal to ``rasterio.warp.reproject`` for 20 m -> 10 m,
    within 1 DN for 60 m, float32 weights). This is the
    Sentinel-2 case (20 m / 60 m bands under the 10 m grid), computed separably in a few passes
    over the window instead of by GDAL's general warper (about 5 x faster).
    """
    height, width = out_shape
    fill = 0 if nodata is None else nodata
    rows = np.floor(row_start + (np.arange(height) + 0.5) / factor).astype(np.int64)
    cols = np.floor(col_start + (np.arange(width) + 0.5) / factor).astype(np.int64)
    rows = np.clip(rows, 0, block.shape[0] - 1)
    cols = np.clip(cols, 0, block.shape[1] - 1)
    if method == "nearest":
        return block[rows][:, cols]
    r0, r1, wr = _axis_weights(row_start, height, factor, block.shape[0])
    c0, c1, wc = _axis_weights(col_start, width, factor, block.shape[1])
    values = block.astype(np.float32)
    valid = None
    if nodata is not None:
        mask = block != nodata
        if not mask.all():  # most windows hold no no-data: skip the weight renormalisation
            valid = mask.astype(np.float32)
            values *= valid

    def interpolate(array: np.ndarray) -> np.ndarray:
        along_rows = array[r0] * (1 - wr)[:, None] + array[r1] * wr[:, None]
        return along_rows[:, c0] * (1 - wc)[None, :] + along_rows[:, c1] * wc[None, :]

    total = interpolate(values)
    if valid is not None:
        total /= np.maximum(interpolate(valid), 1e-6)
    if np.issubdtype(block.dtype, np.integer):
        info = np.iinfo(block.dtype)
        total = np.clip(np.floor(total + 0.5), info.min, info.max)  # GDAL rounds halves up
    out = total.astype(block.dtype)
    if valid is not None:
        out[block[rows][:, cols] == nodata] = fill
    return out


def combine_bands(
    arrays: Sequence[np.ndarray], plans: Sequence[BandPlan], zero_is_valid: Sequence[bool]
) -> np.ndarray:
    """Stack one window of every band into stored uint16 values with a common no-data mask.

    A pixel is no data (0 in every band) where any band has its source no-data value. Sources in
    uint8/uint16 keep their stored values (a valid 0, possible only when the source declares no
    no-data value, becomes 1 so that 0 keeps meaning no data); other types are re-encoded as L2A DN
    ``round((value * scale + offset + 0.1) * 10000)`` clipped to 1..65535.
    """
    height, width = arrays[0].shape
    out = np.empty((len(arrays), height, width), dtype=np.uint16)
    invalid = np.zeros((height, width), dtype=bool)
    for i, (array, plan, zero_ok) in enumerate(zip(arrays, plans, zero_is_valid, strict=True)):
        if plan.src_nodata is not None:
            invalid |= array == plan.src_nodata
        if np.issubdtype(array.dtype, np.floating):
            invalid |= ~np.isfinite(array)
        if plan.dtype in ("uint8", "uint16"):
            out[i] = array
            if zero_ok:
                np.maximum(out[i], 1, out=out[i])
            elif plan.src_nodata is None:
                invalid |= array == 0
        else:
            reflectance = array.astype(np.float64) * plan.scale + plan.offset
            encoded = np.rint((reflectance - L2A_OFFSET) / L2A_SCALE)
            out[i] = np.clip(np.nan_to_num(encoded, nan=1.0), 1, 65535).astype(np.uint16)
    if invalid.any():
        out *= ~invalid  # zero every band where any band has no data (in place, no fancy indexing)
    return out


# ----------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------


def ingest_scene(
    source: dict[str, Any],
    bands: list[str],
    out_path: str | Path,
    ingest_cfg: dict[str, Any],
    scl_out_path: str | Path | None = None,
    *,
    threads: int | None = None,
) -> dict[str, Any]:
    """Write the 10 m scene stack of one scene (and optionally its SCL band) from its source.

    Args:
        source: the scene's ``source`` of the config (``type`` + ``path`` and type-specific keys).
        bands: band names in output order (``B02``, ..., ``B8A``).
        out_path: the stack GeoTIFF to write (uint16, nodata 0, CRS and grid of the 10 m bands).
        ingest_cfg: the validated ``ingest`` section (``resampling``, ``block_size``).
        scl_out_path: where to write the L2A scene classification on the same grid (uint8,
            nearest), or None.
        threads: threads reading bands in parallel and decoding JP2 (default: CPU count, at most 4).

    Returns:
        A summary: path, bands, level, date, grid, scales, offsets, resampled bands, valid fraction,
        seconds.

    Raises:
        InputError: missing band, band list not matching the file, corrupt file, unexpected level,
            unreadable zip, a file without CRS or geotransform, a scene without any valid pixel.
            Nothing is written then.

    Memory: two windows of every band in flight (``2 x bands x block_size^2`` values, plus
    float32 resampling buffers of a few ``block_size^2`` arrays per thread) and GDAL's block cache
    (capped at 256 MB), independent of the scene size: measured 10980 x 10980 px, see
    docs/benchmarks/ingest.md.
    """
    started = time.perf_counter()
    block_size, tile_size = aligned_block_size(int(ingest_cfg.get("block_size", 1024)))
    resampling = Resampling[str(ingest_cfg.get("resampling", "bilinear"))]
    compression = str(ingest_cfg.get("compression", "zstd"))
    threads = threads or min(4, os.cpu_count() or 1)
    plan = plan_ingest(source, bands, want_scl=scl_out_path is not None)
    grid = plan.grid
    scales = [L2A_SCALE if plan.converted else b.scale for b in plan.bands]
    offsets = [L2A_OFFSET if plan.converted else b.offset for b in plan.bands]
    tags = {
        "DATE": plan.date,
        "PRODUCT_LEVEL": plan.level,
        "SOURCE_TYPE": plan.source_type,
        "BANDS": ",".join(b.name for b in plan.bands),
        "RESAMPLING": resampling.name,
        **plan.tags,
    }
    band_tags = [
        {"NATIVE_RESOLUTION_M": f"{b.native_resolution:g}" if b.native_resolution else ""}
        for b in plan.bands
    ]
    overviews = overview_factors(grid.width, grid.height)
    windows = block_windows(grid.width, grid.height, block_size)
    specs = [(b.path, b.index, b.name, b.src_nodata) for b in plan.bands]
    valid_pixels = 0
    with ingest_env(threads), band_readers(specs, grid, resampling, upsample_aligned) as readers:
        zero_is_valid = [
            b.src_nodata is None and not r.resampled
            for b, r in zip(plan.bands, readers, strict=True)
        ]
        resampled = [r.name for r in readers if r.resampled]
        _log_grid_choice(plan, readers, resampling)
        if resampled:
            tags["RESAMPLED_BANDS"] = ",".join(resampled)
        scl_readers = (
            band_readers([(plan.scl.path, 1, "SCL", 0)], grid, Resampling.nearest, upsample_aligned)
            if plan.scl is not None
            else None
        )
        with (
            _maybe(scl_readers) as scl_reader,
            StackWriter(
                out_path,
                grid,
                len(plan.bands),
                "uint16",
                descriptions=[b.name for b in plan.bands],
                scales=scales,
                offsets=offsets,
                tags=tags,
                band_tags=band_tags,
                overview_factors=overviews,
                # Nearest: overviews are for display; average doubled their cost (37 % of ingest).
                overview_resampling=Resampling.nearest,
                tile_size=tile_size,
                compression=compression,
            ) as writer,
            _maybe(_scl_writer(scl_out_path, grid, plan, overviews, tile_size)) as scl_writer,
            ThreadPoolExecutor(max_workers=threads) as pool,
        ):
            if scl_reader is not None and scl_reader[0].resampled:
                log.warning(
                    "scene %s: resampling the scene classification SCL (%g m) onto the scene's "
                    "grid with nearest",
                    plan.tags.get("SOURCE_PATH", "the scene"),
                    scl_reader[0].native.resolution[0],
                )

            def submit(window: Window) -> list[Any]:
                return [pool.submit(reader.read, window) for reader in readers]

            # Reading window i + 1 overlaps combining and writing window i (each reader still
            # serves one read at a time): two windows of every band in memory at most.
            pending = submit(windows[0])
            for i, window in enumerate(windows):
                arrays = [future.result() for future in pending]
                pending = submit(windows[i + 1]) if i + 1 < len(windows) else []
                stack = combine_bands(arrays, plan.bands, zero_is_valid)
                del arrays
                writer.write(window, stack)
                valid_pixels += int(np.count_nonzero(stack[0]))
                if scl_writer is not None:
                    scl = scl_reader[0].read(window)
                    scl[stack[0] == 0] = 0
                    scl_writer.write(window, scl[None].astype(np.uint8))
            if valid_pixels == 0:  # raised inside the writers: nothing is left behind
                raise InputError(_no_valid_pixels_message(plan, source))
    summary = {
        "path": str(out_path),
        "scl_path": str(scl_out_path) if scl_out_path else None,
        "source_type": plan.source_type,
        "level": plan.level,
        "date": plan.date,
        "bands": [b.name for b in plan.bands],
        "files": {b.name: b.path for b in plan.bands},
        "scales": scales,
        "offsets": offsets,
        "re_encoded": plan.converted,
        "resampled": resampled,
        "grid_off_10m_raster": None if plan.refined else off_ten_metre_raster(grid),
        "resampling": resampling.name,
        "crs": grid.crs.to_string() if grid.crs else None,
        "transform": list(grid.transform)[:6],
        "width": grid.width,
        "height": grid.height,
        "valid_fraction": valid_pixels / float(grid.width * grid.height),
        "block_size": block_size,
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info(
        "ingested %s (%s %s, %d bands, %d x %d px, resampled %s) in %.1f s",
        out_path,
        plan.source_type,
        plan.level,
        len(plan.bands),
        grid.width,
        grid.height,
        resampled or "none",
        summary["seconds"],
    )
    return summary


def _log_grid_choice(plan: IngestPlan, readers: Sequence[Any], resampling: Resampling) -> None:
    """Say which grid the stack is on when it is not an exact 10 m raster, and warn about every
    band whose pixels are resampled (band, native pixel size, method)."""
    where = plan.tags.get("SOURCE_PATH", "the scene")
    off = None if plan.refined else off_ten_metre_raster(plan.grid)
    if off is not None:
        log.warning(
            "scene %s: keeping the source's own grid (%s; %s): the stack, mask and prediction are "
            "on this grid and bands already on it keep their values (no resampling to an exact "
            "10 m raster)",
            where,
            off,
            plan.grid.describe(),
        )
    moved = [r for r in readers if r.resampled]
    if moved:
        log.warning(
            "scene %s: resampling %d band(s) onto the %s grid (%s) with %s: %s",
            where,
            len(moved),
            "10 m" if plan.refined else "scene's",
            plan.grid.describe(),
            resampling.name,
            ", ".join(f"{r.name} ({r.native.resolution[0]:g} m)" for r in moved),
        )


def _no_valid_pixels_message(plan: IngestPlan, source: Mapping[str, Any]) -> str:
    nodata = ", ".join(
        f"{b.name} {'none' if b.src_nodata is None else f'{b.src_nodata:g}'}" for b in plan.bands
    )
    files = sorted({_user_file(b.path) for b in plan.bands})
    where = plan.tags.get("SOURCE_PATH") or source.get("path")
    return (
        f"scene {where} has no valid pixel: every pixel of its {plan.grid.width} x "
        f"{plan.grid.height} px grid is no data in at least one of the bands "
        f"{[b.name for b in plan.bands]} (files {', '.join(files)}; no-data values {nodata}; "
        "a stored 0 also counts as no data where a file declares none). Expected a scene with "
        "at least some valid pixels: check the file, source.nodata and the configured bands"
    )


class _maybe:
    """``with _maybe(cm) as x``: enter ``cm`` when it is not None, else give None."""

    def __init__(self, manager: Any):
        self.manager = manager

    def __enter__(self) -> Any:
        return self.manager.__enter__() if self.manager is not None else None

    def __exit__(self, *exc: Any) -> bool:
        return bool(self.manager.__exit__(*exc)) if self.manager is not None else False


def _scl_writer(
    path: str | Path | None, grid: Grid, plan: IngestPlan, overviews: Sequence[int], tile_size: int
) -> StackWriter | None:
    if path is None:
        return None
    return StackWriter(
        path,
        grid,
        1,
        "uint8",
        descriptions=["SCL"],
        tags={"DATE": plan.date, "PRODUCT_LEVEL": plan.level, "CLASS_NAMES": ",".join(SCL_CLASSES)},
        overview_factors=overviews,
        overview_resampling=Resampling.nearest,
        tile_size=tile_size,
    )


__all__ = ["ingest_scene", "plan_ingest", "refined_grid"]
