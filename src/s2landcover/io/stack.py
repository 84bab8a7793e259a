"""Reading band rasters onto a reference grid by windows, and writing the scene stack.

A :class:`BandReader` reads one band of one file; when the file's grid differs from the reference
grid (a 20 m or 60 m band under a 10 m grid), each window is resampled from just the source pixels
under it. GDAL's block cache is capped (:data:`GDAL_CACHE_MB`) so that memory does not depend on
the machine.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.windows
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject
from rasterio.windows import Window

from s2landcover.errors import InputError
from s2landcover.io.qgis_styles import write_scene_style, write_scl_style
from s2landcover.io.rasters import Grid, grid_of, open_raster
from s2landcover.io.windowed import RasterWriter

GDAL_CACHE_MB = 256
# Size of a compressed stack against its raw values, for the free-space check before writing: zstd
# level 1 of reflectance (measured 48-52 MB for 96 MB of raw values, docs/benchmarks/ingest.md),
# rounded down so that the check never refuses a stack that would fit.
COMPRESSED_FRACTION = 0.4
# (block, factor, row_start, col_start, out_shape, nodata, method) -> array: see
# s2landcover.ingest.upsample_aligned.
Upsampler = Callable[
    [np.ndarray, int, float, float, tuple[int, int], "float | None", str], np.ndarray
]


def ingest_env(threads: int) -> rasterio.Env:
    """GDAL settings of ingest: bounded block cache, ``threads`` for JP2 decoding and DEFLATE."""
    return rasterio.Env(
        GDAL_CACHEMAX=GDAL_CACHE_MB,
        GDAL_NUM_THREADS=str(max(1, threads)),
        GDAL_PAM_ENABLED="NO",
    )


class BandReader:
    """One band of a raster file, read window by window on a reference grid.

    When the file's grid differs from the reference grid (a 20 m or 60 m band under a 10 m grid),
    each window reads just the source pixels under it (plus a margin for the resampling kernel)
    and resamples them in memory with GDAL's warper (``rasterio.warp.reproject``); the result is
    identical to warping the whole band at once, because every output pixel sees its whole kernel.

    Args:
        path: file (or GDAL ``/vsizip/`` path).
        band_index: 1-based band of the file.
        name: band name for messages (``B05``).
        grid: the reference grid windows refer to.
        resampling: used when the file's grid differs from ``grid``.
        src_nodata: the value that means no data in the file (None: every value is valid).
    """

    MARGIN = 4  # source pixels around a window: covers the kernels up to lanczos (3 px)

    def __init__(
        self,
        path: str,
        band_index: int,
        name: str,
        grid: Grid,
        resampling: Resampling,
        src_nodata: float | None,
        upsampler: Upsampler | None = None,
    ):
        self.path = path
        self.band_index = band_index
        self.name = name
        self.grid = grid
        self.resampling = resampling
        self.src_nodata = src_nodata
        self._dataset = open_raster(path)
        self.native = grid_of(self._dataset)
        self.dtype = self._dataset.dtypes[band_index - 1]
        self.resampled = not self.native.same_as(grid)
        if self.resampled and self.native.crs != grid.crs:
            crs = self.native.crs
            self._dataset.close()
            raise InputError(
                f"band {name} ({path}) has CRS {crs}, the reference (10 m) grid has {grid.crs}; "
                "all bands of a scene must share one CRS"
            )
        # Integer-factor upsampling onto a grid that shares the file's pixel edges (every
        # Sentinel-2 product) goes through ``upsampler`` for nearest and bilinear.
        self.factor = _aligned_factor(self.native, grid) if self.resampled else None
        self._upsampler = (
            upsampler if resampling in (Resampling.nearest, Resampling.bilinear) else None
        )

    def read(self, window: Window) -> np.ndarray:
        """The band's values (file dtype) in ``window`` of the reference grid.

        Reference pixels outside the file get ``src_nodata`` (0 when the file has none).
        """
        try:
            if not self.resampled:
                return self._dataset.read(self.band_index, window=window)
            return self._read_resampled(window)
        except RasterioError as error:
            raise InputError(
                f"cannot read band {self.name} from {self.path} "
                f"(corrupt or truncated file?): {error}"
            ) from None

    def _read_upsampled(self, window: Window, factor: int) -> np.ndarray:
        t, g = self.native.transform, self.grid.transform
        # Output window corner in source pixel coordinates (a multiple of 1 / factor).
        col = (g.c + window.col_off * g.a - t.c) / t.a
        row = (g.f + window.row_off * g.e - t.f) / t.e
        first_col, first_row = max(0, int(np.floor(col)) - 1), max(0, int(np.floor(row)) - 1)
        last_col = min(self.native.width, int(np.ceil(col + window.width / factor)) + 1)
        last_row = min(self.native.height, int(np.ceil(row + window.height / factor)) + 1)
        shape = (int(window.height), int(window.width))
        if last_col <= first_col or last_row <= first_row:
            fill = self.src_nodata if self.src_nodata is not None else 0
            return np.full(shape, fill, dtype=self.dtype)
        source = Window(first_col, first_row, last_col - first_col, last_row - first_row)
        block = self._dataset.read(self.band_index, window=source)
        assert self._upsampler is not None  # _read_resampled calls this only with one
        out = self._upsampler(
            block,
            factor,
            row - first_row,
            col - first_col,
            shape,
            self.src_nodata,
            self.resampling.name,
        )
        # Output pixels beyond the file's extent are no data, as with GDAL's warper.
        inside_cols = (np.arange(shape[1]) + 0.5) / factor + col
        inside_rows = (np.arange(shape[0]) + 0.5) / factor + row
        outside = (inside_rows < 0) | (inside_rows > self.native.height)
        if outside.any() or ((inside_cols < 0) | (inside_cols > self.native.width)).any():
            fill = self.src_nodata if self.src_nodata is not None else 0
            out[outside] = fill
            out[:, (inside_cols < 0) | (inside_cols > self.native.width)] = fill
        return out

    def _read_resampled(self, window: Window) -> np.ndarray:
        if self.factor is not None and self._upsampler is not None:
            return self._read_upsampled(window, self.factor)
        fill = self.src_nodata if self.src_nodata is not None else 0
        height, width = int(window.height), int(window.width)
        out = np.full((height, width), fill, dtype=self.dtype)
        bounds = rasterio.windows.bounds(window, self.grid.transform)
        source = self._dataset.window(*bounds).round_offsets(op="floor").round_lengths(op="ceil")
        m = self.MARGIN
        source = Window(
            source.col_off - m, source.row_off - m, source.width + 2 * m, source.height + 2 * m
        )
        try:
            source = source.intersection(Window(0, 0, self.native.width, self.native.height))
        except rasterio.errors.WindowError:
            return out  # the window lies outside the file
        data = self._dataset.read(self.band_index, window=source)
        reproject(
            data,
            out,
            src_transform=self._dataset.window_transform(source),
            src_crs=self.native.crs,
            src_nodata=self.src_nodata,
            dst_transform=rasterio.windows.transform(window, self.grid.transform),
            dst_crs=self.grid.crs,
            dst_nodata=fill,
            resampling=self.resampling,
        )
        return out

    def close(self) -> None:
        self._dataset.close()


def _aligned_factor(native: Grid, grid: Grid) -> int | None:
    """k when ``native`` pixels are k x k ``grid`` pixels (north-up, same CRS, shared edges)."""
    t, g = native.transform, grid.transform
    if t.b or t.d or g.b or g.d or native.crs != grid.crs or g.a <= 0 or g.e >= 0:
        return None
    if abs(g.a + g.e) > 1e-9 * g.a or abs(t.a + t.e) > 1e-9 * t.a:
        return None  # not square pixels
    factor = t.a / g.a
    k = round(factor)
    if k < 2 or abs(factor - k) > 1e-9:
        return None
    shift_x, shift_y = (t.c - g.c) / g.a, (t.f - g.f) / g.e
    if abs(shift_x - round(shift_x)) > 1e-6 or abs(shift_y - round(shift_y)) > 1e-6:
        return None
    return k


def describe_raster(path: str) -> dict[str, Any]:
    """Header of a raster: grid, count, dtypes, nodata, descriptions, scales, offsets, tags.

    A file without georeferencing gives the identity transform without a warning: callers check
    the grid (:func:`s2landcover.ingest.check_georeferenced`) and name the file.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        src = open_raster(path)
    with src:
        return {
            "grid": grid_of(src),
            "count": src.count,
            "dtypes": list(src.dtypes),
            "nodata": src.nodata,
            "descriptions": list(src.descriptions),
            "scales": list(src.scales),
            "offsets": list(src.offsets),
            "tags": src.tags(),
        }


@contextlib.contextmanager
def band_readers(
    specs: Sequence[tuple[str, int, str, float | None]],
    grid: Grid,
    resampling: Resampling,
    upsampler: Upsampler | None = None,
) -> Iterator[list[BandReader]]:
    """A :class:`BandReader` per ``(path, band_index, name, src_nodata)``; all closed at the end."""
    readers: list[BandReader] = []
    try:
        for path, index, name, nodata in specs:
            readers.append(BandReader(path, index, name, grid, resampling, nodata, upsampler))
        yield readers
    finally:
        for reader in readers:
            reader.close()


class StackWriter(RasterWriter):
    """Writes a multiband uint16 (or uint8) scene stack, a Cloud-Optimized GeoTIFF, window by
    window: the package's :class:`~s2landcover.io.windowed.RasterWriter` with the stack's
    layout (band interleaved, blocks of ``tile_size``, zstd or DEFLATE level 1, nodata 0), its
    overviews (the package's policy unless ``overview_factors`` are given) and, once in place, a
    QGIS style ``<stem>.qml`` beside it (:func:`write_stack_style`).

    Windows should be aligned to ``tile_size`` (the file's blocks): a window that fills only part
    of a compressed block makes GDAL compress, re-read and re-compress it (measured 20 x slower).
    """

    def __init__(
        self,
        path: str | Path,
        grid: Grid,
        count: int,
        dtype: str,
        *,
        descriptions: Sequence[str],
        scales: Sequence[float] | None = None,
        offsets: Sequence[float] | None = None,
        tags: Mapping[str, str] | None = None,
        band_tags: Sequence[Mapping[str, str]] | None = None,
        overview_factors: Sequence[int] | None = None,
        overview_resampling: Resampling = Resampling.average,
        tile_size: int | None = None,
        compression: str = "zstd",
    ):
        # Band interleaving: GDAL builds overviews of a pixel-interleaved, compressed multiband file
        # about 15 times slower (measured: 15.6 s against 1.1 s for 10 bands of 1500 x 1500).
        # Level 1 of either codec: measured on a 10-band 2,196 px stack, deflate 6 took 5.9 s to
        # write, deflate 1 1.2 s, zstd 1 0.55 s, for 48 / 50 / 52 MB.
        profile: dict[str, Any] = {"interleave": "band", "zlevel": None}
        if tile_size is not None:
            profile.update(blockxsize=tile_size, blockysize=tile_size)
        if compression == "zstd":
            profile.update(compress="zstd", zstd_level=1)
        else:
            profile.update(compress="deflate", zlevel=1)
        super().__init__(
            path,
            grid,
            count,
            dtype,
            0,
            cog=True,
            profile=profile,
            descriptions=descriptions,
            band_tags=band_tags,
            scales=scales,
            offsets=offsets,
            tags=tags,
            overviews=overview_factors,
            overview_resampling=overview_resampling,
            compressed_fraction=COMPRESSED_FRACTION,
            style=lambda final: write_stack_style(final, self.descriptions, self.tags),
        )

    def estimated_bytes(self) -> float:
        """About the size of the file: raw values x :data:`COMPRESSED_FRACTION`, plus overviews."""
        return self.needs_bytes / 2  # the stage and the COG are on the device together

    def __enter__(self) -> StackWriter:
        super().__enter__()
        return self

    def write(self, window: Window, array: np.ndarray) -> None:
        """Write ``(count, h, w)`` values into ``window``."""
        self.dataset.write(array, window=window)


def write_stack_style(
    path: str | Path, descriptions: Sequence[str], tags: Mapping[str, str] | None = None
) -> Path:
    """The QGIS style of a stack written by :class:`StackWriter`: a scene classification band
    (one band described ``SCL`` with a ``CLASS_NAMES`` tag, comma-separated) as its classes, any
    other stack in true colour (:func:`s2landcover.io.qgis_styles.write_scene_style`)."""
    names = (tags or {}).get("CLASS_NAMES")
    if list(descriptions) == ["SCL"] and names:
        return write_scl_style(path, names.split(","))
    return write_scene_style(path)
