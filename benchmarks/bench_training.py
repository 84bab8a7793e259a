"""Training speed: chips/s of the training step per encoder, and of the data loader alone.

Builds a synthetic chip store (4 bands, uint16, tile x tile chips, 6 classes) in a temporary folder,
then, each case in its own subprocess (so peak memory is that case's alone):

- ``loader``: the training ChipDataset (reflectance, normalisation, flips/rotations, padding to a
  multiple of 32) through a DataLoader with ``--workers`` processes, batches of ``--batch``;
- ``train <encoder>``: forward + backward + AdamW step of a U-Net (LandCoverModule, the module
  train_model uses) on batches of ``--batch`` padded chips, after one warm-up step;
- with ``--cuda``: the same on the GPU with bf16 autocast and channels-last.

Prints a Markdown table (chips/s, seconds per batch, peak RSS of the case's process)::

    python benchmarks/bench_training.py --tile 300 --batch 8 --steps 3 --encoders resnet18 resnet34
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CLASSES = ["Forest", "Grassland", "Cropland", "Built-up", "Bare soil", "Water"]


def make_store(folder: Path, chips: int, tile: int, bands: int) -> None:
    """A chip store per the contract with random blocky masks and class-dependent reflectance."""
    from s2landcover.io.chipstore import ChipStoreWriter

    rng = np.random.default_rng(0)
    writer = ChipStoreWriter(folder, chips, bands, tile)
    rows = []
    for i in range(chips):
        blocks = rng.integers(1, len(CLASSES) + 1, size=(6, 6))
        mask = np.kron(blocks, np.ones((tile // 6 + 1, tile // 6 + 1), dtype=np.uint8))[
            :tile, :tile
        ]
        image = (1000 + 300 * mask[None] + rng.integers(0, 400, (bands, tile, tile))).astype(
            np.uint16
        )
        writer.write(i, image[None], mask[None])
        counts = np.bincount(mask.ravel(), minlength=len(CLASSES) + 1)
        rows.append(
            {"chip_id": f"bench_{i}", "scene": "bench", "store_index": i, "row_off": 0,
             "col_off": i * tile, **{f"px_{k}": int(c) for k, c in enumerate(counts)}}
        )  # fmt: skip
    meta = {
        "scene": "bench", "bands": [f"B{b:02d}" for b in range(bands)], "scales": [1e-4] * bands,
        "offsets": [-0.1] * bands, "nodata": 0, "crs": "EPSG:32631",
        "transform": [10.0, 0.0, 0.0, 0.0, -10.0, 0.0], "width": tile * chips, "height": tile,
        "tile_size": tile, "stride": tile,
    }  # fmt: skip
    writer.finish(pd.DataFrame(rows), meta)


def dataset(folder: Path, augment: bool):  # type: ignore[no-untyped-def]
    from s2landcover.io.chipstore import ChipStore
    from s2landcover.training.data import AugmentSettings, ChipDataset, SceneInput

    store = ChipStore(folder)
    chips = pd.DataFrame({"scene": "bench", "store_index": np.arange(len(store))})
    scene = SceneInput.from_meta(folder, store.meta)
    bands = len(store.meta["bands"])
    settings = AugmentSettings(True, True, 0.0) if augment else None
    return ChipDataset(chips, {"bench": scene}, [0.1] * bands, [0.05] * bands, settings)


def run_loader(folder: Path, batch: int, workers: int, epochs: int) -> dict:
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset(folder, True), batch_size=batch, shuffle=True, num_workers=workers,
        persistent_workers=workers > 0,
    )  # fmt: skip
    next(iter(loader))  # start the workers
    started, chips = time.perf_counter(), 0
    for _ in range(epochs):
        for images, _target in loader:
            chips += len(images)
    seconds = time.perf_counter() - started
    return {"chips_per_s": chips / seconds, "s_per_batch": seconds / (chips / batch)}


def run_train(folder: Path, encoder: str, batch: int, steps: int, cuda: bool) -> dict:
    import torch

    from s2landcover.config import validate_config
    from s2landcover.training.module import LandCoverModule
    from s2landcover.training.tasks import SegmentationTask

    config = validate_config({"model": {"encoder": encoder}})
    data = dataset(folder, True)
    device = torch.device("cuda" if cuda else "cpu")
    module = LandCoverModule(
        SegmentationTask(), config["model"], config["training"], len(data.mean), CLASSES,
        channels_last=cuda,
    ).to(device)  # fmt: skip
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    samples = [data[i % len(data)] for i in range(batch)]
    images = torch.stack([s[0] for s in samples]).to(device)
    targets = torch.stack([s[1] for s in samples]).to(device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cuda
        else torch.autocast("cpu", enabled=False)
    )

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = module.loss(module(images), targets)
        loss.backward()
        optimizer.step()

    step()  # warm-up (allocations, cuDNN autotuning)
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    result = {"chips_per_s": steps * batch / seconds, "s_per_batch": seconds / steps,
              "threads": torch.get_num_threads()}  # fmt: skip
    if cuda:
        result["gpu"] = torch.cuda.get_device_name()
    return result


def case_main(args: argparse.Namespace) -> None:
    folder = Path(args.store)
    if args.case == "loader":
        result = run_loader(folder, args.batch, args.workers, args.loader_epochs)
    else:
        result = run_train(folder, args.case, args.batch, args.steps, args.cuda)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run_case(store: Path, case: str, args: argparse.Namespace, cuda: bool = False) -> dict:
    command = [sys.executable, __file__, "--store", str(store), "--case", case, "--batch",
               str(args.batch), "--steps", str(args.steps), "--workers", str(args.workers),
               "--loader-epochs", str(args.loader_epochs)]  # fmt: skip
    if cuda:
        command.append("--cuda")
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    # Children's peak: covers loader worker processes too.
    result["peak_rss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tile", type=int, default=300, help="chip side in pixels (padded to x32)")
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--chips", type=int, default=64, help="chips in the synthetic store")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per encoder")
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes")
    parser.add_argument("--loader-epochs", type=int, default=2)
    parser.add_argument("--encoders", nargs="+", default=["resnet18", "resnet34"])
    parser.add_argument("--cuda", action="store_true", help="also time training on the GPU (bf16)")
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        case_main(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench"
        make_store(store, args.chips, args.tile, args.bands)
        padded = -(-args.tile // 32) * 32
        print(f"Chips {args.tile} x {args.tile} px (padded to {padded}), {args.bands} bands, "
              f"batch {args.batch}; {platform.processor() or platform.machine()}, "
              f"python {platform.python_version()}\n")  # fmt: skip
        print("| case | device | chips/s | s/batch | peak RSS (MB) |")
        print("|---|---|---:|---:|---:|")
        loader = run_case(store, "loader", args)
        print(f"| loader ({args.workers} workers, augment + pad) | cpu | "
              f"{loader['chips_per_s']:.1f} | {loader['s_per_batch']:.3f} | "
              f"{loader['peak_rss_mb']:.0f} |")  # fmt: skip
        for encoder in args.encoders:
            result = run_case(store, encoder, args)
            print(f"| train U-Net {encoder} (fp32, {result['threads']} threads) | cpu | "
                  f"{result['chips_per_s']:.2f} | {result['s_per_batch']:.2f} | "
                  f"{result['peak_rss_mb']:.0f} |")  # fmt: skip
            if args.cuda:
                result = run_case(store, encoder, args, cuda=True)
                print(f"| train U-Net {encoder} (bf16, channels-last) | {result['gpu']} | "
                      f"{result['chips_per_s']:.1f} | {result['s_per_batch']:.3f} | "
                      f"{result['peak_rss_mb']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
