"""Measure: does a training killed with SIGKILL and run again equal the uninterrupted one?

Writes a tiny chip store (16 chips of 64 x 64 px, 4 bands, 3 classes), then runs ``s2lc train``
(CPU, 4 epochs, one-cycle schedule, augmentation on, 2 loader workers) twice into two folders:
once uninterrupted, once killed with SIGKILL in the middle of epoch 3 (as soon as ``last.ckpt``
holds 2 epochs, then after a short delay) and started again with the same command. Prints the
SHA-256 of each model's weights and of each ``metrics.csv`` and whether they are equal.

    PYTHONPATH=src python docs/benchmarks/resume_equality.py [work_dir [delay_s]]

``delay_s`` (default 0.5): seconds between seeing epoch 2 in ``last.ckpt`` and the kill.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from chip_store_helpers import (
    BANDS,
    CLASS_REFLECTANCE,
    CLASSES,
    OFFSET,
    SCALE,
    write_chip_store,
)
from s2landcover.io.checkpoints import load_model_checkpoint, weights_sha256
from s2landcover.training.digests import file_sha256

CHIP, N = 64, 16


def write_inputs(root: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    masks = np.kron(
        rng.integers(1, 4, size=(N, 4, 4)), np.ones((CHIP // 4, CHIP // 4), dtype=np.int64)
    ).astype(np.uint8)
    reflectance = CLASS_REFLECTANCE[masks - 1].transpose(0, 3, 1, 2) + rng.normal(
        0, 0.02, (N, 4, CHIP, CHIP)
    )
    images = np.clip((reflectance - OFFSET) / SCALE, 1, 65535).astype(np.uint16)
    chips_root = root / "chips" / f"size{CHIP}"
    write_chip_store(chips_root / "sceneA", "sceneA", images, masks, len(CLASSES))
    split = root / "split.parquet"
    pd.DataFrame(
        {
            "chip_id": [f"c{i}" for i in range(N)],
            "scene": "sceneA",
            "store_index": np.arange(N),
            "split": ["train"] * 12 + ["val"] * 4,
        }
    ).to_parquet(split)
    config = {
        "bands": BANDS,
        "classes": CLASSES,
        "tile_size": CHIP,
        "model": {"name": "tiny", "architecture": "Unet", "encoder": "resnet18"},
        "training": {
            "epochs": 4,
            "batch_size": 4,
            "num_workers": 2,
            "checkpoint_interval_s": 0,
            "scheduler": "onecycle",
            "learning_rate": 0.01,
            "accelerator": "cpu",
            "augment": {"flips": True, "rotate90": True, "brightness_contrast": 0.1},
        },
    }
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return config_path, split, chips_root


def command(config: Path, split: Path, chips_root: Path, out: Path) -> list[str]:
    s2lc = str(Path(sys.executable).parent / "s2lc")
    return [s2lc, "train", "--config", str(config), "--split", str(split),
            "--chips-root", str(chips_root), "--out-dir", str(out)]  # fmt: skip


def epochs_in_state(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epochs_completed"])
    except Exception:  # not there yet, or being replaced
        return 0


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="resume-"))
    config, split, chips_root = write_inputs(root)
    whole, killed = root / "whole", root / "killed"
    start = time.monotonic()
    subprocess.run(command(config, split, chips_root, whole), check=True, capture_output=True)
    print(f"uninterrupted: {time.monotonic() - start:.1f} s")

    process = subprocess.Popen(
        command(config, split, chips_root, killed),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while epochs_in_state(killed / "last.ckpt") < 2:
        if process.poll() is not None:
            raise SystemExit("training ended before it could be killed")
        time.sleep(0.05)
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0.5)  # into epoch 3
    process.send_signal(signal.SIGKILL)
    process.wait()
    metrics = killed / "metrics.csv"
    rows = len(pd.read_csv(metrics)) if metrics.exists() else 0
    print(f"killed (SIGKILL) with last.ckpt at epoch 2; metrics rows so far: {rows}")
    for name in ("metrics.csv", "curves.png", "model.pt"):  # what Snakemake removes
        (killed / name).unlink(missing_ok=True)
    resumed = subprocess.run(
        command(config, split, chips_root, killed), check=True, capture_output=True, text=True
    )
    summary = json.loads(resumed.stderr.split("train summary: ", 1)[1].splitlines()[0])
    print(f"resumed from {summary['resumed_from']}, epochs {summary['epochs_completed']}")

    result = {}
    for name, folder in (("uninterrupted", whole), ("killed+resumed", killed)):
        state, _ = load_model_checkpoint(folder / "model.pt")
        result[name] = (weights_sha256(state), file_sha256(folder / "metrics.csv"))
        print(f"{name:>15}: weights {result[name][0][:16]}  metrics.csv {result[name][1][:16]}  "
              f"files {sorted(p.name for p in folder.iterdir())}")  # fmt: skip
    a, b = result.values()
    print(f"weights equal: {a[0] == b[0]}; metrics.csv equal: {a[1] == b[1]}")


if __name__ == "__main__":
    main()
