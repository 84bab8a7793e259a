"""The file side of mask downsampling: reading a land-cover map window by window onto a target grid.

Two ways to fill one output window, both through GDAL:

- :meth:`MaskSource.warp_window`: GDAL's warper (a ``WarpedVRT`` of the open source onto the
  window, so GDAL reads only the source blocks the window needs), any CRS, nearest or mode.
- :meth:`MaskSource.read_decimated`: a decimated nearest read (``DatasetReader.read`` with
  ``out_shape``), which GDAL serves straight from the source blocks. Valid only when the source
  grid is aligned with the target grid at an integer factor
  (:func:`s2landcover.masks.aligned_decimation`).

Sources are opened with ``OVERVIEW_LEVEL=NONE``: GDAL would otherwise answer a decimated read
(and ``gdalwarp`` a downsampling warp) from the source's overviews, which for a class map are a
different, resampled map (measured on the WorldCover COG: 3 % of pixels differ). Each thread gets
its own dataset handle (GDAL datasets are not thread-safe).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from s2landcover.classes import ClassTable
from s2landcover.errors import InputError
from s2landcover.io.qgis_styles import write_class_style
from s2landcover.io.rasters import Grid, grid_of, open_raster
from s2landcover.io.windowed import RasterWriter

# GDAL's block cache is one per process and defaults to 5 % of RAM (6 GB on a 128 GB node); fixing
# it makes the memory bound of mask downsampling independent of the machine.
GDAL_CACHE_MB = 256
# Memory the warper may use per warp call (source + destination chunk), MB; gdalwarp's default.
WARP_MEMORY_MB = 64
# Error threshold (source pixels) standing for 0, i.e. an exact coordinate transform.
EXACT_TOLERANCE = 1e-9
SOURCE_OPEN_OPTIONS = {"OVERVIEW_LEVEL": "NONE"}
# Size of a DEFLATE class mask against its raw bytes, for the free-space check before writing
# (rounded down: class maps compress well, and the check must never refuse a mask that would fit).
MASK_COMPRESSED_FRACTION = 0.05


@dataclass(frozen=True)
class MaskSourceInfo:
    """What the checks and the window planner need to know about a land-cover map file."""

    path: str
    driver: str
    grid: Grid
    count: int
    dtype: str
    nodata: float | None
    block_shape: tuple[int, int]  # (rows, cols) of the source's blocks


def gdal_env() -> rasterio.Env:
    """The GDAL settings under which masks are downsampled (fixed block cache size)."""
    # rasterio applies GDAL_CACHEMAX at once (GDALSetCacheMax64, in bytes) and restores it on exit
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 1024 * 1024)


def inspect_mask_source(path: str | Path) -> MaskSourceInfo:
    """Describe a land-cover map (missing or unreadable file -> InputError)."""
    with open_raster(path, **SOURCE_OPEN_OPTIONS) as src:
        return MaskSourceInfo(
            path=str(path),
            driver=src.driver,
            grid=grid_of(src),
            count=src.count,
            dtype=src.dtypes[0],
            nodata=src.nodata,
            block_shape=tuple(src.block_shapes[0]) if src.count else (0, 0),
        )


class MaskSource:
    """A land-cover map opened once per thread, read window by window onto a target grid.

    Memory per call: the output window in the working dtype, plus for :meth:`warp_window` at most
    ``WARP_MEMORY_MB`` of warper buffers; source blocks pass through GDAL's block cache (one per
    process, ``GDAL_CACHE_MB``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._handles: list[rasterio.DatasetReader] = []
        self._lock = threading.Lock()

    def _dataset(self) -> rasterio.DatasetReader:
        dataset = getattr(self._local, "dataset", None)
        if dataset is None:
            dataset = open_raster(self.path, **SOURCE_OPEN_OPTIONS)
            self._local.dataset = dataset
            with self._lock:
                self._handles.append(dataset)
        return dataset

    def read_decimated(self, source_window: Window, out_shape: tuple[int, int]) -> np.ndarray:
        """Nearest decimated read of ``source_window`` (source pixels) into ``out_shape`` (rows,
        cols).

        GDAL takes source pixel ``floor((i + 0.5) * factor)`` of the window for output pixel ``i``,
        as the warper does on an aligned grid; the window must lie inside the source.
        """
        return self._dataset().read(
            1, window=source_window, out_shape=out_shape, resampling=Resampling.nearest
        )

    def warp_window(
        self,
        target_crs: CRS,
        window_transform: Affine,
        shape: tuple[int, int],
        dtype: str,
        fill_value: int,
        resampling: Resampling,
        error_threshold: float,
    ) -> np.ndarray:
        """Warp the source onto one output window (``shape`` rows, cols; ``window_transform`` in
        ``target_crs`` units) with GDAL's warper.

        Pixels the source does not cover, and pixels whose source is the file's nodata value, get
        ``fill_value``. ``error_threshold`` is gdalwarp's ``-et`` (source pixels; 0 = exact).
        """
        dataset = self._dataset()
        # rasterio's WarpedVRT honours the error threshold (its reproject() always approximates);
        # GDAL's approximator with a 1e-9 px bound is, in effect, the exact transform.
        with WarpedVRT(
            dataset,
            crs=target_crs,
            transform=window_transform,
            width=shape[1],
            height=shape[0],
            src_nodata=dataset.nodata,
            nodata=fill_value,
            dtype=dtype,
            resampling=resampling,
            tolerance=max(error_threshold, EXACT_TOLERANCE),
            warp_mem_limit=WARP_MEMORY_MB,
            init_dest_nodata=True,
        ) as warped:
            return warped.read(1)

    def close(self) -> None:
        """Close every per-thread handle."""
        with self._lock:
            for dataset in self._handles:
                dataset.close()
            self._handles.clear()


_WORKER_SOURCES: dict[tuple[str, int, int], MaskSource] = {}
_WORKER_SOURCES_LOCK = threading.Lock()


def worker_mask_source(path: str | Path) -> MaskSource:
    """The :class:`MaskSource` of ``path`` shared by the tasks of this process (a dask worker).

    Kept open for the life of the process, keyed by path, modification time and size, so that a
    map replaced under the same name is opened afresh rather than read through a stale handle. The
    stage's own process uses :func:`open_mask_source` instead, which closes its handles.
    """
    path = str(path)
    try:
        stat = os.stat(path)
    except OSError as error:
        raise InputError(
            f"land-cover map {path} cannot be read on this dask worker ({error}); expected it on a "
            "file system that every worker sees, under the same path"
        ) from None
    key = (path, stat.st_mtime_ns, stat.st_size)
    with _WORKER_SOURCES_LOCK:
        source = _WORKER_SOURCES.get(key)
        if source is None:
            for stale in [k for k in _WORKER_SOURCES if k[0] == path]:
                _WORKER_SOURCES.pop(stale).close()
            source = _WORKER_SOURCES[key] = MaskSource(path)
    return source


@contextlib.contextmanager
def open_mask_source(path: str | Path) -> Iterator[MaskSource]:
    """A :class:`MaskSource` closed on exit."""
    source = MaskSource(path)
    try:
        yield source
    finally:
        source.close()


@contextlib.contextmanager
def write_mask(
    out_path: str | Path,
    grid: Grid,
    classes: ClassTable,
    overview_resampling: Resampling = Resampling.nearest,
) -> Iterator[rasterio.io.DatasetWriter]:
    """Open a class-raster GeoTIFF on ``grid`` for window writes; finish it atomically as a COG.

    The package's :class:`~s2landcover.io.windowed.RasterWriter` with ``cog=True``: uint8,
    nodata 0, tiled and DEFLATE-compressed, with the class colour table, class names (tags, one
    item per value, and ``.aux.xml`` category names) and overviews by the package's policy
    (``overview_resampling``); a QGIS style ``<stem>.qml`` with exactly the classes is written
    beside it. Yields the open (stage) dataset. Nothing appears at ``out_path`` unless the block
    completes.
    """
    with RasterWriter(
        out_path,
        grid,
        1,
        "uint8",
        0,
        cog=True,
        classes=classes,
        overview_resampling=overview_resampling,
        compressed_fraction=MASK_COMPRESSED_FRACTION,
        style=lambda final: write_class_style(final, classes),
    ) as writer:
        yield writer.dataset
