"""Files of the evaluation stage: aligned label windows, true-colour reads, tables, figures, report.

Everything the evaluation reads or writes goes through here, so :mod:`s2landcover.evaluate`,
:mod:`s2landcover.plots` and :mod:`s2landcover.report` work on arrays, windows and plain values.
Pixel windows are in the grid of the scene (rows and columns of its 10 m pixels); map coordinates
are never needed because the prediction, the mask and the scene share one grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from s2landcover.errors import InputError
from s2landcover.io.rasters import grid_of, open_raster
from s2landcover.radiometry import nodata_pixels, to_reflectance
from s2landcover.windows import aligned_windows

TRUE_COLOUR_BANDS = ("B04", "B03", "B02")
# GDAL's block cache (default 5 % of RAM) would keep every block read, although the evaluation
# reads each block once: cap it so that memory stays bounded by the window, not the scene.
READ_CACHE_BYTES = 64 * 2**20  # in bytes: a small number would be read as bytes, not MB
SPLIT_COLUMNS = ("scene", "row_off", "col_off", "height", "width", "split")


def iter_label_windows(
    prediction_path: str | Path, mask_path: str | Path, window_size: int = 1024
) -> Iterator[tuple[Window, np.ndarray, np.ndarray]]:
    """Yield ``(window, reference, prediction)`` uint8 blocks of a mask and a prediction.

    Windows follow the block layout of the prediction raster (about ``window_size`` pixels a side).
    Memory: two uint8 arrays of one window plus a GDAL block cache capped at
    :data:`READ_CACHE_BYTES`. Raises :class:`InputError` when the grids differ.
    """
    with (
        rasterio.Env(GDAL_CACHEMAX=READ_CACHE_BYTES),
        open_raster(prediction_path) as pred_src,
        open_raster(mask_path) as mask_src,
    ):
        pred_grid, mask_grid = grid_of(pred_src), grid_of(mask_src)
        if not pred_grid.same_as(mask_grid):
            raise InputError(
                f"prediction {prediction_path} ({pred_grid.describe()}) is not on the grid of "
                f"the mask "
                f"{mask_path} ({mask_grid.describe()}); expected the same CRS, transform and size"
            )
        block_height, block_width = pred_src.block_shapes[0]
        for window in aligned_windows(
            pred_src.width, pred_src.height, block_width, block_height, window_size
        ):
            yield window, mask_src.read(1, window=window), pred_src.read(1, window=window)


def read_split_table(path: str | Path) -> pd.DataFrame:
    """The chip table of the split stage (``split.parquet``) with at least :data:`SPLIT_COLUMNS`."""
    path = Path(path)
    if not path.exists():
        raise InputError(
            f"split table {path} does not exist; expected split.parquet of `s2lc split`"
        )
    table = pd.read_parquet(path)
    missing = [c for c in SPLIT_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(
            f"split table {path} lacks columns {missing}; expected {list(SPLIT_COLUMNS)}"
        )
    return table


def read_training_metrics(model_dir: str | Path) -> pd.DataFrame | None:
    """``metrics.csv`` of a model folder (one row per epoch), or None when there is none."""
    path = Path(model_dir) / "metrics.csv"
    if not path.exists():
        return None
    try:
        table = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None
    return table if len(table) else None


def _true_colour_bands(src: Any, path: str | Path) -> list[int]:
    descriptions = [d or "" for d in src.descriptions]
    indexes = []
    for name in TRUE_COLOUR_BANDS:
        if name not in descriptions:
            # A stack of dates (band names "2024-04-15:B04"): the first date's band.
            dated = [d for d in descriptions if d.split(":")[-1] == name and ":" in d]
            if dated:
                indexes.append(descriptions.index(dated[0]) + 1)
                continue
            raise InputError(
                f"scene {path} has no band described as {name} (band descriptions {descriptions}); "
                f"true colour needs {list(TRUE_COLOUR_BANDS)}"
            )
        indexes.append(descriptions.index(name) + 1)
    return indexes


def _to_reflectance(
    src: Any, indexes: Sequence[int], stored: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    scales = [src.scales[i - 1] or 1.0 for i in indexes]
    offsets = [src.offsets[i - 1] or 0.0 for i in indexes]
    return to_reflectance(stored, scales, offsets), ~nodata_pixels(stored, src.nodata)


def read_true_colour(scene_path: str | Path, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance of bands B04, B03, B02 in ``window``: ((3, h, w) float32, (h, w) bool valid).

    Reflectance is ``stored * scale + offset`` with the GDAL scale/offset of each band; pixels
    where all three bands hold the scene's nodata are not valid (:mod:`s2landcover.radiometry`).
    """
    with open_raster(scene_path) as src:
        indexes = _true_colour_bands(src, scene_path)
        stored = src.read(indexes, window=window, boundless=True, fill_value=src.nodata or 0)
        return _to_reflectance(src, indexes, stored)


def overview_shape(width: int, height: int, longest: int) -> tuple[int, int]:
    """(rows, cols) of a decimated image whose longest side is at most ``longest`` pixels."""
    factor = max(1.0, max(width, height) / longest)
    return max(1, math.floor(height / factor)), max(1, math.floor(width / factor))


def read_true_colour_overview(
    scene_path: str | Path, longest: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decimated true-colour reflectance of a whole scene: ((3, h, w) float32, (h, w) bool valid).

    A nearest-neighbour decimated read (GDAL uses the scene's overviews when present), so memory is
    that of the small image plus GDAL's block cache (capped at :data:`READ_CACHE_BYTES`).
    """
    with rasterio.Env(GDAL_CACHEMAX=READ_CACHE_BYTES), open_raster(scene_path) as src:
        indexes = _true_colour_bands(src, scene_path)
        rows, cols = overview_shape(src.width, src.height, longest)
        stored = src.read(indexes, out_shape=(3, rows, cols), resampling=Resampling.nearest)
        return _to_reflectance(src, indexes, stored)


def read_labels_overview(path: str | Path, longest: int) -> np.ndarray:
    """Nearest-neighbour decimated band 1 of a class raster (uint8, longest side <= ``longest``)."""
    with rasterio.Env(GDAL_CACHEMAX=READ_CACHE_BYTES), open_raster(path) as src:
        rows, cols = overview_shape(src.width, src.height, longest)
        return src.read(1, out_shape=(rows, cols), resampling=Resampling.nearest)


def read_labels(path: str | Path, window: Window) -> np.ndarray:
    """Band 1 of a class raster in ``window`` (uint8; 0 outside the raster)."""
    with open_raster(path) as src:
        return src.read(1, window=window, boundless=True, fill_value=0)
