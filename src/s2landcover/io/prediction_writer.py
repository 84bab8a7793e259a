"""Files of whole-scene prediction: the scene's bands by name, row bands read in order, and the
streamed uint8 output raster turned into a Cloud-Optimized GeoTIFF.

Reading: :func:`inspect_scene_bands` matches the model's band names to the scene's band
descriptions (never by position) and collects each band's GDAL scale and offset (stored value ->
reflectance) and the no-data value; :func:`read_row_bands` yields bands of rows of those bands in
model order, one read per band of rows (so overlapping windows do not read a block twice).

Writing: :class:`StreamingRasterWriter` receives finished rows in order, buffers them to whole block
rows and hands them to the package's one raster writer
(:class:`~s2landcover.io.windowed.RasterWriter`): a tiled stage GeoTIFF beside the output, at the
end re-encoded by GDAL's COG driver (overviews by the package's policy, internal tiles, ZSTD:
:func:`prediction_cog_options`)
at a temporary name that is renamed to the output only when everything succeeded. The
overviews (the class map's MODE, the confidence raster's NEAREST) are not a second pass over
the output at the end: :class:`OverviewPyramid` computes them from the rows as they stream (in
the writer thread) into one small stage per level, and the COG driver copies them
(byte-identical to the file GDAL's own overview pass made).
Memory: one block row (block height x scene width bytes) per file plus GDAL's block cache;
never the scene height.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from xml.etree import ElementTree

import numpy as np
import rasterio
import rasterio.env
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

from s2landcover.classes import ClassTable
from s2landcover.errors import InputError
from s2landcover.io.atomic import partial_path
from s2landcover.io.qgis_styles import write_class_style, write_confidence_style
from s2landcover.io.rasters import (
    BLOCK_SIZE,
    Grid,
    geotiff_profile,
    grid_of,
    open_raster,
    overview_factors,
)
from s2landcover.io.windowed import RasterWriter


@dataclass(frozen=True)
class SceneBands:
    """Where the model's bands are in a scene stack and how their stored values become reflectance.

    ``indexes`` are 1-based band indexes of the file, in the model's band order; ``scales`` and
    ``offsets`` are the scene's own (reflectance = stored * scale + offset); ``nodata`` is the
    stored no-data value (None when the file declares none). ``grid`` is in the scene's CRS.
    """

    path: str
    names: tuple[str, ...]
    indexes: tuple[int, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    nodata: float | None
    grid: Grid


def inspect_scene_bands(scene_path: str | Path, band_names: Sequence[str]) -> SceneBands:
    """Find ``band_names`` (the model's bands, in model order) among the scene's band descriptions.

    Raises:
        InputError: when the scene cannot be read, has no band names, or lacks one of the bands.
    """
    with open_raster(scene_path) as src:
        descriptions = list(src.descriptions)
        by_name = {name: i + 1 for i, name in enumerate(descriptions) if name}
        if not by_name:
            raise InputError(
                f"scene {scene_path} has no band descriptions; expected the band names "
                f"{list(band_names)} as descriptions (the scene stack written by ingest has them)"
            )
        missing = [name for name in band_names if name not in by_name]
        if missing:
            raise InputError(
                f"scene {scene_path} lacks band(s) {missing} that the model needs; the scene has "
                f"{[d for d in descriptions if d]}, the model was trained on {list(band_names)}"
            )
        indexes = tuple(by_name[name] for name in band_names)
        scales = tuple(float(src.scales[i - 1]) for i in indexes)
        offsets = tuple(float(src.offsets[i - 1]) for i in indexes)
        nodata = src.nodatavals[indexes[0] - 1]
        return SceneBands(
            path=str(scene_path),
            names=tuple(band_names),
            indexes=indexes,
            scales=scales,
            offsets=offsets,
            nodata=None if nodata is None else float(nodata),
            grid=grid_of(src),
        )


def read_row_bands(
    scene: SceneBands,
    row_starts: Sequence[int],
    band_height: int,
    buffers: int = 0,
    threads: int = 1,
    allocate: Callable[[tuple[int, ...], np.dtype], np.ndarray] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(row_off, stored)`` per start: rows ``[row_off, row_off + band_height)`` (clipped to
    the scene) of the model's bands, ``stored`` shaped (C, rows, scene width), the file's dtype,
    C-contiguous.

    Opens its own dataset handle, so it may run in a reader thread. ``buffers`` 0: each band is a
    fresh array; n >= 1: the bands are read into n arrays in turn, made once by ``allocate(shape,
    dtype)`` (default ``np.empty``; e.g. pinned host memory for copies to a CUDA device), so no
    page is touched for the first time after the first n bands and a consumer must be done with a
    band before it asks for the n-th next. Memory: ``max(1, buffers)`` bands of rows.
    ``threads`` > 1: GDAL decodes the blocks of one read on that many threads (the GeoTIFF
    driver's ``NUM_THREADS`` open option; a band of rows spans many compressed blocks).
    """
    make = allocate or (lambda shape, dtype: np.empty(shape, dtype=dtype))
    pool: list[np.ndarray] = []  # flat arrays: a shorter last band is a contiguous prefix
    options = {"num_threads": str(threads)} if threads > 1 else {}
    with open_raster(scene.path, **options) as src:
        dtype = np.dtype(src.dtypes[scene.indexes[0] - 1])
        full = len(scene.indexes) * min(band_height, scene.grid.height) * scene.grid.width
        for i, row_off in enumerate(row_starts):
            rows = min(band_height, scene.grid.height - row_off)
            window = Window(0, row_off, scene.grid.width, rows)
            shape = (len(scene.indexes), rows, scene.grid.width)
            out = None
            if buffers > 0:
                if len(pool) < buffers:
                    pool.append(make((full,), dtype))
                out = pool[i % buffers][: math.prod(shape)].reshape(shape)
            yield row_off, src.read(indexes=list(scene.indexes), window=window, out=out)


def bounded_block_cache(width: int, bands: int, itemsize: int = 2) -> rasterio.Env:
    """A rasterio environment whose GDAL block cache holds about three block rows of the scene
    (its ``bands`` of ``itemsize`` bytes plus the uint8 output) and never more than that.

    GDAL's default cache (5 % of RAM) keeps every block read or written until it is full, so the
    memory of a run would grow with the scene height up to that size; bounding it keeps peak memory
    a function of the scene width. Three block rows avoid decoding a block twice when consecutive
    bands of rows share a block row.
    """
    block_row = BLOCK_SIZE * width * (bands * itemsize + 2)
    return rasterio.Env(GDAL_CACHEMAX=max(64 * 2**20, 3 * block_row))


def prediction_cog_options(categorical: bool, overview_resampling: str) -> dict[str, Any]:
    """GDAL COG-driver options of a prediction raster: ZSTD level 1, with the horizontal
    predictor only for a continuous band (the confidence), not for class codes.

    Measured on a 4,096^2 class map (stand-in network, one COG copy without overviews): DEFLATE
    level 6 with the predictor (the choice before) 0.16 CPU-s for 0.63 MB, without it 0.16 CPU-s
    for 0.51 MB (differences of category codes compress worse than the codes), ZSTD level 1
    0.04 CPU-s for 0.53 MB; on the real class maps of the demo and the Aberystwyth example ZSTD 1
    is 16-23 % larger than DEFLATE 6 (0.09-0.11 MB per 1-2 Mpx), at a quarter of the CPU. The
    confidence raster: 0.07 CPU-s against 0.44, 2.9 MB against 2.0. QGIS, GDAL >= 2.3 and the COG
    validators read ZSTD GeoTIFFs (the scene stacks use it too); ``gdal_translate -co
    COMPRESS=DEFLATE`` converts for software that does not.
    """
    return {
        "COMPRESS": "ZSTD",
        "LEVEL": 1,
        "PREDICTOR": "NO" if categorical else "YES",
        "OVERVIEW_RESAMPLING": overview_resampling,
    }


class StreamingRasterWriter:
    """Write a single-band uint8 raster row band by row band, ending as a Cloud-Optimized GeoTIFF.

    Use as a context manager; call :meth:`write_rows` with consecutive bands of rows from the top
    (any heights). On a clean exit the stage file becomes a COG at ``out_path`` (atomically, with
    ``<out_path>.aux.xml`` holding category names when ``classes`` is given) and a QGIS style
    ``<stem>.qml`` is written beside it: paletted with exactly the classes (and 255 "Not
    observed" when ``classes.not_observed``), or without ``classes`` (the confidence raster, 0..255)
    a grey ramp; on an error nothing is left at ``out_path`` and the stage file is removed.

    With ``overview_resampling`` "MODE" (the class map) or "NEAREST" (the confidence raster)
    the overviews are computed while the rows stream (:class:`OverviewPyramid`, level stages
    ``.<name>.stage.ovr<f>.tif``) and the COG driver copies them from a VRT of the stage
    (``.<name>.stage.vrt``) with ``OVERVIEWS=FORCE_USE_EXISTING``; the level stages and the VRT
    go with the stage, on success and on error, and a killed run's are removed by the next.
    Another resampling is left to the COG driver at the end (from the stage).

    Args:
        out_path: the final GeoTIFF.
        grid: the output grid (the scene's CRS, transform, width, height).
        classes: class table for a class raster (colour table, names); None for other bands.
        description: band description.
        nodata: the no-data value written in the file (0).
        overview_resampling: GDAL resampling of the overviews ("MODE" or "NEAREST" for classes).
    """

    def __init__(
        self,
        out_path: str | Path,
        grid: Grid,
        classes: ClassTable | None = None,
        description: str | None = None,
        nodata: int = 0,
        overview_resampling: str = "NEAREST",
    ) -> None:
        self.out_path = Path(out_path)
        self.grid = grid
        self.classes = classes
        self.description = description
        self.nodata = nodata
        self.overview_resampling = overview_resampling
        self._writer: Any = None
        self._rows: _BlockRowWriter | None = None
        self._pyramid: OverviewPyramid | None = None

    def __enter__(self) -> StreamingRasterWriter:
        # The stage: zstd level 1 without predictor (fast to write); the COG: re-encoded by GDAL's
        # COG driver (prediction_cog_options), which builds the overviews
        # (RasterWriter with cog_options). Free space for the stage and the COG (uint8,
        # compressed: a rough lower bound) is checked and leftovers of a killed run removed,
        # the stage included, before anything is written.
        factors = overview_factors(self.grid.width, self.grid.height)
        pyramid = self.overview_resampling.upper() in ("MODE", "NEAREST") and bool(factors)
        stage = partial_path(self.out_path, "stage")
        scratch = [stage.with_suffix(".vrt")] + [
            OverviewPyramid.level_path(self.out_path, f) for f in (factors if pyramid else [])
        ]
        self._writer = RasterWriter(
            self.out_path,
            self.grid,
            1,
            "uint8",
            self.nodata,
            cog=True,
            profile={"compress": "zstd", "zstd_level": 1, "zlevel": None, "predictor": None},
            cog_options={
                **prediction_cog_options(self.classes is not None, self.overview_resampling),
                **({"OVERVIEWS": "FORCE_USE_EXISTING"} if pyramid else {}),
            },
            classes=self.classes,
            descriptions=[self.description] if self.classes is None and self.description else None,
            compressed_fraction=0.05,
            style=self._style,
            cog_source=self._cog_source if pyramid else None,
            scratch=scratch if pyramid else (),
        )
        self._writer.__enter__()
        if pyramid:
            try:
                self._pyramid = OverviewPyramid(
                    self.out_path,
                    self.grid,
                    factors,
                    self.nodata,
                    self._writer.profile,
                    self.overview_resampling,
                )
            except BaseException as error:
                self._writer.__exit__(type(error), error, error.__traceback__)
        self._rows = _BlockRowWriter(
            self._writer.dataset, self._pyramid.push if self._pyramid is not None else None
        )
        return self

    def _cog_source(self, stage: Path) -> Path:
        # the stage is closed: close the level stages, the COG driver copies a VRT of them all
        assert self._pyramid is not None
        try:
            self._pyramid.close()
        except BaseException:
            self._pyramid.abort()
            raise
        return self._pyramid.write_vrt(stage, stage.with_suffix(".vrt"))

    @property
    def _dataset(self) -> Any:
        """The open stage dataset (tags may be added to it until the writer is closed)."""
        return self._writer.dataset

    def _style(self, final: Path) -> None:
        if self.classes is not None:
            write_class_style(final, self.classes)
        else:
            write_confidence_style(final)

    def write_rows(self, row_off: int, rows: np.ndarray) -> None:
        """Write rows ``[row_off, row_off + len(rows))`` (uint8, shape (n, scene width)); bands of
        rows must come in order without gaps. Rows are buffered to whole block rows so that
        no compressed block is written twice."""
        assert self._rows is not None
        if row_off != self._rows.next_row:
            raise ValueError(
                f"rows must come in order: got row {row_off}, expected {self._rows.next_row}"
            )
        if rows.shape[-1] != self.grid.width or row_off + rows.shape[0] > self.grid.height:
            raise ValueError(
                f"rows {row_off}..{row_off + rows.shape[0]} x {rows.shape[-1]} "
                f"do not fit {self.grid.describe()}"
            )
        self._rows.write_rows(rows)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            try:
                assert self._rows is not None
                self._rows.finish(f"{self.out_path}: rows written")
            except BaseException as error:
                self._abort_pyramid()
                return self._writer.__exit__(type(error), error, error.__traceback__)
        else:
            self._abort_pyramid()
        return self._writer.__exit__(exc_type, exc, tb)

    def _abort_pyramid(self) -> None:
        if self._pyramid is not None:
            self._pyramid.abort()


# --- the class map's overviews, built while its rows stream (issue 20) -------------------------


def cog_overview_sizes(width: int, height: int, count: int) -> list[tuple[int, int]]:
    """(width, height) in pixels of the ``count`` overviews GDAL's COG driver makes (measured with
    GDAL 3.10): each level halves the previous one, rounded down (a 301 x 203 px raster gets
    150 x 101, then 75 x 50), never below 1 px."""
    sizes = []
    for _ in range(count):
        width, height = max(1, width // 2), max(1, height // 2)
        sizes.append((width, height))
    return sizes


def gdal_overview_windows(
    n_src: int, n_dst: int, chunk: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Source pixel ranges ``[start, end)`` of each of ``n_dst`` overview pixels along one axis of
    ``n_src`` pixels, by GDAL's rule for MODE overviews (``GDALResampleChunk_Mode``): ratio
    ``r = n_src / n_dst``, start ``int(i r + 1e-8)``, end ``ceil((i + 1) r - 1e-8)`` (at least
    start + 1), the last range reaching the end. ``n_src = 2 n_dst``: pairs; an odd ``n_src``
    (a ratio a little above 2) gives windows of 2 or 3 pixels that may share their edge pixel.

    ``chunk``: GDAL computes the overview from chunks of ``chunk`` source rows
    (:func:`gdal_chunk_rows`); the overview row ``i`` belongs to the chunk ``[top, bottom)`` with
    ``int(0.5 + top / r) <= i < int(0.5 + bottom / r)`` and its window is clipped to it (this
    changes a window only where it crosses a chunk's edge, so only for an odd ``n_src``).
    """
    ratio = n_src / n_dst
    i = np.arange(n_dst, dtype=np.float64)
    start = (i * ratio + 1e-8).astype(np.int64)
    end = np.ceil((i + 1) * ratio - 1e-8).astype(np.int64)
    if chunk is not None and chunk < n_src:
        tops = np.arange(0, n_src, chunk)
        first_row = (0.5 + tops / ratio).astype(np.int64)  # first overview row of each chunk
        owner = np.searchsorted(first_row, np.arange(n_dst), side="right") - 1
        top = tops[owner]
        bottom = np.minimum(top + chunk, n_src)
        start = np.maximum(start, top)
        end = np.where(end == start, end + 1, end)
        end = np.minimum(end, n_src)
        end[-1] = n_src
        end = np.minimum(end, bottom)
        return start, end
    end = np.minimum(np.maximum(end, start + 1), n_src)
    end[-1] = n_src
    return start, end


def gdal_chunk_rows(src_size: tuple[int, int], dst_size: tuple[int, int], block_rows: int) -> int:
    """The source rows per chunk with which GDAL 3.10 (``GDALRegenerateOverviews``, a paletted
    byte band) computes an overview of ``dst_size`` from ``src_size`` (width, height in px): the
    source's block height (at least twice the factor), doubled while twice a chunk stays under
    GDAL's default ``GDAL_OVR_CHUNK_MAX_SIZE`` (10 MiB; one byte per pixel). Measured: with this
    rule the overviews are byte-identical to GDAL's on random class maps of 1,500-7,000 px a
    side and a 10,980 px Sentinel-2 tile (a chunk edge cuts the windows of an odd-sized level);
    a non-default ``GDAL_OVR_CHUNK_MAX_SIZE`` is not followed."""
    (src_w, src_h), (dst_w, dst_h) = src_size, dst_size
    factor = max(int(src_w / dst_w + 0.5), int(src_h / dst_h + 0.5))
    limit = 10 * 1024 * 1024
    rows = max(block_rows, 2 * factor)
    if rows * src_w <= limit:
        while 2 * rows * src_w < limit:
            rows *= 2
    return rows


def mode_of_stack(values: Sequence[np.ndarray], nodata: int = 0) -> np.ndarray:
    """The per-pixel mode of ``values`` (same-shaped uint8 arrays, in GDAL's scan order: the
    window's rows top to bottom, each left to right), as GDAL's MODE resampling picks it:
    ``nodata`` never votes and comes out only where every value is ``nodata``; among values tied
    for the most votes wins the one that reached that count first in scan order (GDAL keeps the
    running maximum and replaces it only on a strictly larger count). Vectorised: n (n - 1) / 2
    comparisons of whole arrays, no loop over pixels.
    """
    # most windows of a class map hold one value: those need no vote
    uniform = values[0] == values[1] if len(values) > 1 else np.ones(values[0].shape, bool)
    for v in values[2:]:
        uniform &= values[0] == v
    out = values[0].copy()
    mixed = ~uniform
    if mixed.any():
        out[mixed] = _vote([v[mixed] for v in values], nodata)
    return out


def _vote(values: Sequence[np.ndarray], nodata: int) -> np.ndarray:
    n = len(values)
    valid = [v != nodata for v in values]
    seen = [valid[i].astype(np.uint8) for i in range(n)]  # count of v_i at positions <= i
    later = [np.zeros(values[0].shape, np.uint8) for _ in range(n)]  # ... at positions > i
    for i in range(n):
        for j in range(i + 1, n):
            same = (values[i] == values[j]) & valid[i]
            seen[j] += same
            later[i] += same
    most = np.maximum.reduce([s + t for s, t in zip(seen, later, strict=True)])
    out = np.full(values[0].shape, nodata, np.uint8)
    for i in reversed(range(n)):
        np.copyto(out, values[i], where=(seen[i] == most) & valid[i])
    return out


class _ModeLevel:
    """One overview level computed from the rows of the level above (or the full resolution),
    streamed: :meth:`push` takes the next source rows and returns the overview rows they
    complete. Holds at most the source rows of one push plus the 1-2 rows the next window
    shares."""

    def __init__(
        self,
        src_size: tuple[int, int],
        dst_size: tuple[int, int],
        nodata: int,
        chunk_rows: int | None = None,
    ) -> None:
        (self.src_w, self.src_h), (self.dst_w, self.dst_h) = src_size, dst_size
        self.nodata = nodata
        self.x0, self.x1 = gdal_overview_windows(self.src_w, self.dst_w)
        self.y0, self.y1 = gdal_overview_windows(self.src_h, self.dst_h, chunk_rows)
        self.pairs_x = self.src_w == 2 * self.dst_w  # windows are the pairs (2i, 2i + 1)
        # column k of window i, or the appended no-data column where the window is shorter
        width = int((self.x1 - self.x0).max())
        self.cols = [np.where(self.x0 + k < self.x1, self.x0 + k, self.src_w) for k in range(width)]
        self.rows_k = int((self.y1 - self.y0).max())
        self.pairs_y = self.src_h == 2 * self.dst_h
        self.buffer = np.empty((0, self.src_w), np.uint8)
        self.base = 0  # source row of buffer[0]
        self.done = 0  # overview rows returned

    def push(self, rows: np.ndarray) -> np.ndarray:
        """Take the next source rows (uint8, (n, source width)); return the overview rows
        ``[done, done + m)`` that they complete (m may be 0)."""
        buffer = np.concatenate([self.buffer, rows]) if len(self.buffer) else rows
        available = self.base + len(buffer)
        stop = int(np.searchsorted(self.y1, available, side="right"))
        out = np.empty((0, self.dst_w), np.uint8)
        if stop > self.done:
            out = self._reduce(buffer, self.done, stop)
            self.done = stop
        keep_from = int(self.y0[stop]) if stop < self.dst_h else available
        self.buffer = buffer[keep_from - self.base :].copy()
        self.base = keep_from
        return out

    def _reduce(self, buffer: np.ndarray, first: int, stop: int) -> np.ndarray:
        y0, y1 = self.y0[first:stop] - self.base, self.y1[first:stop] - self.base
        if self.pairs_y:  # rows (2r, 2r + 1): views
            start = int(y0[0])
            row_sets = [buffer[start + k : int(y1[-1]) : 2] for k in range(2)]
        else:
            pad = np.full((1, self.src_w), self.nodata, np.uint8)
            padded = np.concatenate([buffer, pad])
            row_sets = [
                padded[np.where(y0 + k < y1, y0 + k, len(buffer))] for k in range(self.rows_k)
            ]
        values: list[np.ndarray] = []
        for rows in row_sets:
            if self.pairs_x:
                values += [rows[:, 0::2], rows[:, 1::2]]
            else:
                wide = np.concatenate([rows, np.full((len(rows), 1), self.nodata, np.uint8)], 1)
                values += [wide[:, cols] for cols in self.cols]
        return mode_of_stack(values, self.nodata)


def gdal_nearest_picks(n_src: int, n_dst: int) -> np.ndarray:
    """The source pixel of each of ``n_dst`` overview pixels along an axis of ``n_src`` pixels, by
    GDAL's NEAREST overview rule: ``int(0.5 + i r)``, ``r = n_src / n_dst`` (pixel ``2 i`` for a
    factor of 2; measured byte-identical to GDAL 3.10's COG driver, odd sizes included)."""
    ratio = n_src / n_dst
    return np.minimum((0.5 + np.arange(n_dst) * ratio).astype(np.int64), n_src - 1)


class _NearestLevel:
    """One NEAREST overview level from the rows of the level above, streamed like
    :class:`_ModeLevel`: overview pixel (i, j) is source pixel (picks_y[i], picks_x[j])."""

    def __init__(self, src_size: tuple[int, int], dst_size: tuple[int, int]) -> None:
        (self.src_w, self.src_h), (self.dst_w, self.dst_h) = src_size, dst_size
        self.xs = gdal_nearest_picks(self.src_w, self.dst_w)
        self.ys = gdal_nearest_picks(self.src_h, self.dst_h)
        self.buffer = np.empty((0, self.src_w), np.uint8)
        self.base = 0  # source row of buffer[0]
        self.done = 0  # overview rows returned

    def push(self, rows: np.ndarray) -> np.ndarray:
        """Take the next source rows; return the overview rows they complete (maybe none)."""
        buffer = np.concatenate([self.buffer, rows]) if len(self.buffer) else rows
        available = self.base + len(buffer)
        stop = int(np.searchsorted(self.ys, available, side="left"))
        rows_out = self.ys[self.done : stop] - self.base
        if self.src_h == 2 * self.dst_h and len(rows_out):  # rows 2i: a view
            picked = buffer[int(rows_out[0]) : int(rows_out[-1]) + 1 : 2]
        else:
            picked = buffer[rows_out]
        out = picked[:, ::2] if self.src_w == 2 * self.dst_w else picked[:, self.xs]
        self.done = stop
        keep_from = min(int(self.ys[stop]), available) if stop < self.dst_h else available
        self.buffer = buffer[keep_from - self.base :].copy()
        self.base = keep_from
        return out


class OverviewPyramid:
    """The overviews of a uint8 raster, MODE (class map) or NEAREST (confidence), computed from
    its rows as they stream and written to one small stage GeoTIFF per level
    (``.<name>.stage.ovr<factor>.tif`` beside the output), for GDAL's COG driver to copy as the
    file's overviews.

    NEAREST: each level from the level above, pixel :func:`gdal_nearest_picks`. MODE: the
    overviews equal what GDAL 3.10's COG driver built itself with ``OVERVIEW_RESAMPLING=MODE``
    (tested bitwise, odd sizes included): the sizes of :func:`cog_overview_sizes`; each level
    from the level above (cascading, as GDAL does: factor 4 from factor 2, not from the full
    resolution); pixel windows by :func:`gdal_overview_windows`, cut at the edges of GDAL's
    chunks of source rows (:func:`gdal_chunk_rows`: the stage's blocks for the first level, GTiff
    overview blocks, ``GDAL_TIFF_OVR_BLOCKSIZE`` or 128 rows, for the next); the vote by
    :func:`mode_of_stack`. This is GDAL's behaviour as measured, not a documented contract: a
    GDAL other than 3.10 may cut chunks elsewhere (the test compares with the installed GDAL).
    Memory: per level one block row of its stage and the source rows of one push; never a
    function of the height.
    """

    def __init__(
        self,
        out_path: Path,
        grid: Grid,
        factors: Sequence[int],
        nodata: int,
        profile: dict,
        resampling: str = "MODE",
    ) -> None:
        self.grid = grid
        self.nodata = nodata
        self.factors = list(factors)
        sizes = cog_overview_sizes(grid.width, grid.height, len(self.factors))
        self.paths = [self.level_path(out_path, f) for f in self.factors]
        self.levels: list[_ModeLevel | _NearestLevel] = []
        self.writers: list[_BlockRowWriter] = []
        previous = (grid.width, grid.height)
        # GDAL's source of level 1 is the stage, of the next levels the level above in the COG
        # driver's temporary overview file (GTiff overview blocks: GDAL_TIFF_OVR_BLOCKSIZE)
        block_rows = int(profile["blockysize"])
        for path, size in zip(self.paths, sizes, strict=True):
            chunk = gdal_chunk_rows(previous, size, block_rows)
            if resampling.upper() == "NEAREST":
                self.levels.append(_NearestLevel(previous, size))
            else:
                self.levels.append(_ModeLevel(previous, size, nodata, chunk))
            block_rows = int(rasterio.env.get_gdal_config("GDAL_TIFF_OVR_BLOCKSIZE") or 128)
            level_grid = Grid(
                grid.crs,
                grid.transform @ Affine.scale(grid.width / size[0], grid.height / size[1]),
                size[0],
                size[1],
            )
            level_profile = geotiff_profile(level_grid, 1, "uint8", nodata)
            level_profile.update(
                {k: v for k, v in profile.items() if k in ("compress", "zstd_level", "num_threads")}
            )
            level_profile.pop("predictor", None)
            level_profile.pop("zlevel", None)
            try:
                self.writers.append(_BlockRowWriter(rasterio.open(path, "w", **level_profile)))
            except BaseException:
                self.abort()
                raise
            previous = size

    @staticmethod
    def level_path(out_path: Path, factor: int) -> Path:
        """The stage of the overview of ``factor``: ``.<name>.stage.ovr<factor>.tif`` beside
        the output (a name the next run removes if this one is killed)."""
        return partial_path(out_path, f"stage.ovr{factor}").with_suffix(".tif")

    def push(self, rows: np.ndarray) -> None:
        """Take the next rows of the full-resolution class map (in order, from the top)."""
        for level, writer in zip(self.levels, self.writers, strict=True):
            rows = level.push(rows)
            if not len(rows):
                break
            writer.write_rows(rows)

    def close(self) -> None:
        """Flush and close every level's stage (all rows must have been pushed)."""
        for writer in self.writers:
            writer.close()

    def abort(self) -> None:
        """Close every level's stage without checks (their files are removed by the owner)."""
        for writer in self.writers:
            with contextlib.suppress(Exception):
                writer.dataset.close()

    def write_vrt(self, stage: Path, vrt: Path) -> Path:
        """A VRT of the closed ``stage`` (its band, colour table, nodata, description and
        metadata, as GDAL's VRT driver copies them) whose band names the level stages as its
        ``<Overview>`` elements; GDAL's COG driver copies those as the output's overviews."""
        with rasterio.Env(GDAL_PAM_ENABLED="NO"):
            rasterio.shutil.copy(str(stage), str(vrt), driver="VRT")
        tree = ElementTree.parse(vrt)
        band = tree.getroot().find("VRTRasterBand")
        if band is None:
            raise RuntimeError(f"GDAL wrote no VRTRasterBand in {vrt}")
        for path in self.paths:
            overview = ElementTree.SubElement(band, "Overview")
            source = ElementTree.SubElement(overview, "SourceFilename", relativeToVRT="1")
            source.text = path.name
            ElementTree.SubElement(overview, "SourceBand").text = "1"
        tree.write(vrt)
        return vrt


class _BlockRowWriter:
    """Rows of a single-band uint8 GeoTIFF (an open ``dataset``) written in order from the top,
    buffered to whole block rows so that no compressed block is written twice (the last, partial
    block row as soon as it is complete); ``on_flush`` receives each block row written (the class
    map's overview pyramid). Memory: one block row."""

    def __init__(self, dataset: Any, on_flush: Callable[[np.ndarray], None] | None = None) -> None:
        self.dataset = dataset
        self.on_flush = on_flush
        self.buffer = np.zeros((dataset.profile["blockysize"], dataset.width), np.uint8)
        self.buffered = 0
        self.written = 0

    @property
    def next_row(self) -> int:
        """The row the next :meth:`write_rows` starts at."""
        return self.written + self.buffered

    def write_rows(self, rows: np.ndarray) -> None:
        done = 0
        while done < len(rows):
            take = min(len(rows) - done, len(self.buffer) - self.buffered)
            self.buffer[self.buffered : self.buffered + take] = rows[done : done + take]
            self.buffered += take
            done += take
            if self.buffered == len(self.buffer) or self.next_row == self.dataset.height:
                self.flush()

    def flush(self) -> None:
        if self.buffered:
            rows = self.buffer[: self.buffered]
            window = Window(0, self.written, self.dataset.width, self.buffered)
            self.dataset.write(rows, 1, window=window)
            if self.on_flush is not None:
                self.on_flush(rows)
            self.written += self.buffered
            self.buffered = 0

    def finish(self, what: str) -> None:
        """Flush; raise a RuntimeError naming ``what`` unless every row was written."""
        self.flush()
        if self.written != self.dataset.height:
            raise RuntimeError(f"{what}: only {self.written} of {self.dataset.height} rows")

    def close(self) -> None:
        self.finish(f"overview stage {self.dataset.name}")
        self.dataset.close()
