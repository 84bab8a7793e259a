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
from rasterio.windows import Window

from s2landcover.classes import ClassTable
from s2landcover.io.chipstore import write_footprints
from s2landcover.io.qgis_styles import write_class_style
from s2landcover.io.rasters import Grid
from s2landcover.io.windowed import RasterWriter


def write_chip_class_raster(
    path: str | Path, labels: np.ndarray, grid: Grid, classes: ClassTable
) -> Path:
    """Write a (rows, cols) uint8 class array (0 = no chip / no data) as a GeoTIFF on ``grid``.

    The package's :class:`~s2landcover.io.windowed.RasterWriter` (tiled, compressed, overviews by
    its policy: none for a raster this small), nodata 0, colour table, class names in the
    metadata and in a ``.aux.xml`` sidecar (category names for QGIS); written atomically, with a
    QGIS style ``<stem>.qml`` beside it (exactly the classes, paletted).
    """
    path = Path(path)
    labels = np.asarray(labels, dtype=np.uint8)
    if labels.shape != (grid.height, grid.width):
        raise ValueError(f"labels {labels.shape} do not match the grid {grid.height, grid.width}")
    with RasterWriter(
        path,
        grid,
        1,
        "uint8",
        0,
        classes=classes,
        style=lambda final: write_class_style(final, classes),
    ) as writer:
        writer.write(Window(0, 0, grid.width, grid.height), labels)
    return path


def write_chip_predictions_layer(
    table: pd.DataFrame, path: str | Path, columns: Sequence[str]
) -> dict[str, int]:
    """The chip footprints (minx/miny/maxx/maxy, crs) with the given columns, as a GeoPackage."""
    return write_footprints(table, path, columns)
