"""A chip store written by hand per the contract (README, io/chipstore.py), for the tests of the
stages that read chip stores (training, classification) without running tiling first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from affine import Affine

BANDS = ["B02", "B03", "B04", "B08"]
SCALE, OFFSET = 1e-4, -0.1
# Three classes for the chip tests, with a reflectance per class and band (B02, B03, B04, B08):
# separable, so that a few training steps already learn something.
CLASSES = [
    {"index": 1, "name": "Forest", "codes": [10], "color": "#1b6e2a"},
    {"index": 2, "name": "Bare soil", "codes": [60], "color": "#b3a58c"},
    {"index": 3, "name": "Water", "codes": [80], "color": "#2171b5", "water": True},
]
CLASS_REFLECTANCE = np.array(
    [[0.03, 0.05, 0.03, 0.30], [0.15, 0.18, 0.20, 0.25], [0.05, 0.04, 0.02, 0.01]]
)
# UTM 31N, 10 m pixels: the scene grid the chips are cut from.
SCENE_TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0)


def write_chip_store(
    chip_dir: Path,
    scene: str,
    images: np.ndarray,
    masks: np.ndarray,
    num_classes: int,
    per_row: int = 4,
    bands: list[str] = BANDS,
    scales: list[float] | None = None,
    offsets: list[float] | None = None,
) -> None:
    """Write images (N, C, T, T) uint16 and masks (N, T, T) uint8 as the chip store of ``scene``:
    chips laid out row-major, ``per_row`` to a row, stride = T, on :data:`SCENE_TRANSFORM`; bands
    named ``bands`` with their scale/offset (default :data:`SCALE` / :data:`OFFSET` for all)."""
    chip_dir.mkdir(parents=True)
    np.save(chip_dir / "images.npy", images)
    np.save(chip_dir / "masks.npy", masks)
    count, _, size, _ = images.shape
    rows = []
    for i in range(count):
        row_off, col_off = (i // per_row) * size, (i % per_row) * size
        counts = np.bincount(masks[i].ravel(), minlength=num_classes + 1)
        minx, maxy = SCENE_TRANSFORM @ (col_off, row_off)
        maxx, miny = SCENE_TRANSFORM @ (col_off + size, row_off + size)
        rows.append(
            {
                "chip_id": f"{scene}_r{row_off}_c{col_off}",
                "scene": scene,
                "store_index": i,
                "row_off": row_off,
                "col_off": col_off,
                "height": size,
                "width": size,
                "stride": size,
                "minx": minx,
                "miny": miny,
                "maxx": maxx,
                "maxy": maxy,
                "crs": "EPSG:32631",
                "valid_fraction": 1 - counts[0] / size**2,
                "nodata_fraction": counts[0] / size**2,
                "image_nodata_fraction": 0.0,
                **{f"px_{k}": int(c) for k, c in enumerate(counts)},
            }
        )
    pd.DataFrame(rows).to_parquet(chip_dir / "index.parquet")
    meta = {
        "scene": scene,
        "bands": list(bands),
        "scales": list(scales or [SCALE] * len(bands)),
        "offsets": list(offsets or [OFFSET] * len(bands)),
        "nodata": 0,
        "crs": "EPSG:32631",
        "transform": list(SCENE_TRANSFORM)[:6],
        "width": size * per_row,
        "height": size * -(-count // per_row),
        "tile_size": size,
        "stride": size,
        "edge": "shift",
    }
    (chip_dir / "meta.json").write_text(json.dumps(meta))


def class_block_chips(n: int, chip: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` chips of ``chip`` px: masks of 4 x 4 blocks of random classes and stored uint16 images
    of those classes' reflectance plus 1 % noise (``images`` (n, 4, chip, chip), ``masks``)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, chip, chip), dtype=np.uint8)
    for i in range(n):
        blocks = rng.integers(1, len(CLASSES) + 1, size=(4, 4))
        masks[i] = np.kron(blocks, np.ones((chip // 4, chip // 4), dtype=np.uint8))
    reflectance = CLASS_REFLECTANCE[masks - 1].transpose(0, 3, 1, 2) + rng.normal(
        0, 0.01, (n, 4, chip, chip)
    )
    images = np.clip((reflectance - OFFSET) / SCALE, 1, 65535).astype(np.uint16)
    return images, masks


def write_split(path: Path, scene: str, n_train: int, n_val: int) -> pd.DataFrame:
    """A split table of one scene's chips c0..: the first ``n_train`` train, the rest val."""
    n = n_train + n_val
    split = pd.DataFrame(
        {
            "chip_id": [f"c{i}" for i in range(n)],
            "scene": scene,
            "store_index": np.arange(n),
            "split": ["train"] * n_train + ["val"] * n_val,
        }
    )
    split.to_parquet(path)
    return split
