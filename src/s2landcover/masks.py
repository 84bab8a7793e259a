"""Mask downsampling: the land-cover map onto a scene's exact grid, remapped to classes 1..K.

The product (the mask contract of DESIGN.md): uint8, exactly the scene's CRS, transform, width and
height; 0 = no data (the map's nodata value, ``mask.nodata_codes``, areas the map does not cover);
1..K = the configured classes; colour table and class names embedded; tiled, compressed, overviews.

How: the output grid is cut into square windows (``mask.block_size`` px); each window is filled from
the source by GDAL (:mod:`s2landcover.io.warp`) in a thread pool, or on the workers of a
dask.distributed cluster when ``compute.dask_scheduler`` is set (:class:`WindowFiller`,
:mod:`s2landcover.parallel`); its source codes are counted and remapped through the class table,
and the main thread writes it. Two ways to fill a window:

- ``decimated``: when the source grid has the scene's CRS and is aligned with it at an integer
  factor (1 m map, 10 m scene, corners on common lines) and resampling is nearest, a decimated read
  gives exactly the warper's answer (output pixel i takes source pixel ``i * f + f // 2``) and
  costs only the decoding of the source blocks (a 1-row-strip source: only every f-th row).
- ``warp``: otherwise (another CRS, a non-integer factor, mode, or a window that reaches past the
  map's edge), GDAL's warper onto the window (a ``WarpedVRT``), like ``gdalwarp``. Its coordinate
  transform is approximated within ``mask.error_threshold`` source pixels (gdalwarp's ``-et``,
  default 0.125); 0 makes it exact and the result independent of the window layout.

``mode`` is GDAL's mode over the source codes, remapped afterwards: where several codes make one
class it is the majority code, not the majority class. GDAL's mode skips the map's nodata value
but counts ``mask.nodata_codes`` like any code.

Unknown codes are counted on the warped output (the source pixels actually used by the mask), not
on the whole source: a code that nearest sampling never picks does not stop the run.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from s2landcover.classes import NODATA_CLASS, ClassTable
from s2landcover.errors import InputError
from s2landcover.io.rasters import Grid, read_grid
from s2landcover.io.warp import (
    MaskSource,
    MaskSourceInfo,
    gdal_env,
    inspect_mask_source,
    open_mask_source,
    worker_mask_source,
    write_mask,
)
from s2landcover.parallel import window_executor
from s2landcover.progress import ProgressLog
from s2landcover.windows import block_windows

log = logging.getLogger(__name__)

RESAMPLING = {"nearest": Resampling.nearest, "mode": Resampling.mode}
# Windows submitted to a dask cluster and not yet written (1 MB each at the default block size):
# enough to keep a few hundred worker threads busy while bounding this process's memory.
MAX_WINDOWS_IN_FLIGHT = 256
INTEGER_DTYPES = ("uint8", "uint16", "int8", "int16", "uint32", "int32")
# Relative tolerance when deciding that two grids are aligned at an integer factor.
ALIGNMENT_TOLERANCE = 1e-9


# ---------------------------------------------------------------------------------------------
# Grid alignment (window planning: s2landcover.windows.block_windows)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecimationPlan:
    """An aligned source grid: target pixel (row, col) covers source rows ``row * factor_y +
    row_offset`` ... (+ factor_y) and the same for columns (all in source pixels)."""

    factor_x: int
    factor_y: int
    col_offset: int
    row_offset: int

    def source_window(self, window: Window) -> Window:
        """The source window (source pixels) whose f x f blocks make up a target window."""
        return Window(
            window.col_off * self.factor_x + self.col_offset,
            window.row_off * self.factor_y + self.row_offset,
            window.width * self.factor_x,
            window.height * self.factor_y,
        )


def _integer(value: float, tolerance: float) -> int | None:
    nearest = round(value)
    return int(nearest) if abs(value - nearest) <= tolerance * max(1.0, abs(value)) else None


def aligned_decimation(source: Grid, target: Grid) -> DecimationPlan | None:
    """The decimation plan when ``target`` is ``source`` coarsened by integer factors, else None.

    Requires the same CRS, north-up transforms with the same axis directions, target pixel sizes
    that are integer multiples of the source's, and target corners on source pixel corners.
    """
    s, t = source.transform, target.transform
    if source.crs is None or target.crs is None or source.crs != target.crs:
        return None
    if s.b != 0 or s.d != 0 or t.b != 0 or t.d != 0:
        return None
    if s.a * t.a <= 0 or s.e * t.e <= 0:
        return None
    factor_x = _integer(t.a / s.a, ALIGNMENT_TOLERANCE)
    factor_y = _integer(t.e / s.e, ALIGNMENT_TOLERANCE)
    col_offset = _integer((t.c - s.c) / s.a, 1e-6)
    row_offset = _integer((t.f - s.f) / s.e, 1e-6)
    if factor_x is None or factor_y is None or col_offset is None or row_offset is None:
        return None
    if min(factor_x, factor_y) < 1:
        return None
    return DecimationPlan(factor_x, factor_y, col_offset, row_offset)


def window_inside(window: Window, width: int, height: int) -> bool:
    """True when ``window`` lies entirely within a width x height raster."""
    return (
        window.col_off >= 0
        and window.row_off >= 0
        and window.col_off + window.width <= width
        and window.row_off + window.height <= height
    )


# ---------------------------------------------------------------------------------------------
# Code remapping and counting
# ---------------------------------------------------------------------------------------------


def working_dtype(source_dtype: str, source_nodata: float | None) -> tuple[str, int]:
    """The dtype windows are warped into and the value that marks "not covered by the map".

    With a source nodata value that fits the dtype, that value serves (it becomes class 0 anyway);
    otherwise a wider dtype whose extra value cannot be a source code.
    """
    info = np.iinfo(source_dtype)
    if source_nodata is not None and float(source_nodata).is_integer():
        if info.min <= source_nodata <= info.max:
            return source_dtype, int(source_nodata)
    wider = {"uint8": "uint16", "uint16": "uint32", "int8": "int16", "int16": "int32"}
    if source_dtype in wider:
        dtype = wider[source_dtype]
        return dtype, int(np.iinfo(dtype).max)
    return "int64", int(np.iinfo("int64").min)


def code_counts(codes: np.ndarray) -> dict[int, int]:
    """Pixel count per value of an integer array (bincount for small unsigned dtypes)."""
    if codes.dtype in (np.uint8, np.uint16):
        counts = np.bincount(codes.ravel(), minlength=1)
        present = np.flatnonzero(counts)
        return dict(zip(present.tolist(), counts[present].tolist(), strict=True))
    values, counts = np.unique(codes, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


@dataclass(frozen=True)
class CodeRemapper:
    """Source codes -> class indices: table codes -> 1..K, nodata codes -> 0, unknown codes -> 0
    (and reported by :meth:`unknown_codes`)."""

    code_to_class: Mapping[int, int]
    nodata_codes: frozenset[int]

    @classmethod
    def from_classes(cls, classes: ClassTable, nodata_codes: Iterable[int]) -> CodeRemapper:
        """Remapper of a class table; ``nodata_codes`` include the source's nodata and fill."""
        return cls(classes.code_to_index(), frozenset(int(c) for c in nodata_codes))

    def unknown_codes(self, counts: Mapping[int, int]) -> dict[int, int]:
        """The entries of a code -> pixel count mapping whose code is no class and not no data."""
        return {
            code: n
            for code, n in sorted(counts.items())
            if code not in self.code_to_class and code not in self.nodata_codes
        }

    def remap(self, codes: np.ndarray, counts: Mapping[int, int] | None = None) -> np.ndarray:
        """uint8 class indices of an array of source codes (same shape)."""
        if codes.dtype in (np.uint8, np.uint16):
            lut = np.zeros(256 if codes.dtype == np.uint8 else 65536, dtype=np.uint8)
            for code, index in self.code_to_class.items():
                if code < lut.size and code not in self.nodata_codes:
                    lut[code] = index
            return lut[codes]
        present = list(counts) if counts is not None else np.unique(codes).tolist()
        out = np.zeros(codes.shape, dtype=np.uint8)
        for code in present:
            index = self.code_to_class.get(code, NODATA_CLASS)
            if index and code not in self.nodata_codes:
                out[codes == code] = index
        return out


def format_unknown_codes(source_path: str, unknown: Mapping[int, int], classes: ClassTable) -> str:
    """The message of the unknown-code error: each code with its pixel count, and what to do."""
    listed = ", ".join(f"{code}: {n} px" for code, n in sorted(unknown.items()))
    known = sorted(classes.code_to_index())
    return (
        f"land-cover map {source_path} has codes that are not in the class table "
        f"(code: pixels on the scene grid): {listed}. Codes in the table: {known}. Add them to a "
        "class in `classes`, list them in `mask.nodata_codes`, or set `mask.unknown_codes: nodata`."
    )


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def check_mask_source(info: MaskSourceInfo, scene: Grid, scene_path: str) -> None:
    """Raise InputError when the map cannot make a mask for the scene (no CRS, several bands,
    non-integer values, no overlap with the scene)."""
    if info.count != 1:
        raise InputError(
            f"land-cover map {info.path} has {info.count} bands; expected a single-band class map"
        )
    if info.dtype not in INTEGER_DTYPES:
        raise InputError(
            f"land-cover map {info.path} has data type {info.dtype}; expected integer class codes "
            f"({', '.join(INTEGER_DTYPES)})"
        )
    if info.grid.crs is None:
        raise InputError(
            f"land-cover map {info.path} has no CRS; expected a georeferenced raster (assign one, "
            "e.g. with `gdal_edit.py -a_srs EPSG:25831`)"
        )
    if scene.crs is None:
        raise InputError(f"scene {scene_path} has no CRS; expected a georeferenced scene stack")
    scene_bounds = transform_bounds(scene.crs, info.grid.crs, *scene.bounds, densify_pts=21)
    map_bounds = info.grid.bounds
    overlaps = (
        scene_bounds[0] < map_bounds[2]
        and scene_bounds[2] > map_bounds[0]
        and scene_bounds[1] < map_bounds[3]
        and scene_bounds[3] > map_bounds[1]
    )
    if not all(math.isfinite(v) for v in scene_bounds) or not overlaps:
        raise InputError(
            f"land-cover map {info.path} (bounds {tuple(round(v, 6) for v in map_bounds)} in "
            f"{info.grid.crs.to_string()}) does not overlap scene {scene_path} (bounds "
            f"{tuple(round(v, 6) for v in scene_bounds)} in the map's CRS); expected a map that "
            "covers at least part of the scene"
        )


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------


@dataclass
class _WindowResult:
    window: Window
    classes: np.ndarray
    counts: dict[int, int]
    method: str


@dataclass
class _Tally:
    code_pixels: dict[int, int] = field(default_factory=dict)
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    methods: dict[str, int] = field(default_factory=dict)

    def add(self, result: _WindowResult) -> None:
        for code, n in result.counts.items():
            self.code_pixels[code] = self.code_pixels.get(code, 0) + n
        self.class_pixels += np.bincount(result.classes.ravel(), minlength=256)
        self.methods[result.method] = self.methods.get(result.method, 0) + 1


def _bounded_map(
    executor: cf.Executor, function: Any, items: list[Any], max_pending: int
) -> Iterator[Any]:
    """Results of ``function`` over ``items`` (any order), with at most ``max_pending`` in flight so
    that finished windows never pile up in memory."""
    pending: set[cf.Future] = set()
    iterator = iter(items)
    try:
        for item in iterator:
            pending.add(executor.submit(function, item))
            if len(pending) >= max_pending:
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        for future in cf.as_completed(pending):
            yield future.result()
    finally:
        for future in pending:
            future.cancel()


@dataclass
class WindowFiller:
    """Fills one output window of the mask: the source codes, their counts, the class indices.

    Made of paths and plain values, so it is pickled to dask workers as well as called by local
    threads; ``source`` is the stage's own open map (local threads) or None, when each process
    opens the map by path once (:func:`~s2landcover.io.warp.worker_mask_source`). It is never
    pickled. Memory per call: one window of codes in ``dtype`` and one of uint8 classes.
    """

    source_path: str
    source_width: int
    source_height: int
    scene: Grid
    plan: DecimationPlan | None
    dtype: str
    fill_value: int
    resampling: Resampling
    error_threshold: float
    remapper: CodeRemapper
    source: MaskSource | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["source"] = None  # open datasets stay in the process that opened them
        return state

    def __call__(self, window: Window) -> _WindowResult:
        source = self.source or worker_mask_source(self.source_path)
        shape = (int(window.height), int(window.width))
        codes, method = None, "warp"
        if self.plan is not None:
            source_window = self.plan.source_window(window)
            if window_inside(source_window, self.source_width, self.source_height):
                codes = source.read_decimated(source_window, shape)
                method = "decimated"
        if codes is None:
            codes = source.warp_window(
                self.scene.crs,
                self.scene.window_transform(window),
                shape,
                self.dtype,
                self.fill_value,
                self.resampling,
                self.error_threshold,
            )
        counts = code_counts(codes)
        return _WindowResult(window, self.remapper.remap(codes, counts), counts, method)


def downsample_mask(
    source_path: str | Path,
    scene_path: str | Path,
    out_path: str | Path,
    classes: ClassTable,
    mask_cfg: Mapping[str, Any],
    threads: int = 1,
    progress: bool = True,
    scheduler_address: str | None = None,
) -> dict[str, Any]:
    """Bring a land-cover map onto a scene's exact grid as a class mask (the mask contract).

    Args:
        source_path: the land-cover map, any GDAL raster (GeoTIFF, VRT mosaic, ...), one band of
            integer codes, any CRS.
        scene_path: the scene stack; only its grid (CRS, transform, width, height) is read.
        out_path: the mask GeoTIFF to write (uint8, 0 = no data, 1..K classes), written atomically.
        classes: the class table (source codes -> class indices).
        mask_cfg: the validated ``mask`` section (resampling, unknown_codes, nodata_codes,
            block_size, error_threshold).
        threads: worker threads (output windows in parallel) when ``scheduler_address`` is
            None.
        progress: log progress lines with an ETA (:mod:`s2landcover.progress`).
        scheduler_address: ``compute.dask_scheduler``: None for local threads, or the address of
            a dask.distributed scheduler whose workers fill the windows (see
            :mod:`s2landcover.parallel`; the map must be on a file system the workers see, under
            the same path). This process then only writes the windows that come back.

    Returns:
        A summary: grid, method(s) used, pixels per class, unknown codes, seconds.

    Memory: bounded independently of the source's size: about 100 MB of libraries + GDAL's block
    cache (``GDAL_CACHE_MB`` = 256 MB, fixed for the run) + per thread at most ``WARP_MEMORY_MB``
    (64 MB) of warper buffers and ~5 MB of window arrays (``block_size`` 1024) + 2 x threads
    finished windows waiting to be written (~2 MB each): ~0.65 GB with 4 threads, ~1.5 GB with 16.
    Measured: 0.37 GB (2 threads, 40,000^2 px map to 4,000^2 px).

    Raises:
        InputError: missing or unreadable files, a map without CRS, with several bands, with
            non-integer values, not overlapping the scene, or with codes missing from the class
            table (unless ``mask.unknown_codes`` is ``nodata``). Nothing is written then.
    """
    started = time.perf_counter()
    source_path, scene_path = str(source_path), str(scene_path)
    scene = read_grid(scene_path)
    info = inspect_mask_source(source_path)
    check_mask_source(info, scene, scene_path)

    resampling_name = mask_cfg["resampling"]
    resampling = RESAMPLING[resampling_name]
    block_size = int(mask_cfg["block_size"])
    error_threshold = float(mask_cfg["error_threshold"])
    dtype, fill_value = working_dtype(info.dtype, info.nodata)
    nodata_codes = {fill_value, *(int(c) for c in mask_cfg["nodata_codes"])}
    if info.nodata is not None and float(info.nodata).is_integer():
        nodata_codes.add(int(info.nodata))
    remapper = CodeRemapper.from_classes(classes, nodata_codes)
    plan = aligned_decimation(info.grid, scene) if resampling_name == "nearest" else None
    windows = block_windows(scene.width, scene.height, block_size)

    filler = WindowFiller(
        source_path=source_path,
        source_width=info.grid.width,
        source_height=info.grid.height,
        scene=scene,
        plan=plan,
        dtype=dtype,
        fill_value=fill_value,
        resampling=resampling,
        error_threshold=error_threshold,
        remapper=remapper,
    )

    tally = _Tally()
    threads = max(1, int(threads))
    overview_resampling = Resampling.mode if resampling_name == "mode" else Resampling.nearest
    with (
        gdal_env(),
        open_mask_source(source_path) as source,
        write_mask(out_path, scene, classes, overview_resampling) as dst,
        window_executor(threads, scheduler_address) as executor,
    ):
        # Local threads share this process's handles; a dask worker opens its own (by path).
        filler.source = None if scheduler_address else source
        bar = ProgressLog(f"mask {Path(out_path).name}", len(windows), "windows", enabled=progress)
        in_flight = 2 * threads if not scheduler_address else MAX_WINDOWS_IN_FLIGHT
        results = _bounded_map(executor, filler, windows, in_flight)
        for result in results:
            tally.add(result)
            dst.write(result.classes, 1, window=result.window)
            bar.advance()
        unknown = remapper.unknown_codes(tally.code_pixels)
        if unknown and mask_cfg["unknown_codes"] != "nodata":
            raise InputError(format_unknown_codes(source_path, unknown, classes))
    if unknown:
        log.warning(
            "mapped %d unknown code(s) of %s to no data: %s",
            len(unknown),
            source_path,
            ", ".join(f"{code}: {n} px" for code, n in unknown.items()),
        )

    seconds = time.perf_counter() - started
    pixels = {"no data": int(tally.class_pixels[0])}
    pixels.update(
        {
            name: int(tally.class_pixels[i])
            for i, name in zip(classes.indices, classes.names, strict=True)
        }
    )
    method = "+".join(sorted(tally.methods)) if tally.methods else "none"
    summary = {
        "source": source_path,
        "scene": scene_path,
        "output": str(out_path),
        "grid": scene.describe(),
        "resampling": resampling_name,
        "method": method,
        "windows": dict(tally.methods),
        "threads": threads,
        "dask_scheduler": scheduler_address,
        "pixels_per_class": pixels,
        "unknown_codes": {str(code): n for code, n in unknown.items()},
        "seconds": round(seconds, 3),
    }
    log.info("mask %s: %s, %.1f s (%s)", out_path, method, seconds, scene.describe())
    return summary
