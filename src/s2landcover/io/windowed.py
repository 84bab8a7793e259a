"""Streaming raster writers: the package's one GeoTIFF writer (:class:`RasterWriter`) and the
JPEG 2000 band writer of the demo's SAFE products; rasters written window by window, atomically.

A writer never holds more than the window it is given, so the memory of a writer is bounded by the
window size whatever the raster size. Every file is written under a temporary name and renamed when
complete (:func:`s2landcover.io.rasters.atomic_path`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.windows import Window

from s2landcover.classes import ClassTable
from s2landcover.io.atomic import (
    NoSpaceError,
    check_written,
    is_disk_full,
    no_space_error,
    partial_path,
    remove_leftovers,
    require_free_space,
)
from s2landcover.io.rasters import (
    Grid,
    atomic_path,
    copy_as_cog,
    finish_overviews,
    geotiff_profile,
    overview_block_size,
    overview_bytes,
    overview_factors,
    write_category_names,
    write_class_metadata,
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


class RasterWriter:
    """The one GeoTIFF writer of the package: windowed, atomic, tiled and compressed, a
    Cloud-Optimized GeoTIFF where the product's contract says so, overviews by the one policy.

    Use as a context manager and :meth:`write` ``(window, array)`` blocks (or write to
    :attr:`dataset` directly, rasterio's way). Pixels never written hold ``nodata``. Windows
    should follow the file's blocks: a window that fills only part of a compressed block makes
    GDAL compress, re-read and re-compress it.

    The file: :func:`~s2landcover.io.rasters.geotiff_profile` (tiled, blocks of 512 px or less,
    DEFLATE with a predictor, BigTIFF when needed) updated by ``profile`` (e.g. zstd level 1,
    band interleaving, other blocks). Colour table, class names and band description of a class
    raster (``classes``) or a ``colormap`` go in before any pixel; descriptions, band tags,
    scales/offsets and tags at the end. Overviews: ``overviews`` None is the package's policy
    (:func:`~s2landcover.io.rasters.overview_factors`), or the factors to build (() for none),
    with ``overview_resampling``.

    How it is finished:

    - ``cog=False``: a tiled GeoTIFF written under the output's temporary name, overviews built
      in place after closing (:func:`~s2landcover.io.rasters.finish_overviews`), renamed.
    - ``cog=True``: written to a stage beside the output (``.<name>.stage.tif``), overviews built
      in it, copied as a COG with the same tiles and compression
      (:func:`~s2landcover.io.rasters.copy_as_cog`) to the temporary name, renamed.
    - ``cog=True`` and ``cog_options``: the stage (fast to write, e.g. zstd level 1) is re-encoded
      by GDAL's COG driver with ``cog_options`` (compression, level, predictor, resampling),
      which builds the policy's overviews from it (``OVERVIEW_COUNT``) while copying;
      ``cog_source`` (called with the closed stage) may name another dataset to copy instead,
      e.g. a VRT of the stage with overviews already computed (``OVERVIEWS=FORCE_USE_EXISTING``
      in ``cog_options``); ``scratch``: its files beside the output, removed like the stage.

    A class raster gets its category names in ``<name>.aux.xml``; ``style`` (a QGIS style
    writer, called with the final path) runs once the raster is in place. Before anything is
    written, leftovers of a killed run are removed and the device must have room for about
    ``compressed_fraction`` of the raw values plus overviews (twice with a stage); on any error
    nothing is left at the output, and a write that failed on a full device is a
    :class:`~s2landcover.io.atomic.NoSpaceError`.
    """

    def __init__(
        self,
        path: str | Path,
        grid: Grid,
        count: int,
        dtype: str,
        nodata: float | None,
        *,
        cog: bool = False,
        profile: Mapping[str, Any] | None = None,
        cog_options: Mapping[str, Any] | None = None,
        classes: ClassTable | None = None,
        colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
        descriptions: Sequence[str] | None = None,
        band_tags: Sequence[Mapping[str, str]] | None = None,
        scales: Sequence[float] | None = None,
        offsets: Sequence[float] | None = None,
        tags: Mapping[str, Any] | None = None,
        overviews: Sequence[int] | None = None,
        overview_resampling: Resampling = Resampling.nearest,
        compressed_fraction: float = COMPRESSED_FRACTION,
        style: Callable[[Path], Any] | None = None,
        cog_source: Callable[[Path], Path] | None = None,
        scratch: Sequence[Path] = (),
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self.profile = geotiff_profile(grid, count, dtype, nodata)
        self.profile.update(profile or {})
        for key in ("compress", "zlevel", "zstd_level", "predictor"):
            if self.profile.get(key) is None:
                self.profile.pop(key, None)
        self.cog = cog
        self.cog_options = dict(cog_options) if cog_options is not None else None
        self.classes = classes
        self.colormap = colormap
        self.descriptions = list(descriptions or [])
        self.band_tags = list(band_tags or [])
        self.scales = scales
        self.offsets = offsets
        self.tags = {k: str(v) for k, v in (tags or {}).items()}
        self.overviews = (
            overview_factors(grid.width, grid.height) if overviews is None else list(overviews)
        )
        self.overview_resampling = overview_resampling
        self.style = style
        self.cog_source = cog_source
        self.scratch = list(scratch)
        raw = grid.width * grid.height * count * np.dtype(dtype).itemsize
        size = raw * compressed_fraction
        self.needs_bytes = (2 if cog else 1) * (size + overview_bytes(size, self.overviews))
        self.dataset: Any = None
        self._atomic: Any = None
        self._tmp: Path | None = None
        self._stage: Path | None = None

    def __enter__(self) -> RasterWriter:
        self._atomic = atomic_path(self.path, needs_bytes=self.needs_bytes)
        self._tmp = self._atomic.__enter__()
        # The stage is not a sidecar of the temporary name (atomic_path would rename those); its
        # fixed name lets the next run remove it if this one is killed.
        self._stage = partial_path(self.path, "stage").with_suffix(".tif") if self.cog else None
        try:
            self.dataset = rasterio.open(self._stage or self._tmp, "w", **self.profile)
            # before any pixel: GDAL cannot switch the photometric tag afterwards
            if self.classes is not None:
                write_class_metadata(self.dataset, self.classes)
            elif self.colormap:
                self.dataset.write_colormap(1, dict(self.colormap))
        except BaseException as error:
            self._fail(error)
        return self

    def write(self, window: Window, array: np.ndarray) -> None:
        """Write ``array`` into ``window``: ``(count, h, w)``, or ``(h, w)`` for band 1."""
        if array.ndim == 2:
            self.dataset.write(array, 1, window=window)
        else:
            self.dataset.write(array, window=window)

    def _finish_metadata(self) -> None:
        dataset = self.dataset
        for band, description in enumerate(self.descriptions, start=1):
            dataset.set_band_description(band, description)
        for band, band_tags in enumerate(self.band_tags, start=1):
            dataset.update_tags(band, **band_tags)
        if self.scales is not None:
            dataset.scales = tuple(float(s) for s in self.scales)
        if self.offsets is not None:
            dataset.offsets = tuple(float(o) for o in self.offsets)
        if self.tags:
            dataset.update_tags(**self.tags)

    def _finish_file(self) -> None:
        assert self._tmp is not None
        written = self._stage or self._tmp
        if self.cog_options is not None:
            source = self.cog_source(written) if self.cog_source is not None else written
            # the COG: about the same + overviews (or + the overviews' own stages, scratch)
            stage_bytes = written.stat().st_size + sum(
                p.stat().st_size for p in self.scratch if p.suffix == ".tif" and p.exists()
            )
            check_written(self._tmp.parent, stage_bytes * 1.4, output_bytes=stage_bytes * 1.4)
            options = {
                "OVERVIEW_COUNT": len(self.overviews),
                "BLOCKSIZE": overview_block_size(self.grid.width, self.grid.height),
                "BIGTIFF": "IF_SAFER",
                "NUM_THREADS": "ALL_CPUS",
                **self.cog_options,
            }
            rasterio.shutil.copy(str(source), str(self._tmp), driver="COG", **options)
        else:
            # after closing (every block flushed): room checked, then overviews
            finish_overviews(written, self.overviews, self.overview_resampling, self.profile)
            if self._stage is not None:
                copy_as_cog(self._stage, self._tmp, self.profile)
        if self.classes is not None:
            write_category_names(self._tmp, self.classes)

    def _remove_stage(self) -> None:
        if self._stage is not None:
            self._stage.unlink(missing_ok=True)
            Path(f"{self._stage}.aux.xml").unlink(missing_ok=True)
        for path in self.scratch:
            path.unlink(missing_ok=True)
            Path(f"{path}.aux.xml").unlink(missing_ok=True)

    def _fail(self, error: BaseException) -> None:
        """Remove everything, then raise ``error`` (a :class:`NoSpaceError` when the device is
        full, judged before the stage frees its space)."""
        full = is_disk_full(error, self.path.parent)
        if self.dataset is not None and not self.dataset.closed:
            with contextlib.suppress(Exception):
                self.dataset.close()
        self._remove_stage()
        try:
            self._atomic.__exit__(type(error), error, error.__traceback__)
        except NoSpaceError:
            raise
        except BaseException:
            pass  # the same error, re-raised below
        if full:
            raise no_space_error(self.path.parent, self.needs_bytes) from error
        raise error

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc is not None:
            self._fail(exc)
        try:
            self._finish_metadata()
            self.dataset.close()  # flushes every block: the size is known, failures show
            self._finish_file()
        except BaseException as error:
            self._fail(error)
        self._remove_stage()
        self._atomic.__exit__(None, None, None)
        if self.style is not None:
            self.style(self.path)
        return False


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
    overview_factors: Sequence[int] | None = None,
    overview_resampling: Resampling = Resampling.nearest,
) -> None:
    """Write a tiled, compressed GeoTIFF (not a COG) on ``grid`` from ``(window, array)`` blocks
    with a :class:`RasterWriter`; ``overview_factors`` None: the package's overview policy.

    Each array is ``(count, h, w)`` (or ``(h, w)`` when ``count`` is 1) for its window. Blocks must
    cover the raster; pixels never written hold ``nodata``. Memory: one block at a time.
    """
    with RasterWriter(
        path,
        grid,
        count,
        dtype,
        nodata,
        colormap=colormap,
        descriptions=descriptions,
        scales=scales,
        offsets=offsets,
        tags=tags,
        overviews=overview_factors,
        overview_resampling=overview_resampling,
    ) as writer:
        for window, array in blocks:
            writer.write(window, array)


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


def read_window(path: str | Path, window: Window, band: int = 1, fill: float = 0) -> np.ndarray:
    """Read one window of one band; parts outside the raster get ``fill`` (boundless read)."""
    from s2landcover.io.rasters import open_raster

    with open_raster(path) as src:
        return src.read(band, window=window, boundless=True, fill_value=fill)
