"""Several dates of one area: stacked dated scenes, their combined validity, and composite maps.

- :func:`write_stack`: the scene stacks of several dates (``results/scenes/{scene}.tif`` of
  ingest) into one stack of bands x dates, band names ``2024-04-15:B04`` (date-major: every band
  of the first date, then of the next), each band keeping its own GDAL scale and offset. Members
  on another grid than the first are warped onto it (bilinear, with a warning); members that do not
  cover the same area are refused.
- :func:`combine_validity`: the validity rasters (:mod:`s2landcover.validity`) of the members into
  the stack's: a pixel invalid (no data, cloud, shadow, cirrus) on any date is invalid, unless
  partial inputs are allowed, then it is valid where any date is.
- :func:`write_composite`: dated class maps of one area (same grid) into one map taking each pixel
  from the most reliable date: an observed class (not no data 0, not "not observed" 255) first,
  then the highest confidence (the prediction's ``_confidence.tif``, max probability x 255), then
  the first listed; beside it a source raster with, per pixel, the index of the date it came from
  (255 where no date observed the pixel), the dates listed in its tags (``SOURCE_DATES``).

Everything streams in strips of rows: memory is a few strips of the area's width x the inputs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

from s2landcover.classes import NODATA_CLASS, NOT_OBSERVED
from s2landcover.config import DATE_SEPARATOR, dated_band_names
from s2landcover.errors import InputError
from s2landcover.io.prediction_writer import StreamingRasterWriter
from s2landcover.io.rasters import (
    Grid,
    grid_of,
    open_raster,
    read_class_table,
    require_grid,
    warped_onto,
)
from s2landcover.io.stack import StackWriter
from s2landcover.validity import (
    CLEAR,
    INVALID_CODES,
    NODATA,
    SNOW,
    VALIDITY_CODES,
    code_counts,
    read_validity_info,
    validity_raster_writer,
    validity_tags,
)
from s2landcover.windows import block_windows

log = logging.getLogger(__name__)

STRIP_ROWS = 512  # rows per strip (a multiple of the 512 / smaller blocks of the inputs)
MIN_SHARED_AREA = 0.5  # a member must cover at least half of the first member's footprint
NO_SOURCE = 255  # source raster value where no date observed the pixel


def shared_fraction(first: Grid, other: Grid) -> float:
    """Share (0..1) of ``first``'s footprint that ``other`` covers (bounds, in ``first``'s CRS)."""
    left, bottom, right, top = first.bounds
    o = other.bounds
    if other.crs != first.crs:
        o = transform_bounds(other.crs, first.crs, *o)
    width = max(0.0, min(right, o[2]) - max(left, o[0]))
    height = max(0.0, min(top, o[3]) - max(bottom, o[1]))
    area = (right - left) * (top - bottom)
    return width * height / area if area > 0 else 0.0


@contextlib.contextmanager
def _on_grid(
    path: str | Path, grid: Grid, resampling: Resampling, what: str
) -> Iterator[tuple[Any, bool]]:
    """The raster at ``path`` as a dataset on ``grid``: itself when it is on it, else a warped view
    (``resampling``). Yields ``(dataset, warped)``."""
    with open_raster(path) as src:
        own = grid_of(src)
        if own.same_as(grid):
            yield src, False
            return
        share = shared_fraction(grid, own)
        if share < MIN_SHARED_AREA:
            raise InputError(
                f"{what} {path} ({own.describe()}) covers {100 * share:.0f} % of the first date's "
                f"footprint ({grid.describe()}); the dates of a stack or composite must cover one "
                f"area (at least {100 * MIN_SHARED_AREA:.0f} %)"
            )
        with warped_onto(src, grid, resampling, src.nodata if src.nodata is not None else 0) as vrt:
            yield vrt, True


def write_stack(
    scene_paths: Sequence[str | Path],
    dates: Sequence[str],
    out_path: str | Path,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Stack the scene stacks of several dates of one area into one GeoTIFF of bands x dates.

    Args:
        scene_paths: the members' scene stacks (ingest's output), in date order of the stack; all
            with the same plain band names (B02, ...), dtype and no-data value 0.
        dates: each member's date (YYYY-MM-DD), distinct: the band names say it.
        out_path: the stacked GeoTIFF on the first member's grid (CRS, transform, size); band
            descriptions ``{date}:{band}``, each band's scale/offset, tags ``STACK_DATES``,
            ``STACK_SCENES`` (JSON lists) and ``BANDS``; written atomically, with overviews.
        names: the members' scene names (tags, messages); default the file stems.

    Members on another grid are warped onto the first one's (bilinear; a warning is logged).

    Raises:
        InputError: fewer than two members, repeated or empty dates, members with other band names,
            dtype or no-data value, or a member covering under half of the first's footprint.
    """
    started = time.perf_counter()
    paths = [str(p) for p in scene_paths]
    names = list(names) if names is not None else [Path(p).stem for p in paths]
    if len(paths) < 2 or len(dates) != len(paths) or len(names) != len(paths):
        raise InputError(
            f"a stack needs two or more scenes with one date and name each; got scenes {paths}, "
            f"dates {list(dates)}"
        )
    if not all(dates) or len(set(dates)) != len(dates):
        raise InputError(f"stack dates must be distinct and non-empty, got {list(dates)}")
    infos = []
    for path in paths:
        with open_raster(path) as src:
            infos.append(
                {
                    "grid": grid_of(src),
                    "bands": list(src.descriptions),
                    "dtype": src.dtypes[0],
                    "nodata": src.nodata,
                    "scales": list(src.scales),
                    "offsets": list(src.offsets),
                }
            )
    first = infos[0]
    bands = first["bands"]
    if not all(bands) or any(DATE_SEPARATOR in b for b in bands):
        raise InputError(
            f"scene {paths[0]} has band names {bands}; expected plain names (B02, ...) as ingest "
            "writes them"
        )
    for path, info in zip(paths[1:], infos[1:], strict=True):
        for key, label in (("bands", "band names"), ("dtype", "data type"), ("nodata", "no data")):
            if info[key] != first[key]:
                raise InputError(
                    f"scene {path} has {label} {info[key]!r}, the first date's {paths[0]} has "
                    f"{first[key]!r}; the dates of a stack must share them (ingest both with the "
                    "same bands)"
                )
    if first["nodata"] not in (0, None):
        raise InputError(f"scene {paths[0]} has no-data value {first['nodata']}; expected 0")
    grid: Grid = first["grid"]
    dated = dated_band_names(dates, bands)
    scales = [s for info in infos for s in info["scales"]]
    offsets = [o for info in infos for o in info["offsets"]]
    count = len(dated)
    warped: list[str] = []
    with contextlib.ExitStack() as stack:
        sources = []
        for path, name in zip(paths, names, strict=True):
            dataset, was_warped = stack.enter_context(
                _on_grid(path, grid, Resampling.bilinear, f"scene {name!r}")
            )
            if was_warped:
                warped.append(name)
                log.warning(
                    "stack: scene %s (%s) is not on the grid of %s (%s); warping it onto that "
                    "grid (bilinear)",
                    name,
                    path,
                    names[0],
                    grid.describe(),
                )
            sources.append(dataset)
        writer = stack.enter_context(
            StackWriter(
                out_path,
                grid,
                count,
                first["dtype"],
                descriptions=dated,
                scales=scales,
                offsets=offsets,
                tags={
                    "STACK_DATES": json.dumps(list(dates)),
                    "STACK_SCENES": json.dumps(names),
                    "BANDS": ",".join(dated),
                    "WARPED_SCENES": json.dumps(warped),
                },
                band_tags=[
                    {"DATE": date, "BAND": band, "SCENE": name}
                    for date, name in zip(dates, names, strict=True)
                    for band in bands
                ],
                overview_resampling=Resampling.nearest,
            )
        )
        for window in block_windows(grid.width, grid.height, grid.width, STRIP_ROWS):
            parts = [src.read(window=window) for src in sources]
            writer.write(window, np.concatenate(parts, axis=0))
    summary = {
        "out": str(out_path),
        "scenes": names,
        "dates": list(dates),
        "bands": dated,
        "warped": warped,
        "grid": grid.describe(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info("stack: %d dates x %d bands -> %s", len(paths), len(bands), out_path)
    return summary


def combine_codes(codes: Sequence[np.ndarray], allow_partial: bool) -> np.ndarray:
    """Validity codes of a stack from its dates' codes (uint8 arrays of one shape).

    Without partial inputs a pixel invalid on any date takes the first invalid date's code (no
    data, cloud, shadow or cirrus), else snow where any date has snow, else clear. With partial
    inputs a pixel is clear where any date is clear, else snow where any is, else it keeps the
    first date's (invalid) code.
    """
    stacked = np.stack(codes)
    invalid = np.isin(stacked, INVALID_CODES)
    snow = (stacked == SNOW).any(axis=0)
    if not allow_partial:
        first_invalid = np.argmax(invalid, axis=0)
        worst = np.take_along_axis(stacked, first_invalid[None], axis=0)[0]
        out = np.where(snow, SNOW, CLEAR).astype(np.uint8)
        return np.where(invalid.any(axis=0), worst, out).astype(np.uint8)
    clear = (stacked == CLEAR).any(axis=0)
    return np.where(clear, CLEAR, np.where(snow, SNOW, stacked[0])).astype(np.uint8)


def combine_validity(
    validity_paths: Sequence[str | Path],
    scene_path: str | Path,
    out_path: str | Path,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """Write the validity raster of a stack from its dates' validity rasters.

    Args:
        validity_paths: each member's validity raster (``results/validity/{scene}.tif``), in the
            stack's date order; those not on the stack's grid are warped onto it (nearest).
        scene_path: the stacked scene (its grid; pixels no data on every band are no data).
        out_path: the stack's validity GeoTIFF (codes of :data:`VALIDITY_CODES`, colour table, the
            tags :func:`s2landcover.validity.read_validity_info` reads, ``STACK_PARTIAL``).
        allow_partial: see :func:`combine_codes`.
    """
    started = time.perf_counter()
    sources_used = [read_validity_info(p)["source"] for p in validity_paths]
    with open_raster(scene_path) as scene:
        grid = grid_of(scene)
    counts = np.zeros(len(VALIDITY_CODES), dtype=np.int64)
    with contextlib.ExitStack() as stack:
        scene = stack.enter_context(open_raster(scene_path))
        sources = [
            stack.enter_context(_on_grid(p, grid, Resampling.nearest, "validity raster"))[0]
            for p in validity_paths
        ]
        with validity_raster_writer(out_path, grid) as writer:
            for window in block_windows(grid.width, grid.height, grid.width, STRIP_ROWS):
                codes = combine_codes([s.read(1, window=window) for s in sources], allow_partial)
                nodata = (scene.read(window=window) == 0).all(axis=0)
                codes[nodata] = NODATA
                counts += code_counts(codes)
                writer.write(window, codes)
            writer.tags.update(
                validity_tags(
                    "+".join(dict.fromkeys(sources_used)),
                    counts,
                    STACK_PARTIAL=str(bool(allow_partial)).lower(),
                    VALIDITY_INPUTS=json.dumps([str(p) for p in validity_paths]),
                )
            )
    return {
        "out": str(out_path),
        "allow_partial": bool(allow_partial),
        "pixels": {VALIDITY_CODES[c]: int(n) for c, n in enumerate(counts)},
        "seconds": round(time.perf_counter() - started, 3),
    }


def composite_choice(
    classes: Sequence[np.ndarray], confidences: Sequence[np.ndarray | None]
) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the class of the most reliable date and that date's index.

    ``classes``: uint8 class maps of one shape (0 no data, 255 not observed); ``confidences``:
    uint8 max probability x 255 per date, or None (taken as 0). Observed first, then the highest
    confidence, then the first listed. Returns ``(class, source)``: where no date observed the
    pixel, class 255 if any date said "not observed" else 0, and source :data:`NO_SOURCE`.
    """
    stacked = np.stack(classes)
    observed = (stacked != NODATA_CLASS) & (stacked != NOT_OBSERVED)
    score = observed.astype(np.int32) * 256
    for i, confidence in enumerate(confidences):
        if confidence is not None:
            score[i] += confidence
    best = np.argmax(score, axis=0)
    chosen = np.take_along_axis(stacked, best[None], axis=0)[0]
    anything = observed.any(axis=0)
    fallback = np.where((stacked == NOT_OBSERVED).any(axis=0), NOT_OBSERVED, NODATA_CLASS)
    out = np.where(anything, chosen, fallback).astype(np.uint8)
    source = np.where(anything, best, NO_SOURCE).astype(np.uint8)
    return out, source


class _TaggedWriter(StreamingRasterWriter):
    """A :class:`StreamingRasterWriter` whose file also gets dataset tags (set on its stage file,
    which the COG copy carries over)."""

    def __init__(self, *args: Any, tags: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._extra_tags = tags

    def __enter__(self) -> _TaggedWriter:
        super().__enter__()
        self._dataset.update_tags(**self._extra_tags)
        return self


def source_path(out_path: str | Path) -> Path:
    """The source-date raster of a composite: ``<stem>_source.tif`` beside it."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}_source{out_path.suffix}")


def write_composite(
    prediction_paths: Sequence[str | Path],
    dates: Sequence[str],
    out_path: str | Path,
    confidence_paths: Sequence[str | Path] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write one class map of an area from its dated class maps, and the source-date raster.

    Args:
        prediction_paths: class maps of ``s2lc predict`` (same grid and class table), one per date.
        dates: the date of each (labels of the source raster; a stack's may be "2024-04-15+...").
        out_path: the composite class map: COG with the class colour table and names; beside it
            ``<stem>_source.tif`` (uint8 COG: index into ``dates``, 255 where no date observed the
            pixel; tags ``SOURCE_DATES``, ``SOURCE_SCENES`` JSON lists and ``SOURCE_<i>``).
        confidence_paths: each map's confidence raster (max class probability x 255), or None: the
            first listed observed date is taken.
        names: the inputs' names (tags); default the file stems.

    Raises:
        InputError: fewer than two maps, maps on different grids or with different class tables.
    """
    started = time.perf_counter()
    paths = [str(p) for p in prediction_paths]
    names = list(names) if names is not None else [Path(p).stem for p in paths]
    if len(paths) < 2 or len(dates) != len(paths) or len(names) != len(paths):
        raise InputError(
            f"a composite needs two or more maps with a date each; got {paths}, dates {list(dates)}"
        )
    if confidence_paths is not None and len(confidence_paths) != len(paths):
        raise InputError(
            f"{len(confidence_paths)} confidence rasters for {len(paths)} maps; give one per map"
        )
    grids = []
    for path in paths:
        with open_raster(path) as src:
            grids.append(grid_of(src))
    grid = grids[0]
    for path, other_grid in zip(paths[1:], grids[1:], strict=True):
        if not other_grid.same_as(grid):
            raise InputError(
                f"map {path} ({other_grid.describe()}) is not on the grid of {paths[0]} "
                f"({grid.describe()}); a composite takes maps of one area on one grid"
            )
    classes = read_class_table(paths[0])
    if classes is None:
        raise InputError(f"map {paths[0]} has no class table (CLASS_TABLE tag of s2lc predict)")
    for path in paths[1:]:
        other_classes = read_class_table(path)
        if other_classes is None or other_classes.names != classes.names:
            raise InputError(
                f"map {path} has other classes "
                f"({other_classes.names if other_classes else None}) than "
                f"{paths[0]} ({classes.names}); a composite merges maps of one model's classes"
            )
    if confidence_paths is not None:
        for confidence_path in confidence_paths:
            require_grid(
                confidence_path, grid, "confidence raster", f"map {paths[0]}", "give one per map"
            )
    tags = {
        "SOURCE_DATES": json.dumps(list(dates)),
        "SOURCE_SCENES": json.dumps(names),
        "COMPOSITE_RULE": "observed class first, then highest confidence, then first listed",
    }
    source_tags = {
        **tags,
        **{f"SOURCE_{i}": f"{d} ({n})" for i, (d, n) in enumerate(zip(dates, names, strict=True))},
        "SOURCE_NODATA": f"{NO_SOURCE}: no date observed the pixel",
    }
    source_counts = np.zeros(256, dtype=np.int64)
    out_path = Path(out_path)
    with contextlib.ExitStack() as stack:
        maps = [stack.enter_context(open_raster(p)) for p in paths]
        confs = (
            [stack.enter_context(open_raster(p)) for p in confidence_paths]
            if confidence_paths is not None
            else [None] * len(paths)
        )
        writer = stack.enter_context(
            _TaggedWriter(out_path, grid, classes=classes, overview_resampling="MODE", tags=tags)
        )
        source_writer = stack.enter_context(
            _TaggedWriter(
                source_path(out_path),
                grid,
                description="source date: index into SOURCE_DATES (255: none observed)",
                nodata=NO_SOURCE,
                tags=source_tags,
            )
        )
        for window in block_windows(grid.width, grid.height, grid.width, STRIP_ROWS):
            values = [m.read(1, window=window) for m in maps]
            confidence = [c.read(1, window=window) if c is not None else None for c in confs]
            out, source = composite_choice(values, confidence)
            source_counts += np.bincount(source.ravel(), minlength=256)
            writer.write_rows(int(window.row_off), out)
            source_writer.write_rows(int(window.row_off), source)
    per_date = {
        f"{d} ({n})": int(source_counts[i])
        for i, (d, n) in enumerate(zip(dates, names, strict=True))
    }
    summary = {
        "out": str(out_path),
        "source": str(source_path(out_path)),
        "pixels_per_source": per_date,
        "pixels_not_observed": int(source_counts[NO_SOURCE]),
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info("composite of %d dates -> %s: %s", len(paths), out_path, per_date)
    return summary
