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
from s2landcover.io.chipstore import read_chip_index, write_footprints, write_json, write_table

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
    method = split_cfg.get("method", "blocks")
    fractions = dict(split_cfg.get("fractions") or {"train": 0.8, "val": 0.2, "test": 0.0})
    seed = int(split_cfg.get("seed", 42))
    warnings: list[str] = []
    layout = assign_blocks(kept, int(split_cfg.get("block_size", 2)))
    kept["block"] = layout["block"].to_numpy()

    if method == "blocks":
        layout["crs"] = kept["crs"]
        blocks = (
            layout.groupby("block", sort=True)
            .agg(crs=("crs", "first"), block_row=("block_row", "first"),
                 block_col=("block_col", "first"), chips=("block", "size"))
            .reset_index()
        )  # fmt: skip
        assignment = blocks_to_splits(blocks, fractions, seed, int(split_cfg.get("regions", 5)))
        splits = kept["block"].map(assignment).to_numpy(dtype=object)
        buffer = int(split_cfg.get("buffer", 1))
    elif method == "random":
        splits = random_splits(kept["chip_id"], fractions, seed)
        buffer = 0
        warnings.append(
            "split.method is 'random': neighbouring chips land in different splits, so validation "
            "scores are optimistic (spatial autocorrelation); chips sharing pixels are still "
            "excluded"
        )
    elif method == "scene":
        splits = _scene_splits(kept, split_cfg.get("scenes") or {}, warnings)
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

    summary = {
        "method": method,
        "seed": seed,
        "fractions": fractions,
        "block_size": int(split_cfg.get("block_size", 2)),
        "buffer": buffer,
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
        ["chip_id", "scene", "store_index", "row_off", "col_off", "keep", "drop_reason", "split",
         "block", "valid_fraction", "dominant_class", "dominant_index"],
    )  # fmt: skip
    summary["footprint_layers"] = layers
    write_json(summary, out_dir / "split_summary.json")
    write_table(kept, out_dir / "split.parquet")
    return {"method": method, "counts": counts, "warnings": warnings, "out_dir": str(out_dir)}


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
    if "drop_reason" not in table.columns:
        table["drop_reason"] = ""
    px = table[[f"px_{i}" for i in classes.indices]].to_numpy()
    dominant = px.argmax(axis=1) + 1
    has_valid = px.sum(axis=1) > 0
    names = np.asarray(["no data", *classes.names], dtype=object)
    table["dominant_index"] = np.where(has_valid, dominant, 0)
    table["dominant_class"] = names[table["dominant_index"].to_numpy()]
    table["keep"] = table["keep"].astype(bool)
    return table
