"""Split the kept chips into train / val / test without spatial leakage.

Methods (``split.method``):

- ``blocks`` (default): chips are grouped into square blocks of ``split.block_size`` x
  ``split.block_size`` chip strides, laid out in map coordinates (CRS units) from the upper-left
  corner of all chips of a CRS, so chips of different scenes over the same ground (two dates,
  overlapping tiles) fall in the same block. Whole blocks go to train / val / test: blocks are
  ordered along a Hilbert curve, the order is rotated by a seeded random offset and cut into
  ``split.regions`` stretches; each stretch is shared among the splits by the fractions (in a seeded
  random order). So held-out areas are compact (few training chips lost to the buffer) and spread
  over the scene, and chip counts match the fractions to within about a block per stretch.
  Then the buffer: a training chip becomes ``excluded`` when its pixel footprint overlaps a
  val/test chip or lies within ``(split.buffer - 1) x stride`` pixels of one (buffer 1:
  overlapping or touching, i.e. sharing an edge or a corner, in the 8-neighbourhood).
  Guarantee for buffer >= 1, whatever the stride: no training chip contains or touches a pixel of
  a val/test chip (at least one pixel lies between them). Buffer 0 still excludes overlapping
  chips, so no pixel is ever in both a training and a val/test chip.
  Class-aware layout (``split.stratify``, default true): a compact layout can hand a class that
  lives in a few blocks (the sea along a coast) to val/test only. With stratify, the splitter
  scores ``split.stratify_candidates`` seeded compact layouts (the plain one first) by how close
  each class's pixel share in train, val and test, after the buffer, stays to its share in all
  kept chips and how well chip counts match the fractions, keeps the best and refines it by
  moving single blocks and swapping pairs of blocks while the score improves
  (:func:`stratified_blocks_to_splits`). The buffer rule is unchanged (it is part of the score
  and applied afterwards as before). ``split_summary.json`` holds the search's report
  (``stratify``) and the class pixel shares per split; a class absent or under 1 % of training's
  valid pixels but present in val/test is warned about in the log and the summary.
- ``random``: each chip draws its split from a hash of (seed, chip id), so its split does not
  depend on the other chips. Training chips that share pixels with a val/test chip (stride < tile
  size) are excluded (no pixel leaks), but touching chips are kept: a random split is spatially
  autocorrelated by design, and a warning says so.
- ``scene``: ``split.scenes`` names the scenes of each split (train on one date, validate on
  another); chips of unlisted scenes are ``excluded``. No buffer (the point is the same ground at
  another date).

The buffer compares chips of the same CRS only (chips in different CRSs are never compared), and
only training chips against val/test chips (val and test chips may touch each other).
Deterministic: the same selected table and config give the same split.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from s2landcover.classes import ClassTable
from s2landcover.errors import InputError
from s2landcover.io.chipstore import read_chip_index, write_footprints, write_table
from s2landcover.io.documents import write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
EXCLUDED = "excluded"
DROPPED = "dropped"  # split value of filtered-out chips in the footprint layer
_CHUNK = 512  # training chips compared at once in the buffer test (memory: _CHUNK x val chips)


def pixel_size(chips: pd.DataFrame) -> np.ndarray:
    """Pixel size (CRS units) of each chip, from its bounds and width in pixels."""
    return (chips["maxx"].to_numpy(float) - chips["minx"].to_numpy(float)) / chips[
        "width"
    ].to_numpy(float)


def assign_blocks(chips: pd.DataFrame, block_size: int) -> pd.DataFrame:
    """Block of each chip: columns block (``"{crs}|{row}|{col}"``), block_row, block_col.

    Blocks of ``block_size`` x ``block_size`` chip strides are laid out per CRS from the upper-left
    corner of all its chips (map coordinates), so scenes over the same ground share blocks.
    """
    blocks = pd.DataFrame({"block": "", "block_row": 0, "block_col": 0}, index=chips.index).astype(
        {"block": object}
    )
    for crs, part in chips.groupby("crs", sort=True):
        res = pixel_size(part)
        side = block_size * part["stride"].to_numpy(float) * res
        x0, y0 = part["minx"].min(), part["maxy"].max()
        eps = 1e-6
        block_col = np.floor((part["minx"].to_numpy(float) - x0) / side + eps).astype(np.int64)
        block_row = np.floor((y0 - part["maxy"].to_numpy(float)) / side + eps).astype(np.int64)
        blocks.loc[part.index, "block"] = [
            f"{crs}|{r}|{c}" for r, c in zip(block_row, block_col, strict=True)
        ]
        blocks.loc[part.index, "block_row"] = block_row
        blocks.loc[part.index, "block_col"] = block_col
    return blocks


def hilbert_index(row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Position of grid cells (row, col >= 0) along a Hilbert curve (near cells, near positions)."""
    side = 1
    while side <= max(int(np.max(row, initial=0)), int(np.max(col, initial=0))):
        side *= 2
    x, y = col.astype(np.int64).copy(), row.astype(np.int64).copy()
    d = np.zeros_like(x)
    s = side // 2
    while s > 0:
        rx = ((x & s) > 0).astype(np.int64)
        ry = ((y & s) > 0).astype(np.int64)
        d += s * s * ((3 * rx) ^ ry)
        flip = ry == 0
        swap_x = np.where(flip & (rx == 1), s - 1 - x, x)
        swap_y = np.where(flip & (rx == 1), s - 1 - y, y)
        x, y = np.where(flip, swap_y, swap_x), np.where(flip, swap_x, swap_y)
        s //= 2
    return d


def blocks_to_splits(
    blocks: pd.DataFrame, fractions: Mapping[str, float], seed: int, regions: int = 5
) -> dict[str, str]:
    """Assign whole blocks to splits in compact areas spread over the scene(s).

    ``blocks`` has columns block, crs, block_row, block_col, chips. Blocks are ordered along a
    Hilbert curve (per CRS), the sequence is rotated by a seeded random offset and cut into
    ``regions`` stretches of about equal chip counts; inside each stretch, in a seeded random
    order of the splits, each split takes consecutive blocks until its share (fraction x the
    stretch's chips) is reached (cumulative counts: totals match the fractions to within a block
    per stretch). ``regions`` is lowered for few blocks so each stretch holds about 2 blocks of its
    smallest split.
    Compact val/test areas lose far fewer training chips to the buffer than scattered blocks.
    """
    rng = np.random.default_rng(seed)
    ordered = blocks.assign(
        curve=hilbert_index(blocks["block_row"].to_numpy(), blocks["block_col"].to_numpy())
    ).sort_values(["crs", "curve", "block"], kind="stable")
    keys = ordered["block"].tolist()
    sizes = ordered["chips"].to_numpy(dtype=float)
    start = int(rng.integers(len(keys)))
    keys, sizes = keys[start:] + keys[:start], np.roll(sizes, -start)
    active = [s for s in SPLITS if float(fractions.get(s, 0.0)) > 0]
    shares = np.array([float(fractions[s]) for s in active])
    shares = shares / shares.sum()
    # each stretch should hold at least ~2 blocks of its smallest split, or areas get too thin
    regions = max(1, min(int(regions), int(len(keys) * shares.min() / 2)))
    cumulative = np.cumsum(sizes) - sizes / 2  # chip position of each block's middle
    total = float(sizes.sum())
    assignment: dict[str, str] = {}
    for region in range(regions):
        low, high = total * region / regions, total * (region + 1) / regions
        members = np.flatnonzero((cumulative >= low) & (cumulative < high))
        order = rng.permutation(len(active))
        edges = low + np.cumsum(shares[order]) * (high - low)
        for position in members:
            slot = min(
                int(np.searchsorted(edges, cumulative[position], side="right")), len(order) - 1
            )
            assignment[keys[position]] = active[order[slot]]
    return assignment


def near_block_pairs(
    chips: pd.DataFrame, blocks: np.ndarray, buffer: int
) -> tuple[np.ndarray, np.ndarray]:
    """(chip position, block position) pairs: the block holds a chip within the buffer of the chip.

    The same rule as :func:`near_held_out` (same CRS, gap in pixels at most ``(buffer - 1) x
    stride``, or overlapping for buffer 0), so a training chip is excluded exactly when one of its
    paired blocks is held out. ``blocks`` gives each chip's block position (0..B-1). Candidate
    pairs come from a grid hash of the chips' lower-left corners (cells of the largest chip side
    plus the buffer), so memory and time grow with the chips, not their square.
    """
    chip_pos, block_pos = [], []
    crs_values = chips["crs"].to_numpy()
    bounds_all = chips[["minx", "miny", "maxx", "maxy"]].to_numpy(float)
    for crs in np.unique(crs_values):
        members = np.flatnonzero(crs_values == crs)
        part = chips.iloc[members]
        res = float(np.max(pixel_size(part)))
        limit_px = (buffer - 1) * int(part["stride"].max()) if buffer >= 1 else -1
        bounds = bounds_all[members]
        side = float(np.max(bounds[:, 2:] - bounds[:, :2]))
        cell = side + max(limit_px + 1, 0) * res + res
        cx = np.floor(bounds[:, 0] / cell).astype(np.int64)
        cy = np.floor(bounds[:, 1] / cell).astype(np.int64)
        grid = pd.DataFrame({"j": np.arange(len(members)), "cx": cx, "cy": cy})
        found = []
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                probe = pd.DataFrame({"i": np.arange(len(members)), "cx": cx + dx, "cy": cy + dy})
                found.append(probe.merge(grid, on=["cx", "cy"])[["i", "j"]].to_numpy())
        pairs = np.concatenate(found)
        i, j = pairs[:, 0], pairs[:, 1]
        gap_x = np.maximum(bounds[j, 0] - bounds[i, 2], bounds[i, 0] - bounds[j, 2])
        gap_y = np.maximum(bounds[j, 1] - bounds[i, 3], bounds[i, 1] - bounds[j, 3])
        near = np.maximum(gap_x, gap_y) / res <= limit_px + 0.5
        chip_pos.append(members[i[near]])
        block_pos.append(blocks[members[j[near]]])
    if not chip_pos:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    unique = np.unique(np.stack([np.concatenate(chip_pos), np.concatenate(block_pos)]), axis=1)
    return unique[0].astype(np.int64), unique[1].astype(np.int64)


class _LayoutScore:
    """Scores block layouts: class pixel shares and chip counts per split after the buffer.

    Cost (lower is better) = sum over splits of the mean over classes of
    ``((p_sk - p_k) / max(p_k, 0.01))^2`` (p_sk: class k's share of the valid pixels of split s's
    chips, p_k: of all kept chips; relative, so a 9 % class at 0.4 % costs as much as a 50 % class
    at 2 %, while classes under 1 % do not dominate) plus the sum over splits of
    ``((n_s / N - f_s) / f_s)^2`` (n_s: chips of split s after the buffer, N: kept chips, f_s:
    the fraction), so training chips lost to the buffer count against a layout.
    """

    def __init__(
        self, class_px: np.ndarray, chip_block: np.ndarray, pairs: tuple[np.ndarray, np.ndarray],
        shares: np.ndarray,
    ) -> None:  # fmt: skip
        # Chips with the same block and the same nearby blocks (the same ground in several
        # scenes) always share their fate: score them as one unit (sums of pixels and chips).
        pair_chip, pair_block = pairs
        near = pd.Series(pair_block).groupby(pair_chip).apply(lambda b: tuple(sorted(b)))
        keys = pd.Series(list(zip(chip_block, near.reindex(range(len(chip_block))), strict=True)))
        unit, first = pd.factorize(keys)[0], ~keys.duplicated().to_numpy()
        self.class_px = np.zeros((unit.max() + 1, class_px.shape[1]))  # (units, K)
        np.add.at(self.class_px, unit, class_px.astype(float))
        self.chips = np.bincount(unit).astype(float)
        self.chip_block = chip_block[first]  # unit order = order of first appearance
        unit_pairs = np.unique(np.stack([unit[pair_chip], pair_block]), axis=1)
        self.pair_chip, self.pair_block = unit_pairs[0], unit_pairs[1]
        self.n = float(len(chip_block))
        self.shares = shares  # fractions of the active splits, summing to 1
        total = self.class_px.sum(axis=0)
        self.whole = total / max(total.sum(), 1.0)
        self.present = total > 0
        self.scale = np.maximum(self.whole, 0.01)

    def chip_splits(self, block_split: np.ndarray) -> np.ndarray:
        """Split code per unit (0 = train, 1.. = held out, -1 = excluded by the buffer)."""
        codes = block_split[self.chip_block].copy()
        held = block_split > 0
        near_held = np.zeros(len(codes), dtype=bool)
        hit = held[self.pair_block]
        near_held[self.pair_chip[hit]] = True
        codes[(codes == 0) & near_held] = -1
        return codes

    def cost(self, block_split: np.ndarray) -> float:
        codes = self.chip_splits(block_split)
        total = 0.0
        for code, share in enumerate(self.shares):
            rows = codes == code
            px = self.class_px[rows].sum(axis=0)
            p = px / px.sum() if px.sum() > 0 else np.zeros_like(px)
            deviation = ((p - self.whole) / self.scale)[self.present]
            chips = self.chips[rows].sum()
            total += float(np.mean(deviation**2)) + float((chips / self.n - share) / share) ** 2
        return total


def stratified_blocks_to_splits(
    blocks: pd.DataFrame,
    kept: pd.DataFrame,
    classes: ClassTable,
    fractions: Mapping[str, float],
    seed: int,
    regions: int,
    buffer: int,
    candidates: int = 64,
    max_evaluations: int = 20_000,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Class-aware block layout: (block -> split, search report).

    Scores (:class:`_LayoutScore`) ``candidates`` seeded compact layouts of
    :func:`blocks_to_splits` (the first is the plain layout of ``seed``, so the result is never
    worse than it), then refines the best by moving single blocks to another split while that
    lowers the cost (blocks visited in a seeded order; at most ``max_evaluations`` layouts
    scored). The buffer's exclusions are part of the score, computed exactly from
    :func:`near_block_pairs`. Deterministic for a seed.
    """
    active = [s for s in SPLITS if float(fractions.get(s, 0.0)) > 0]
    shares = np.array([float(fractions[s]) for s in active])
    shares = shares / shares.sum()
    keys = blocks["block"].tolist()
    block_index = {key: i for i, key in enumerate(keys)}
    chip_block = kept["block"].map(block_index).to_numpy(dtype=np.int64)
    class_px = kept[[f"px_{i}" for i in classes.indices]].to_numpy(dtype=float)
    score = _LayoutScore(class_px, chip_block, near_block_pairs(kept, chip_block, buffer), shares)
    code_of = {s: i for i, s in enumerate(active)}

    def encode(assignment: Mapping[str, str]) -> np.ndarray:
        return np.array([code_of[assignment[k]] for k in keys], dtype=np.int64)

    plain = encode(blocks_to_splits(blocks, fractions, seed, regions))
    plain_cost = score.cost(plain)
    best, best_cost = plain, plain_cost
    for c in range(1, int(candidates)):
        layout = encode(blocks_to_splits(blocks, fractions, seed * 1_000_003 + c, regions))
        value = score.cost(layout)
        if value < best_cost - 1e-12:
            best, best_cost = layout, value
    evaluations = int(candidates)
    rng = np.random.default_rng([seed, 16])
    improved = True
    moves = swaps = 0
    while improved and evaluations < max_evaluations:
        improved = False
        order = rng.permutation(len(keys))
        for b in order:  # move one block to another split
            for target in range(len(active)):
                if target == best[b] or evaluations >= max_evaluations:
                    continue
                trial = best.copy()
                trial[b] = target
                value = score.cost(trial)
                evaluations += 1
                if value < best_cost - 1e-12:
                    best, best_cost, improved = trial, value, True
                    moves += 1
        for position, b in enumerate(order):  # swap the splits of two blocks (counts kept)
            for other in order[position + 1 :]:
                if best[b] == best[other] or evaluations >= max_evaluations:
                    continue
                trial = best.copy()
                trial[b], trial[other] = best[other], best[b]
                value = score.cost(trial)
                evaluations += 1
                if value < best_cost - 1e-12:
                    best, best_cost, improved = trial, value, True
                    swaps += 1
    report = {
        "candidates": int(candidates),
        "plain_cost": round(float(plain_cost), 6),
        "cost": round(float(best_cost), 6),
        "single_block_moves": moves,
        "block_swaps": swaps,
        "evaluations": evaluations,
    }
    return {k: active[int(code)] for k, code in zip(keys, best, strict=True)}, report


def random_splits(chip_ids: pd.Series, fractions: Mapping[str, float], seed: int) -> np.ndarray:
    """Split per chip from a hash of (seed, chip id): uniform in [0, 1) vs cumulative fractions."""
    draws = np.array(
        [
            int.from_bytes(hashlib.blake2b(f"{seed}:{c}".encode(), digest_size=8).digest(), "big")
            / 2**64
            for c in chip_ids
        ]
    )
    edges = np.cumsum([float(fractions.get(s, 0.0)) for s in SPLITS])
    positions = np.minimum(np.searchsorted(edges, draws, side="right"), len(SPLITS) - 1)
    return np.asarray(SPLITS, dtype=object)[positions]


def near_held_out(chips: pd.DataFrame, splits: np.ndarray, buffer: int) -> np.ndarray:
    """Training chips to exclude: overlapping a val/test chip, or within the buffer of one.

    Gaps are measured between pixel footprints in pixels (Chebyshev: 0 = touching by an edge or a
    corner, negative = overlapping). A training chip is excluded when its gap to any val/test chip
    of the same CRS is at most ``(buffer - 1) x stride`` (buffer >= 1), or negative (buffer 0).
    Memory: a block of _CHUNK training chips x the val/test chips of a CRS.
    """
    excluded = np.zeros(len(chips), dtype=bool)
    crs_values = chips["crs"].to_numpy()
    for crs in np.unique(crs_values):
        in_crs = crs_values == crs
        train = np.flatnonzero(in_crs & (splits == "train"))
        held = np.flatnonzero(in_crs & np.isin(splits, ("val", "test")))
        if len(train) == 0 or len(held) == 0:
            continue
        part = chips.iloc[np.flatnonzero(in_crs)]
        res = float(np.max(pixel_size(part)))
        limit_px = (buffer - 1) * int(part["stride"].max()) if buffer >= 1 else -1
        bounds = chips[["minx", "miny", "maxx", "maxy"]].to_numpy(float)
        hx0, hy0, hx1, hy1 = (bounds[held, i][None, :] for i in range(4))
        for start in range(0, len(train), _CHUNK):
            rows = train[start : start + _CHUNK]
            tx0, ty0, tx1, ty1 = (bounds[rows, i][:, None] for i in range(4))
            gap_x = np.maximum(hx0 - tx1, tx0 - hx1)
            gap_y = np.maximum(hy0 - ty1, ty0 - hy1)
            gap_px = np.maximum(gap_x, gap_y) / res
            excluded[rows] = (gap_px <= limit_px + 0.5).any(axis=1)
    return excluded


def class_shares(chips: pd.DataFrame, classes: ClassTable) -> dict[str, float]:
    """Share of each class among the valid pixels of ``chips`` (class name -> 0..1)."""
    px = np.array([chips[f"px_{i}"].sum() for i in classes.indices], dtype=float)
    total = px.sum()
    return {
        name: float(value / total) if total else 0.0
        for name, value in zip(classes.names, px, strict=True)
    }


def split_chips(
    selected_path: str | Path,
    out_dir: str | Path,
    split_cfg: Mapping[str, Any],
    classes: ClassTable,
) -> dict[str, Any]:
    """Split the kept chips of ``selected.parquet``: split.parquet, footprints.gpkg, summary JSON.

    ``out_dir`` is ``results/splits/size{tile}/``. ``split.parquet`` holds the kept chips with
    ``split`` in train / val / test / excluded and their ``block``; ``footprints.gpkg`` every chip
    (kept or not) as a polygon in its CRS (one layer ``chips``, or one layer per CRS when scenes
    differ) with chip_id, scene, keep, drop_reason, split (``dropped`` for filtered chips),
    valid_fraction, dominant class; ``split_summary.json`` chip counts and class pixel shares per
    split, and warnings. Raises :class:`InputError` (writing nothing) when training or a requested
    validation split is empty.
    """
    out_dir = Path(out_dir)
    selected = read_chip_index(selected_path)
    needed = ["chip_id", "scene", "keep", "minx", "miny", "maxx", "maxy", "crs", "width", "stride"]
    missing = [c for c in needed if c not in selected.columns]
    if missing:
        raise InputError(
            f"{selected_path} lacks columns {missing}; expected selected.parquet of `s2lc filter`"
        )
    selected = selected.reset_index(drop=True)
    kept = selected[selected["keep"].astype(bool)].reset_index(drop=True)
    if kept.empty:
        raise InputError(f"{selected_path} has no kept chip; nothing to split")
    method = split_cfg["method"]
    fractions = dict(split_cfg["fractions"])
    seed = int(split_cfg["seed"])
    warnings: list[str] = []
    stratify_report: dict[str, Any] | None = None
    layout = assign_blocks(kept, int(split_cfg["block_size"]))
    kept["block"] = layout["block"].to_numpy()

    if method == "blocks":
        layout["crs"] = kept["crs"]
        blocks = (
            layout.groupby("block", sort=True)
            .agg(crs=("crs", "first"), block_row=("block_row", "first"),
                 block_col=("block_col", "first"), chips=("block", "size"))
            .reset_index()
        )  # fmt: skip
        buffer = int(split_cfg["buffer"])
        regions = int(split_cfg["regions"])
        if split_cfg["stratify"]:
            assignment, stratify_report = stratified_blocks_to_splits(
                blocks, kept, classes, fractions, seed, regions, buffer,
                int(split_cfg["stratify_candidates"]),
            )  # fmt: skip
            log.info("split: class-aware block layout %s", stratify_report)
        else:
            assignment = blocks_to_splits(blocks, fractions, seed, regions)
        splits = kept["block"].map(assignment).to_numpy(dtype=object)
    elif method == "random":
        splits = random_splits(kept["chip_id"], fractions, seed)
        buffer = 0
        warnings.append(
            "split.method is 'random': neighbouring chips land in different splits, so validation "
            "scores are optimistic (spatial autocorrelation); chips sharing pixels are still "
            "excluded"
        )
    elif method == "scene":
        splits = _scene_splits(kept, split_cfg["scenes"], warnings)
        buffer = None
    else:
        raise InputError(f"split.method = {method!r} is not known; choose blocks, random or scene")

    splits = np.asarray(splits, dtype=object)
    if buffer is not None:
        excluded = near_held_out(kept, splits, buffer)
        splits[excluded] = EXCLUDED
    kept["split"] = splits

    counts = {s: int((splits == s).sum()) for s in (*SPLITS, EXCLUDED)}
    if counts["train"] == 0:
        raise InputError(
            f"split ({method}) left no training chip out of {len(kept)} kept chips "
            f"(counts {counts}); "
            "use a smaller split.block_size or split.buffer, or more chips (smaller tile_size)"
        )
    if fractions.get("val", 0) > 0 and counts["val"] == 0:
        raise InputError(
            f"split ({method}) gave no validation chip out of {len(kept)} kept chips "
            f"({len(set(kept['block']))} blocks); use a smaller split.block_size or a smaller "
            "tile_size"
        )
    shares = {s: class_shares(kept[kept["split"] == s], classes) for s in (*SPLITS, EXCLUDED)}
    for held in ("val", "test"):
        if counts[held] == 0:
            continue
        absent = [
            name for name in classes.names if shares["train"][name] > 0 and shares[held][name] == 0
        ]
        if absent:
            warnings.append(
                f"class(es) {absent} present in training are absent from {held}: their {held} "
                "metrics"
                " will be undefined"
            )
    for message in rare_in_training(shares, counts, classes):
        warnings.append(message)
    if method == "blocks" and counts["train"]:
        lost = counts[EXCLUDED] / (counts["train"] + counts[EXCLUDED])
        if lost > 0.5:
            warnings.append(
                f"the buffer excluded {counts[EXCLUDED]} training chips ({lost:.0%}); a larger "
                "split.block_size keeps more of them"
            )
    for message in warnings:
        log.warning("split: %s", message)
    log.info("split (%s, seed %d): %s", method, seed, counts)
    for split in (*SPLITS, EXCLUDED):
        if counts[split]:
            log.info(
                "split: %s class pixel shares %s", split,
                ", ".join(f"{name} {share:.2%}" for name, share in shares[split].items()),
            )  # fmt: skip

    summary = {
        "method": method,
        "seed": seed,
        "fractions": fractions,
        "block_size": int(split_cfg["block_size"]),
        "buffer": buffer,
        "stratify": stratify_report,
        "chips": len(selected),
        "kept": len(kept),
        "counts": counts,
        "class_pixel_shares": shares,
        "scenes": {
            str(scene): {s: int((part["split"] == s).sum()) for s in (*SPLITS, EXCLUDED)}
            for scene, part in kept.groupby("scene", sort=True)
        },
        "warnings": warnings,
    }
    footprints = _footprint_table(selected, kept, classes)
    # split.parquet, the file training reads, is written last: each file is atomic, and a failure
    # on the way leaves no split table that looks complete beside missing footprints or summary.
    layers = write_footprints(
        footprints,
        out_dir / "footprints.gpkg",
        ["chip_id", "scene", "store_index", "row_off", "col_off", "keep", "drop_reason",
         "keep_reason", "split", "block", "valid_fraction", "dominant_class", "dominant_index"],
    )  # fmt: skip
    summary["footprint_layers"] = layers
    write_json(summary, out_dir / "split_summary.json")
    write_table(kept, out_dir / "split.parquet")
    return {"method": method, "counts": counts, "warnings": warnings, "out_dir": str(out_dir)}


def rare_in_training(
    shares: Mapping[str, Mapping[str, float]], counts: Mapping[str, int], classes: ClassTable,
    rare: float = 0.01,
) -> list[str]:  # fmt: skip
    """Warnings for classes absent or under ``rare`` (share of valid pixels) in training but
    present in val or test: the model can hardly learn what it is then judged on."""
    messages = []
    for name in classes.names:
        held = {
            s: shares[s][name] for s in ("val", "test") if counts.get(s, 0) and shares[s][name] > 0
        }
        train = shares["train"][name]
        if not held or train >= rare:
            continue
        where = ", ".join(f"{s} {v:.2%}" for s, v in held.items())
        state = "absent from training" if train == 0 else f"rare in training ({train:.2%})"
        messages.append(
            f"class {name!r} is {state} but present in {where} of the valid pixels: the model "
            "can hardly learn it; keep split.stratify true, raise filter.water_only_keep_fraction "
            "for water, or add scenes with more of it"
        )
    return messages


def _scene_splits(kept: pd.DataFrame, scenes: Mapping[str, Any], warnings: list[str]) -> np.ndarray:
    owner: dict[str, str] = {}
    for split in SPLITS:
        for name in scenes.get(split, []) or []:
            if name in owner and owner[name] != split:
                raise InputError(
                    f"split.scenes lists scene {name!r} in both {owner[name]} and {split}; "
                    "give each scene one split"
                )
            owner[name] = split
    unlisted = sorted(set(kept["scene"]) - set(owner))
    if unlisted:
        warnings.append(
            f"scenes {unlisted} are in no list of split.scenes: their chips are excluded"
        )
    return kept["scene"].map(lambda s: owner.get(s, EXCLUDED)).to_numpy(dtype=object)


def _footprint_table(
    selected: pd.DataFrame, kept: pd.DataFrame, classes: ClassTable
) -> pd.DataFrame:
    table = selected.copy()
    by_id = kept.set_index("chip_id")
    table["split"] = table["chip_id"].map(by_id["split"]).fillna(DROPPED).astype(str)
    table["block"] = table["chip_id"].map(by_id["block"]).fillna("").astype(str)
    for column in ("drop_reason", "keep_reason"):
        if column not in table.columns:
            table[column] = ""
        table[column] = table[column].fillna("").astype(str)
    px = table[[f"px_{i}" for i in classes.indices]].to_numpy()
    dominant = px.argmax(axis=1) + 1
    has_valid = px.sum(axis=1) > 0
    names = np.asarray(["no data", *classes.names], dtype=object)
    table["dominant_index"] = np.where(has_valid, dominant, 0)
    table["dominant_class"] = names[table["dominant_index"].to_numpy()]
    table["keep"] = table["keep"].astype(bool)
    return table
