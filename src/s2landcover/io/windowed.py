"""Streaming GeoTIFF / JPEG 2000 writers: rasters written window by window, atomically.

A writer never holds more than the window it is given, so the memory of a writer is bounded by the
window size whatever the raster size. Every file is written under a temporary name and renamed when
complete (:func:`s2landcover.io.rasters.atomic_path`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.windows import Window

from s2landcover.io.atomic import (
    check_written,
    partial_path,
    remove_leftovers,
    require_free_space,
)
from s2landcover.io.rasters import (
    Grid,
    atomic_path,
    finish_overviews,
    geotiff_profile,
    overview_bytes,
)

# Size of a compressed raster against its raw values, for the free-space check before writing
# (rounded down: the check must never refuse a file that would fit; failures are still caught).
COMPRESSED_FRACTION = 0.1

# Lossless JPEG 2000 as ESA writes it (reversible 5/3 wavelet), tiled so readers decode by blocks.
JP2_OPTIONS: dict[str, Any] = {
    "QUALITY": 100,
    "REVERSIBLE": "YES",
    "BLOCKXSIZE": 1024,
    "BLOCKYSIZE": 1024,
    "YCBCR420": "NO",
}


def _no_sidecars() -> rasterio.Env:
    # GDAL would otherwise drop .aux.xml files beside JP2 products (statistics, PAM metadata).
    return rasterio.Env(GDAL_PAM_ENABLED="NO")


def write_geotiff_windows(
    path: str | Path,
    grid: Grid,
    dtype: str,
    nodata: float | None,
    blocks: Iterable[tuple[Window, np.ndarray]],
    *,
    count: int = 1,
    descriptions: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
    scales: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
    overview_factors: Sequence[int] = (),
    overview_resampling: Resampling = Resampling.nearest,
) -> None:
    """Write a tiled, compressed GeoTIFF on ``grid`` from ``(window, array)`` blocks.

    Each array is ``(count, h, w)`` (or ``(h, w)`` when ``count`` is 1) for its window. Blocks must
    cover the raster; pixels never written hold ``nodata``. Memory: one block at a time.
    """
    profile = geotiff_profile(grid, count, dtype, nodata)
    raw = grid.width * grid.height * count * np.dtype(dtype).itemsize * COMPRESSED_FRACTION
    with atomic_path(path, needs_bytes=raw + overview_bytes(raw, overview_factors)) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            if colormap:  # before any pixel: GDAL cannot switch the photometric tag afterwards
                dst.write_colormap(1, dict(colormap))
            for window, array in blocks:
                if array.ndim == 2:
                    dst.write(array, 1, window=window)
                else:
                    dst.write(array, window=window)
            for band, description in enumerate(descriptions or [], start=1):
                dst.set_band_description(band, description)
            if scales is not None:
                dst.scales = tuple(float(s) for s in scales)
            if offsets is not None:
                dst.offsets = tuple(float(o) for o in offsets)
            if tags:
                dst.update_tags(**{k: str(v) for k, v in tags.items()})
        # after closing (every block flushed): room checked, then overviews (see finish_overviews)
        finish_overviews(tmp, overview_factors, overview_resampling, profile)


def overview_factors_for(width: int, height: int, smallest: int = 256) -> list[int]:
    """Overview factors 2, 4, 8, ... until the overview's longest side is <= ``smallest``."""
    factors = []
    factor = 2
    while max(width, height) / factor >= smallest / 2 and factor <= 1024:
        factors.append(factor)
        if max(width, height) / factor <= smallest:
            break
        factor *= 2
    return factors


class JP2BandWriter:
    """Streams one band into a lossless JPEG 2000 file (GDAL's OpenJPEG driver).

    The OpenJPEG driver can only create a file by copying a finished dataset, so windows go to a
    temporary uncompressed GeoTIFF first, which :meth:`close` converts block by block. Memory: one
    window plus one 1024 x 1024 JP2 block.
    """

    def __init__(
        self, path: str | Path, grid: Grid, dtype: str = "uint16", nodata: float | None = None
    ):
        self.path = Path(path)
        self.grid = grid
        self.nodata = nodata
        # A fixed name per output (``.<name>.stage.tif``), removed by the next run if this one is
        # killed (remove_leftovers); the JP2 itself goes through atomic_path.
        remove_leftovers(self.path)
        self._tmp = partial_path(self.path, "stage").with_suffix(".tif")
        raw = grid.width * grid.height * np.dtype(dtype).itemsize
        require_free_space(self.path.parent, 2 * raw)  # the uncompressed stage + the JP2
        profile = geotiff_profile(grid, 1, dtype, nodata, compress=None, predictor=None)
        profile.pop("compress", None)
        profile.pop("predictor", None)
        profile.pop("zlevel", None)
        self._dataset = rasterio.open(self._tmp, "w", **profile)

    def write(self, window: Window, array: np.ndarray) -> None:
        """Write a ``(h, w)`` array into ``window`` (pixels of this band's grid)."""
        self._dataset.write(array, 1, window=window)

    def close(self) -> None:
        """Finish: convert the temporary GeoTIFF into the JP2 file and remove it."""
        self._dataset.close()
        try:
            check_written(self.path.parent, self._tmp.stat().st_size / 2)  # lossless JP2: ~half
            with _no_sidecars(), atomic_path(self.path, keep=[self._tmp]) as tmp:
                rasterio.shutil.copy(self._tmp, tmp, driver="JP2OpenJPEG", **JP2_OPTIONS)
        finally:
            self._tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        """Drop the band without writing it."""
        self._dataset.close()
        self._tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def jp2_band_writers(
    paths_and_grids: Mapping[str, tuple[Path, Grid]],
) -> Iterator[dict[str, JP2BandWriter]]:
    """Open one :class:`JP2BandWriter` per band name; finish all on success, drop all on error."""
    writers: dict[str, JP2BandWriter] = {}
    try:
        for name, (path, grid) in paths_and_grids.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            writers[name] = JP2BandWriter(path, grid)
        yield writers
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for writer in writers.values():
        writer.close()


def write_text(path: str | Path, text: str) -> None:
    """Write a text file (UTF-8) atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def read_window(path: str | Path, window: Window, band: int = 1, fill: float = 0) -> np.ndarray:
    """Read one window of one band; parts outside the raster get ``fill`` (boundless read)."""
    from s2landcover.io.rasters import open_raster

    with open_raster(path) as src:
        return src.read(band, window=window, boundless=True, fill_value=fill)
