"""The prepared GPU benchmark: network, whole-scene prediction and training throughput in one run.

One script, sized to finish in under 8 minutes on one H200, that writes its table to ``--out``:

- ``network``: a resnet34 U-Net forward pass alone on batches of windows already on the device
  (bf16 autocast and channels-last on CUDA), megapixels per second: the ceiling prediction can
  reach;
- ``predict_scene``: :func:`s2landcover.predict.predict_scene_with_model` end to end (read,
  normalise, infer, blend, write the COG) on a synthetic ``--size`` x ``--size`` tile (10,980 px:
  a full Sentinel-2 tile at 10 m) with 4 and with 10 bands, seconds per tile and Mpx/s;
- ``train``: training steps of the same U-Net (AdamW, bf16 autocast on CUDA) fed by a DataLoader
  with ``--workers`` processes over a synthetic chip store, chips per second.

On a machine without CUDA it runs the same cases on the CPU; ``--smoke`` shrinks every size so that
the whole script runs in seconds (the test suite runs it that way, so the script cannot rot
between GPU sessions).

    python benchmarks/bench_gpu.py --out docs/benchmarks/gpu.md              # on the GPU host
    python benchmarks/bench_gpu.py --smoke --out /tmp/gpu_smoke.md           # anywhere
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).parent))
from bench_predict import scene_blocks
from bench_training import make_store

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch

BANDS_10 = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
SCALE, OFFSET = 1e-4, -0.1
NUM_CLASSES = 6


def write_tile(path: Path, size: int, bands: list[str], block_rows: int = 1024) -> None:
    """A synthetic scene stack, ``size`` x ``size`` px at 10 m (UTM 31N), per the stack contract
    (the pixels of :func:`bench_predict.scene_blocks`, a no-data strip on the left)."""
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": len(bands), "dtype": "uint16",
        "nodata": 0, "crs": "EPSG:32631", "transform": Affine(10, 0, 399960, 0, -10, 4600020),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "zlevel": 1,
        "predictor": 2, "bigtiff": "IF_SAFER", "num_threads": "ALL_CPUS",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for top, block in scene_blocks(size, size, block_rows, len(bands)):
            dst.write(block, window=Window(0, top, size, block.shape[1]))
        dst.descriptions = tuple(bands)
        dst.scales = (SCALE,) * len(bands)
        dst.offsets = (OFFSET,) * len(bands)


def metadata(bands: list[str], tile: int) -> dict:
    """Checkpoint metadata of a U-Net over ``bands`` (what predict_scene needs besides weights)."""
    return {
        "task": "segmentation", "architecture": "Unet", "encoder": "resnet34", "bands": bands,
        "scales": [SCALE] * len(bands), "offsets": [OFFSET] * len(bands),
        "mean": [0.08] * len(bands), "std": [0.05] * len(bands),
        "classes": {
            "names": [f"class {i + 1}" for i in range(NUM_CLASSES)],
            "colors": ["#1b6e2a", "#a6d96a", "#f2d16b", "#d7301f", "#b3a58c", "#2171b5"],
            "codes": [[i + 1] for i in range(NUM_CLASSES)], "water": [False] * NUM_CLASSES,
        },
        "tile_size": tile, "resolution": 10.0,
    }  # fmt: skip


def synchronize(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_network(
    device: torch.device, window: int, batch: int, bands: int, seconds: float
) -> dict:
    import torch

    from s2landcover.models import build_segmentation_model
    from s2landcover.predict import autocast_dtype

    model = build_segmentation_model("Unet", "resnet34", bands, NUM_CLASSES).eval().to(device)
    amp = autocast_dtype(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, bands, window, window, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        model(x)  # warm-up (cuDNN autotuning, allocations)
        synchronize(device)
        started, runs = time.perf_counter(), 0
        while runs < 2 or time.perf_counter() - started < seconds:
            model(x)
            runs += 1
        synchronize(device)
        elapsed = time.perf_counter() - started
    return {"mpx_s": runs * batch * window * window / elapsed / 1e6, "runs": runs}


def bench_predict(device: torch.device, size: int, bands: list[str], workdir: Path) -> dict:
    import torch

    from s2landcover.cli import prediction_process_settings
    from s2landcover.models import build_segmentation_model
    from s2landcover.predict import predict_scene_with_model

    scene = workdir / f"tile_{len(bands)}b.tif"
    if not scene.exists():
        write_tile(scene, size, bands)
    torch.manual_seed(0)
    model = build_segmentation_model("Unet", "resnet34", len(bands), NUM_CLASSES).eval()
    from s2landcover.config import validate_config

    cfg = validate_config({})["prediction"]  # the defaults: batch_size auto
    out = workdir / f"pred_{len(bands)}b.tif"
    threads = torch.get_num_threads()
    # the process settings of `s2lc predict` on CUDA (torch's CPU threads: 1); on a CPU (the
    # smoke test, inside the test process) the threads only
    if device.type == "cuda":
        prediction_process_settings(threads, device.type)
    started = time.perf_counter()
    try:
        summary = predict_scene_with_model(
            model, metadata(bands, 300), scene, out, cfg, device=str(device), progress=False
        )
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "mpx_s": size * size / seconds / 1e6,
        "windows": summary["windows"],
        "batch_size": summary["batch_size"],
        "normalised_on": summary["normalised_on"],
    }


def bench_train(
    device: torch.device, workdir: Path, tile: int, chips: int, batch: int, workers: int, steps: int
) -> dict:
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader

    from s2landcover.io.chipstore import ChipStore
    from s2landcover.models import build_segmentation_model
    from s2landcover.training.data import AugmentSettings, ChipDataset, SceneInput

    store_dir = workdir / "store"
    if not store_dir.exists():
        make_store(store_dir, chips, tile, 4)
    store = ChipStore(store_dir)
    table = pd.DataFrame({"scene": "bench", "store_index": np.arange(len(store))})
    dataset = ChipDataset(
        table, {"bench": SceneInput.from_meta(store_dir, store.meta)}, [0.1] * 4, [0.05] * 4,
        AugmentSettings(True, True, 0.0),
    )  # fmt: skip
    loader = DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )  # fmt: skip
    model = build_segmentation_model("Unet", "resnet34", 4, NUM_CLASSES).to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    amp = torch.bfloat16 if device.type == "cuda" else None
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-1)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from loader

    stream = batches()
    done, started = 0, 0.0
    for step in range(steps + 1):  # step 0 warms up
        if step == 1:
            synchronize(device)
            started = time.perf_counter()
        images, targets = next(stream)
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)  # class index - 1, -1 ignored
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = loss_fn(model(images).float(), targets)
        loss.backward()
        optimizer.step()
        done += len(images) if step else 0
    synchronize(device)
    return {"chips_s": done / (time.perf_counter() - started)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Markdown table written here")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds, on any device")
    parser.add_argument("--size", type=int, default=10980, help="tile side in px")
    parser.add_argument("--device", default=None, help="cuda, cpu (default: cuda when present)")
    args = parser.parse_args(argv)

    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = 256 if args.smoke else args.size
    window, net_batch, net_seconds = (64, 2, 0.0) if args.smoke else (1024, 16, 10.0)
    tile, chips, train_batch, workers, steps = (
        (32, 8, 4, 0, 1) if args.smoke else (256, 512, 64, 8, 40)
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for bands in (4, 10):
            result = bench_network(device, window, net_batch, bands, net_seconds)
            rows.append(
                (f"network only, resnet34 U-Net, {bands} bands, {net_batch} x {window}²",
                 f"{result['mpx_s']:.3g} Mpx/s")
            )  # fmt: skip
        for bands in (BANDS_10[:4], BANDS_10):
            result = bench_predict(device, size, bands, workdir)
            rows.append(
                (f"predict_scene {size}² tile, {len(bands)} bands (read to COG)",
                 f"{result['seconds']:.2f} s, {result['mpx_s']:.3g} Mpx/s, "
                 f"{result['windows']} windows, batch {result['batch_size']} (auto), "
                 f"normalised on the {result['normalised_on']}")
            )  # fmt: skip
        result = bench_train(device, workdir, tile, chips, train_batch, workers, steps)
        rows.append(
            (f"training resnet34 U-Net, {tile}² chips, batch {train_batch}, {workers} workers",
             f"{result['chips_s']:.3g} chips/s")
        )  # fmt: skip
    lines = [
        f"GPU benchmark ({'smoke' if args.smoke else 'full'}), "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, device {device} ({name}), "
        f"torch {torch.__version__}, command: `python benchmarks/bench_gpu.py"
        f"{' --smoke' if args.smoke else ''} --out {args.out}`",
        "",
        "| case | result |",
        "|---|---|",
        *(f"| {case} | {value} |" for case, value in rows),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
