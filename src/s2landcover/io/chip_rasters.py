"""Files of chip classification: the chip-resolution class raster, the chip footprint layer.

The chip-resolution raster holds one pixel per chip window (its grid:
:func:`s2landcover.classify.chip_grid`); it is a small uint8 class raster (a 10,980 px scene at
300 px chips is 37 x 37 px), written whole, with the class table's colours and names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio

from s2landcover.classes import ClassTable
from s2landcover.io.chipstore import write_footprints
from s2landcover.io.qgis_styles import write_class_style
from s2landcover.io.rasters import (
    Grid,
    atomic_path,
    geotiff_profile,
    write_category_names,
    write_class_metadata,
)


def write_chip_class_raster(
    path: str | Path, labels: np.ndarray, grid: Grid, classes: ClassTable
) -> Path:
    """Write a (rows, cols) uint8 class array (0 = no chip / no data) as a GeoTIFF on ``grid``.

    Tiled and compressed (:func:`geotiff_profile`), nodata 0, colour table, class names in the
    metadata and in a ``.aux.xml`` sidecar (category names for QGIS); written atomically, with a
    QGIS style ``<stem>.qml`` beside it (exactly the classes, paletted).
    """
    path = Path(path)
    labels = np.asarray(labels, dtype=np.uint8)
    if labels.shape != (grid.height, grid.width):
        raise ValueError(f"labels {labels.shape} do not match the grid {grid.height, grid.width}")
    profile = geotiff_profile(grid, 1, "uint8", 0)
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(labels, 1)
            write_class_metadata(dst, classes)
        write_category_names(tmp, classes)
    write_class_style(path, classes)
    return path


def write_chip_predictions_layer(
    table: pd.DataFrame, path: str | Path, columns: Sequence[str]
) -> dict[str, int]:
    """The chip footprints (minx/miny/maxx/maxy, crs) with the given columns, as a GeoPackage."""
    return write_footprints(table, path, columns)
