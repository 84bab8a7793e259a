"""Agreement of a U-Net trained on the real Aberystwyth scene with its 4-class classifier map.

The scene (``aber_s2_10band_10m.tif``, 10 bands, reflectance x 1000, EPSG:27700, 930 x 947 px) is
copied into a scene stack per the contract (uint16, nodata 0, GDAL scale 0.001, band names), the
class map ``aber_cls_4class.tif`` (1 Forest, 2 Grass, 3 Urban, 4 Water; same grid) is the mask. Then
the package's own stages run: ``tile_scene`` -> ``filter_chips`` -> ``split_chips`` (spatial blocks
with a buffer: train / val / test) -> ``train_model``. The map is a classifier's output, not a
reference, so the figures are *agreement* with it: mIoU on the validation blocks (which chose the
best epoch) and on the test blocks (never seen during training or model selection).

    python benchmarks/train_aberystwyth.py --tile 64 --epochs 30 --out /tmp/aber
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import torch

from s2landcover.chips import filter_chips, tile_scene
from s2landcover.classes import ClassTable
from s2landcover.config import validate_config
from s2landcover.io.checkpoints import load_model_checkpoint
from s2landcover.io.chipstore import ChipStore, read_chip_index
from s2landcover.models import build_segmentation_model
from s2landcover.split import split_chips
from s2landcover.training.data import ChipDataset, SceneInput
from s2landcover.training.module import epoch_metrics
from s2landcover.training.train import train_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "aberystwyth"
BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
CLASSES = [
    {"index": 1, "name": "Forest", "codes": [1], "color": "#1b6e2a"},
    {"index": 2, "name": "Grass", "codes": [2], "color": "#a6d96a"},
    {"index": 3, "name": "Urban", "codes": [3], "color": "#d7301f"},
    {"index": 4, "name": "Water", "codes": [4], "color": "#2171b5", "water": True},
]


def write_scene_stack(source: Path, out: Path) -> None:
    """The x1000 scene as a contract scene stack: scale 0.001, offset 0, nodata 0, band names."""
    with rasterio.open(source) as src:
        profile = src.profile | {"nodata": 0, "tiled": True, "blockxsize": 256, "blockysize": 256,
                                 "compress": "deflate"}  # fmt: skip
        data = src.read()
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
        dst.scales = [0.001] * len(BANDS)
        dst.offsets = [0.0] * len(BANDS)
        dst.descriptions = tuple(BANDS)


def evaluate_chips(model_path: Path, split: pd.DataFrame, chips_root: Path, which: str) -> dict:
    """mIoU and per-class IoU of model.pt on the chips of one split (no data excluded)."""
    state, meta = load_model_checkpoint(model_path)
    model = build_segmentation_model(meta["architecture"], meta["encoder"], len(meta["bands"]), 4)
    model.load_state_dict(state)
    model.eval()
    chips = split[split["split"] == which].reset_index(drop=True)
    scenes = {
        s: SceneInput.from_meta(chips_root / s, ChipStore(chips_root / s).meta)
        for s in chips["scene"].unique()
    }
    dataset = ChipDataset(chips, scenes, meta["mean"], meta["std"])
    confusion = np.zeros((4, 4), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, len(dataset), 16):
            items = [dataset[i] for i in range(start, min(start + 16, len(dataset)))]
            images = torch.stack([i[0] for i in items])
            targets = torch.stack([i[1] for i in items]).numpy()
            predicted = model(images).argmax(1).numpy()
            valid = targets >= 0
            confusion += np.bincount(targets[valid] * 4 + predicted[valid], minlength=16).reshape(
                4, 4
            )
    metrics = epoch_metrics(confusion, [c["name"] for c in CLASSES])
    metrics["chips"] = len(chips)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/aber_training", help="work folder (created)")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--block", type=int, default=3, help="split block side in chips")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is absent")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = validate_config(
        {
            "bands": BANDS,
            "classes": CLASSES,
            "tile_size": args.tile,
            "split": {"method": "blocks", "block_size": args.block, "buffer": 1, "seed": 7,
                      "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}},
            "model": {"name": f"unet-{args.encoder}", "architecture": "Unet",
                      "encoder": args.encoder},
            "training": {"epochs": args.epochs, "batch_size": args.batch, "learning_rate": args.lr,
                         "num_workers": args.workers, "scheduler": "onecycle"},
        }
    )  # fmt: skip
    classes = ClassTable.from_config(config["classes"])
    started = time.perf_counter()
    scene = out / "aber.tif"
    if not scene.exists():
        write_scene_stack(DATA / "aber_s2_10band_10m.tif", scene)
    chips_root = out / f"chips/size{args.tile}"
    if not (chips_root / "aber").exists():
        tile_scene(scene, DATA / "aber_cls_4class.tif", "aber", chips_root / "aber", args.tile,
                   config["chips"], classes)  # fmt: skip
        filter_chips([chips_root / "aber" / "index.parquet"], chips_root / "selected.parquet",
                     config["filter"], classes)  # fmt: skip
    split_dir = out / f"splits/size{args.tile}"
    if not (split_dir / "split.parquet").exists():
        split_chips(chips_root / "selected.parquet", split_dir, config["split"], classes)
    split = read_chip_index(split_dir / "split.parquet")
    prepared = time.perf_counter()
    model_dir = out / f"models/size{args.tile}/{config['model']['name']}"
    summary = train_model(
        split_dir / "split.parquet", chips_root, model_dir, config, progress=False
    )
    trained = time.perf_counter()
    val = evaluate_chips(model_dir / "model.pt", split, chips_root, "val")
    test = evaluate_chips(model_dir / "model.pt", split, chips_root, "test")
    counts = split["split"].value_counts().to_dict()
    print(f"Aberystwyth, tile {args.tile}, U-Net {args.encoder}, {args.epochs} epochs, batch "
          f"{args.batch}; chips {json.dumps(counts)}; preparation {prepared - started:.0f} s, "
          f"training {trained - prepared:.0f} s, best epoch {summary['best_epoch']}\n")  # fmt: skip
    print("| blocks | chips | agreement mIoU | accuracy | " + " | ".join(
        f"IoU {c['name']}" for c in CLASSES) + " |")  # fmt: skip
    print("|---|---:|---:|---:|" + "---:|" * len(CLASSES))
    for name, metrics in (("validation", val), ("test (held out)", test)):
        per_class = " | ".join(f"{metrics['iou_' + c['name']]:.3f}" for c in CLASSES)
        print(f"| {name} | {metrics['chips']} | {metrics['miou']:.3f} | "
              f"{metrics['accuracy']:.3f} | {per_class} |")  # fmt: skip


if __name__ == "__main__":
    main()
