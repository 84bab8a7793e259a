"""Chips: cut a scene and its mask into tile_size windows, describe each chip, filter them.

Tiling (:func:`tile_scene`) plans windows of ``tile_size`` pixels with a stride (``chips.stride``,
null = tile_size) over the scene grid. At the right and bottom edges (``chips.edge``):

- ``shift`` (default): when the last regular window would stop short of the edge, one more window
  is added, shifted inside the scene so that it ends exactly at the edge. Every pixel is covered;
  that last window overlaps its neighbour.
- ``drop``: only whole windows on the stride grid; up to stride - 1 edge pixels stay uncovered.

Chips are stored in row-major window order (store position = index row) in the chip store of
:mod:`s2landcover.io.chipstore`, with one index row per chip: window (pixels in the scene grid),
bounds (CRS units), CRS, no-data fractions and pixel counts per class.

Per-chip statistics (:func:`chip_statistics`): a pixel is *no data* when its mask is 0 or when every
band holds the image no-data value (the scene's nodata, 0 when the file sets none). ``px_0``
counts the no-data pixels, ``px_k`` (k = 1..K) the valid pixels of class k, so
``sum(px_*) = T * T`` and ``valid_fraction = 1 - nodata_fraction``. With a scene classification
band, ``scl_fraction_<code>`` (code 0..11) is the fraction of the chip's pixels with that SCL class
(all codes are stored, so a change of ``filter.scl_filter.classes`` re-runs filtering only).

Extra index columns beside the contract's: ``stride`` (pixels; the split's buffer uses it) and the
``scl_fraction_<code>`` columns. ``meta.json`` also holds ``edge``, ``count``, ``classes`` (names)
and ``scl`` (whether SCL columns exist).

Filtering (:func:`filter_chips`) reads only the index tables (no pixels). Reasons (a dropped chip
lists every reason it fails, joined by ``;`` in that order):

- ``nodata``: ``nodata_fraction > filter.max_nodata_fraction``, or no valid pixel at all;
- ``water``: with ``filter.drop_water_only``, water classes cover ``>= filter.water_fraction``
  of the valid pixels (default 1.0: water-only chips);
- ``scl``: with ``filter.scl_filter.enabled``, the listed SCL classes cover more than
  ``filter.scl_filter.max_fraction`` of the chip;
- ``cloud``: ``cloud_fraction > filter.max_cloud_fraction`` (default 1.0: cloudy chips are kept,
  as the seeds did; their cloud pixels carry no label anyway).

Water-only survival (Raster Vision's *negative survival probability*): of the chips dropped for
``water`` alone, a share ``filter.water_only_keep_fraction`` is kept after all, so that open water
stays learnable (a model that never sees open sea paints it with land classes). Which ones: the
chips are ranked by a hash of (``filter.seed``, chip id) and the first
``round(fraction x count)`` kept, so the choice is deterministic for a seed and a chip's fate does
not depend on the order of the scenes. They get ``keep`` true, an empty ``drop_reason`` and
``keep_reason`` ``"kept: water-only survival"`` (``""`` for every other chip), which
``footprints.gpkg`` shows.

With a validity raster (:mod:`s2landcover.validity`, ``--validity``): pixels coded no data, cloud,
cloud shadow or cirrus get label 0 in the chip's mask (ignored by the loss, like no data) and
count in ``px_0``; ``nodata_fraction`` counts only no data (mask 0, image no data, validity 0), so
the no-data filter does not drop cloudy chips. Index columns ``cloud_fraction`` (cloud, shadow or
cirrus share of the chip's pixels with data) and ``validity_fraction_<code>`` (codes 0..5);
``meta.json`` holds ``validity`` (whether they exist).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from rasterio.windows import Window

from s2landcover.classes import ClassTable
from s2landcover.errors import InputError
from s2landcover.io.chipstore import (
    ChipStoreWriter,
    read_chip_index,
    write_table,
)
from s2landcover.io.documents import write_json
from s2landcover.io.rasters import Grid, atomic_path, grid_of, open_raster, require_grid
from s2landcover.progress import ProgressLog
from s2landcover.validity import chip_validity_stats, invalid_pixels
from s2landcover.windows import grid_windows

log = logging.getLogger(__name__)

SCL_CODES = tuple(range(12))  # Sentinel-2 L2A scene classification values 0..11
FILTER_REASONS = ("nodata", "water", "scl", "cloud")
WATER_SURVIVAL = "kept: water-only survival"  # keep_reason of water-only chips kept anyway


# --- per-chip statistics -----------------------------------------------------------------------


def nodata_pixels(
    image: np.ndarray, mask: np.ndarray, image_nodata: float
) -> tuple[np.ndarray, np.ndarray]:
    """(no-data pixels, image no-data pixels) of a chip (boolean (H, W) arrays).

    Image no data: every band equals ``image_nodata``. No data: that, or mask class 0.
    """
    image_nodata_px = (image == image_nodata).all(axis=0)
    return image_nodata_px | (mask == 0), image_nodata_px


def chip_statistics(
    image: np.ndarray, mask: np.ndarray, num_classes: int, image_nodata: float = 0
) -> dict[str, Any]:
    """Fractions and class pixel counts of one chip (image (C, H, W), mask (H, W) class indices).

    Returns nodata_fraction, image_nodata_fraction, valid_fraction and px_0..px_K (px_0 = no-data
    pixels, px_k = valid pixels of class k). Mask values above K count as no data.
    """
    nodata, image_nodata_px = nodata_pixels(image, mask, image_nodata)
    total = mask.size
    classes = np.where(nodata | (mask > num_classes), 0, mask).astype(np.intp)
    counts = np.bincount(classes.ravel(), minlength=num_classes + 1)
    stats: dict[str, Any] = {
        "nodata_fraction": float(counts[0] / total),
        "image_nodata_fraction": float(image_nodata_px.sum() / total),
        "valid_fraction": float(1.0 - counts[0] / total),
    }
    stats.update({f"px_{k}": int(counts[k]) for k in range(num_classes + 1)})
    return stats


def scl_fractions(scl: np.ndarray) -> dict[str, float]:
    """Fraction of a chip's pixels per scene classification code 0..11 (``scl_fraction_<code>``)."""
    counts = np.bincount(
        np.clip(scl, 0, len(SCL_CODES) - 1).ravel().astype(np.intp), minlength=len(SCL_CODES)
    )
    return {f"scl_fraction_{code}": float(counts[code] / scl.size) for code in SCL_CODES}


def chip_id(scene: str, row_off: int, col_off: int) -> str:
    """Identifier of a chip: ``{scene}_r{row_off}_c{col_off}``."""
    return f"{scene}_r{row_off}_c{col_off}"


# --- tiling ------------------------------------------------------------------------------------


def tile_scene(
    scene_path: str | Path,
    mask_path: str | Path,
    scene_name: str,
    out_dir: str | Path,
    tile_size: int,
    chips_cfg: Mapping[str, Any],
    classes: ClassTable,
    threads: int = 1,
    scl_path: str | Path | None = None,
    validity_path: str | Path | None = None,
) -> dict[str, Any]:
    """Cut a scene stack and its mask into chips: write the chip store folder ``out_dir``.

    ``out_dir`` (``results/chips/size{tile}/{scene}/``) is written under a temporary name and
    renamed at the end, so a failure leaves nothing. The mask (and the SCL band, when given) must be
    on exactly the scene's grid. Windows: see the module docstring (``chips_cfg``: ``stride``,
    ``edge``).

    Work runs over rows of windows in ``threads`` threads (a contiguous run of rows each, with its
    own dataset handles). Memory bound, independent of the scene's height: per thread one strip of
    the scene (C x T x W x 2 bytes), of the mask (T x W) and the strip's chips (the same again),
    e.g. 4 bands, T = 300, W = 10,980: about 55 MB per thread; plus the GDAL block cache, set to
    1.5 x threads x the block rows a strip spans (+1) of scene and mask (about 200 MB per thread for
    that scene in 512-px blocks). Chips go to disk by position (``os.pwrite``) as each strip is
    done.

    Returns a summary: scene, chips, tile_size, stride, edge, bands, out_dir, seconds.
    """
    started = time.perf_counter()
    scene_path, mask_path, out_dir = Path(scene_path), Path(mask_path), Path(out_dir)
    stride = int(chips_cfg["stride"] or tile_size)
    edge = str(chips_cfg["edge"])
    if stride > tile_size or stride < 1:
        raise InputError(f"chips.stride = {stride} must be between 1 and the tile size {tile_size}")
    with open_raster(scene_path) as scene:
        grid = grid_of(scene)
        bands = [d or f"band{i + 1}" for i, d in enumerate(scene.descriptions)]
        scales = [float(s) for s in scene.scales]
        offsets = [float(o) for o in scene.offsets]
        image_nodata = float(scene.nodata) if scene.nodata is not None else 0.0
        band_count = scene.count
        dtype = scene.dtypes[0]
    if dtype != "uint16":
        raise InputError(
            f"scene {scene_path} has data type {dtype}; expected uint16 (the scene stack contract)"
        )
    _check_same_grid(mask_path, "mask", grid, scene_path)
    if scl_path is not None:
        _check_same_grid(scl_path, "scene classification band", grid, scene_path)
    if validity_path is not None:
        _check_same_grid(validity_path, "validity raster", grid, scene_path)
    if tile_size > grid.width or tile_size > grid.height:
        raise InputError(
            f"tile size {tile_size} px is larger than scene {scene_path} "
            f"({grid.width} x {grid.height} px);"
            " choose a tile_size at most the scene's smaller side"
        )
    rows = grid_windows(grid.width, grid.height, tile_size, stride, edge=edge)
    count = sum(len(r) for r in rows)
    starts = np.cumsum([0] + [len(r) for r in rows])
    log.info(
        "%s: %d chips of %d px (stride %d, edge %s) from %s, %d thread(s)",
        scene_name, count, tile_size, stride, edge, grid.describe(), threads,
    )  # fmt: skip

    local = threading.local()
    progress = ProgressLog(f"tiling {scene_name}", count, "chips")
    opened: list[Any] = []
    lock = threading.Lock()

    def handles() -> tuple[Any, Any, Any]:
        if not hasattr(local, "scene"):
            local.scene = open_raster(scene_path)
            local.mask = open_raster(mask_path)
            local.scl = open_raster(scl_path) if scl_path is not None else None
            local.validity = open_raster(validity_path) if validity_path is not None else None
            with lock:
                opened.extend(
                    h for h in (local.scene, local.mask, local.scl, local.validity) if h is not None
                )
        return local.scene, local.mask, local.scl

    def tile_row(row_number: int) -> list[dict[str, Any]]:
        windows = rows[row_number]
        scene, mask, scl = handles()
        col_first = windows[0].col_off
        col_last = windows[-1].col_off + tile_size
        strip_window = Window(col_first, windows[0].row_off, col_last - col_first, tile_size)
        image_strip = scene.read(window=strip_window)
        mask_strip = mask.read(1, window=strip_window)
        scl_strip = scl.read(1, window=strip_window) if scl is not None else None
        validity = local.validity
        validity_strip = validity.read(1, window=strip_window) if validity is not None else None
        images = np.empty((len(windows), band_count, tile_size, tile_size), dtype=np.uint16)
        masks = np.empty((len(windows), tile_size, tile_size), dtype=np.uint8)
        records = []
        for i, window in enumerate(windows):
            c0 = int(window.col_off - col_first)
            images[i] = image_strip[:, :, c0 : c0 + tile_size]
            masks[i] = mask_strip[:, c0 : c0 + tile_size]
            record = _chip_record(
                scene_name, int(starts[row_number]) + i, window, grid, stride, tile_size
            )
            codes = None
            if validity_strip is not None:
                codes = validity_strip[:, c0 : c0 + tile_size]
                nodata = nodata_pixels(images[i], masks[i], image_nodata)[0] | (codes == 0)
                masks[i][invalid_pixels(codes)] = 0  # cloud, shadow, cirrus: no label
            record.update(chip_statistics(images[i], masks[i], classes.num_classes, image_nodata))
            if codes is not None:
                record["nodata_fraction"] = float(nodata.mean())
                record["valid_fraction"] = 1.0 - record["nodata_fraction"]
                record.update(chip_validity_stats(codes))
            if scl_strip is not None:
                record.update(scl_fractions(scl_strip[:, c0 : c0 + tile_size]))
            records.append(record)
        writer.write(int(starts[row_number]), images, masks)
        progress.advance(len(windows))
        return records

    def tile_rows(row_numbers: Sequence[int]) -> list[list[dict[str, Any]]]:
        return [tile_row(int(r)) for r in row_numbers]

    # Each thread takes a contiguous run of window rows, so the GDAL block cache reuses the blocks
    # that consecutive strips share (a run per thread decodes each block about once).
    workers = max(1, min(threads, len(rows)))
    runs = [list(run) for run in np.array_split(np.arange(len(rows)), workers)]
    cache_bytes = _block_cache_bytes(
        scene_path, [mask_path, scl_path, validity_path], tile_size, workers
    )
    # The arrays are sparse files filled by position: their size is checked up front (the device
    # would fill up only midway); a temporary folder of a killed run is removed (atomic_path).
    needs = ChipStoreWriter.bytes_needed(count, band_count, tile_size)
    with (
        atomic_path(out_dir, needs_bytes=needs) as tmp_dir,
        rasterio.Env(GDAL_CACHEMAX=cache_bytes),
    ):
        writer = ChipStoreWriter(tmp_dir, count, band_count, tile_size)
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                record_rows = [row for run in pool.map(tile_rows, runs) for row in run]
        finally:
            writer.close()
            for handle in opened:
                handle.close()
        index = pd.DataFrame([r for row in record_rows for r in row])
        meta = {
            "scene": scene_name,
            "bands": bands,
            "scales": scales,
            "offsets": offsets,
            "nodata": image_nodata,
            "crs": _crs_string(grid),
            "transform": list(grid.transform)[:6],
            "width": grid.width,
            "height": grid.height,
            "tile_size": tile_size,
            "stride": stride,
            "edge": edge,
            "count": count,
            "classes": list(classes.names),
            "scl": scl_path is not None,
            "validity": validity_path is not None,
        }
        writer.finish(index, meta)
    seconds = time.perf_counter() - started
    log.info("%s: wrote %d chips to %s in %.1f s", scene_name, count, out_dir, seconds)
    return {
        "scene": scene_name,
        "chips": count,
        "tile_size": tile_size,
        "stride": stride,
        "edge": edge,
        "bands": bands,
        "out_dir": str(out_dir),
        "seconds": round(seconds, 3),
    }


def _block_cache_bytes(
    scene_path: Path, others: Sequence[str | Path | None], tile_size: int, workers: int
) -> int:
    """GDAL block cache for tiling: per thread, the block rows a strip of ``tile_size`` rows spans
    plus the next one, of the scene and the other rasters (mask, SCL), with 50 % headroom.

    Bounds the cache (GDAL's default is 5 % of RAM) while every block is decoded about once.
    """
    row_bytes = 0
    for path in [scene_path, *[o for o in others if o is not None]]:
        with open_raster(path) as dataset:
            block_rows = dataset.block_shapes[0][0]
            itemsize = np.dtype(dataset.dtypes[0]).itemsize
            spanned = -(-tile_size // block_rows) + 1
            row_bytes += spanned * block_rows * dataset.width * dataset.count * itemsize
    return max(64 * 2**20, int(1.5 * workers * row_bytes))


def _crs_string(grid: Grid) -> str:
    return grid.crs.to_string() if grid.crs else ""


def _chip_record(
    scene_name: str, store_index: int, window: Window, grid: Grid, stride: int, tile_size: int
) -> dict[str, Any]:
    """Index columns that describe where a chip is (window in pixels, bounds in CRS units)."""
    row_off, col_off = int(window.row_off), int(window.col_off)
    transform: Affine = grid.window_transform(window)
    x0, y0 = transform @ (0, 0)
    x1, y1 = transform @ (tile_size, tile_size)
    return {
        "chip_id": chip_id(scene_name, row_off, col_off),
        "scene": scene_name,
        "store_index": store_index,
        "row_off": row_off,
        "col_off": col_off,
        "height": tile_size,
        "width": tile_size,
        "stride": stride,
        "minx": min(x0, x1),
        "miny": min(y0, y1),
        "maxx": max(x0, x1),
        "maxy": max(y0, y1),
        "crs": _crs_string(grid),
    }


def _check_same_grid(path: str | Path, what: str, grid: Grid, scene_path: Path) -> None:
    require_grid(
        path,
        grid,
        what,
        f"scene {scene_path}",
        "expected exactly the scene's grid (run downsample-mask)",
    )


# --- filtering ---------------------------------------------------------------------------------


def filter_decisions(
    index: pd.DataFrame, filter_cfg: Mapping[str, Any], classes: ClassTable
) -> tuple[pd.Series, pd.Series, dict[str, int]]:
    """Decide per chip: (keep bool Series, drop_reason str Series ("" when kept), chips per reason).

    Works on the index table only (see the module docstring for the reasons). A chip failing several
    tests lists all their reasons joined by ``;``; the count of a reason counts every chip that
    fails it.
    """
    k = classes.num_classes
    class_px = index[[f"px_{i}" for i in range(1, k + 1)]].to_numpy(dtype=np.int64)
    valid_px = class_px.sum(axis=1)
    failed: dict[str, np.ndarray] = {}
    failed["nodata"] = (
        index["nodata_fraction"].to_numpy() > float(filter_cfg["max_nodata_fraction"])
    ) | (valid_px == 0)
    if filter_cfg["drop_water_only"] and classes.water_indices:
        water_px = (
            index[[f"px_{i}" for i in classes.water_indices]].to_numpy(dtype=np.int64).sum(axis=1)
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            water_share = np.where(valid_px > 0, water_px / np.maximum(valid_px, 1), 0.0)
        failed["water"] = (valid_px > 0) & (water_share >= float(filter_cfg["water_fraction"]))
    else:
        failed["water"] = np.zeros(len(index), dtype=bool)
    scl_cfg = filter_cfg["scl_filter"]
    if scl_cfg["enabled"]:
        columns = [f"scl_fraction_{c}" for c in scl_cfg["classes"]]
        missing = [c for c in columns if c not in index.columns]
        if missing:
            raise InputError(
                "filter.scl_filter.enabled is true but the chip index has no scene classification "
                f"columns ({missing[0]} missing); set ingest.include_scl: true so tiling gets the "
                "SCL band"
            )
        scl_share = index[columns].to_numpy(dtype=float).sum(axis=1)
        failed["scl"] = scl_share > float(scl_cfg["max_fraction"])
    else:
        failed["scl"] = np.zeros(len(index), dtype=bool)
    max_cloud = float(filter_cfg["max_cloud_fraction"])
    if max_cloud < 1.0:
        if "cloud_fraction" not in index.columns:
            raise InputError(
                f"filter.max_cloud_fraction is {max_cloud} but the chip index has no "
                "cloud_fraction column (chips tiled without a validity raster); set "
                "validity.source to auto, scl, s2cloudless or file, or max_cloud_fraction to 1"
            )
        failed["cloud"] = index["cloud_fraction"].to_numpy(dtype=float) > max_cloud
    else:
        failed["cloud"] = np.zeros(len(index), dtype=bool)
    reasons = np.full(len(index), "", dtype=object)
    for name in FILTER_REASONS:
        hit = failed[name]
        reasons[hit] = np.where(reasons[hit] == "", name, reasons[hit] + ";" + name)
    keep = pd.Series(reasons == "", index=index.index, name="keep")
    counts = {name: int(failed[name].sum()) for name in FILTER_REASONS}
    return keep, pd.Series(reasons, index=index.index, name="drop_reason").astype(str), counts


def water_only_survivors(
    chip_ids: pd.Series, reasons: pd.Series, fraction: float, seed: int
) -> np.ndarray:
    """Chips dropped for water alone that are kept after all (boolean array, index order).

    ``round(fraction x n)`` of the ``n`` chips whose drop reason is exactly ``water``: those with
    the lowest hash of (seed, chip id) (BLAKE2b), so the choice is deterministic for a seed,
    independent of the order of the rows and, as the fraction grows, only adds chips.
    """
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"filter.water_only_keep_fraction = {fraction}; expected 0..1")
    candidates = np.flatnonzero(reasons.to_numpy(dtype=object) == "water")
    survivors = np.zeros(len(reasons), dtype=bool)
    count = round(fraction * len(candidates))
    if count == 0:
        return survivors
    ids = chip_ids.to_numpy(dtype=object)[candidates]
    keys = [hashlib.blake2b(f"{seed}:{c}".encode(), digest_size=8).digest() for c in ids]
    order = sorted(range(len(candidates)), key=lambda i: (keys[i], str(ids[i])))
    survivors[candidates[order[:count]]] = True
    return survivors


def filter_chips(
    index_paths: Sequence[str | Path],
    out_path: str | Path,
    filter_cfg: Mapping[str, Any],
    classes: ClassTable,
) -> dict[str, Any]:
    """Choose the chips to train on from the scenes' chip indexes (no pixels are read).

    Writes ``out_path`` (``results/chips/size{tile}/selected.parquet``: every chip of every scene
    with ``keep``, ``drop_reason`` and ``keep_reason``) and ``filter_summary.json`` beside it
    (chips in, kept, dropped, chips failing each test (water-only survivors included), water-only
    chips and how many survived, thresholds). Raises :class:`InputError` (writing nothing) when no
    chip is left.
    """
    out_path = Path(out_path)
    tables = []
    for path in index_paths:
        table = read_chip_index(path)
        missing = [
            c for c in ("chip_id", "scene", "nodata_fraction", "px_0") if c not in table.columns
        ]
        missing += [f"px_{i}" for i in classes.indices if f"px_{i}" not in table.columns]
        if missing:
            raise InputError(
                f"chip index {path} lacks columns {missing}; expected an index.parquet of "
                "`s2lc tile` "
                f"made with the same class table ({classes.num_classes} classes)"
            )
        tables.append(table)
    if not tables:
        raise InputError("filter_chips: no chip index given")
    index = pd.concat(tables, ignore_index=True)
    duplicated = index["chip_id"][index["chip_id"].duplicated()]
    if len(duplicated):
        raise InputError(
            f"chip id {duplicated.iloc[0]!r} appears in more than one index "
            f"({[str(p) for p in index_paths]}); give each scene's index once"
        )
    keep, reasons, counts = filter_decisions(index, filter_cfg, classes)
    fraction = float(filter_cfg["water_only_keep_fraction"])
    survivors = water_only_survivors(index["chip_id"], reasons, fraction, int(filter_cfg["seed"]))
    water_only = int((reasons == "water").sum())
    index["keep"] = keep.to_numpy() | survivors
    index["drop_reason"] = np.where(survivors, "", reasons.to_numpy())
    index["keep_reason"] = np.where(survivors, WATER_SURVIVAL, "")
    kept = int(index["keep"].sum())
    thresholds = {
        "max_nodata_fraction": filter_cfg["max_nodata_fraction"],
        "drop_water_only": filter_cfg["drop_water_only"],
        "water_fraction": filter_cfg["water_fraction"],
        "scl_filter": dict(filter_cfg["scl_filter"]),
        "max_cloud_fraction": filter_cfg["max_cloud_fraction"],
        "water_only_keep_fraction": fraction,
        "seed": int(filter_cfg["seed"]),
    }
    per_scene = {
        str(scene): {"chips": len(part), "kept": int(part["keep"].sum())}
        for scene, part in index.groupby("scene", sort=True)
    }
    summary = {
        "chips": len(index),
        "kept": kept,
        "dropped": len(index) - kept,
        "dropped_by_reason": counts,
        "water_only": water_only,
        "water_only_kept": int(survivors.sum()),
        "reason_rule": "a dropped chip lists every reason it fails, joined by ';'",
        "scenes": per_scene,
        "thresholds": thresholds,
    }
    for name in FILTER_REASONS:
        log.info("filter: %d of %d chips fail %r", counts[name], len(index), name)
    log.info(
        "filter: kept %d of %d water-only chips (filter.water_only_keep_fraction %.2f)",
        int(survivors.sum()), water_only, fraction,
    )  # fmt: skip
    log.info("filter: kept %d of %d chips", kept, len(index))
    if kept == 0:
        raise InputError(
            f"no chip left after filtering {len(index)} chips of {len(per_scene)} scene(s): "
            "nodata (nodata_fraction > filter.max_nodata_fraction = "
            f"{thresholds['max_nodata_fraction']},"
            f" or no valid pixel) removed {counts['nodata']}, water (water classes >= "
            f"filter.water_fraction = {thresholds['water_fraction']} of valid pixels) removed "
            f"{counts['water']}, scl (filter.scl_filter) removed {counts['scl']}, cloud "
            f"(filter.max_cloud_fraction) removed {counts['cloud']}; relax these "
            "thresholds or check the mask and scene"
        )
    write_table(index, out_path)
    write_json(summary, out_path.with_name("filter_summary.json"))
    return {k: v for k, v in summary.items() if k != "scenes"} | {"out": str(out_path)}
