"""Benchmark of the evaluation stage: windowed metrics over a full-size scene, and the whole stage.

Builds (strip by strip, tiled 512, DEFLATE + predictor) a synthetic SIZE x SIZE 4-band uint16 scene
(GDAL scale 1e-4, offset -0.1, with overviews), its uint8 mask, a prediction that agrees with it
on about 85 % of the pixels, and a split table of TILE x TILE chips (train / val / test). Then
measures, each in a subprocess run under ``/usr/bin/time -v`` so that its peak memory is its own:

- the windowed confusion matrices (every area) for several window sizes: wall time, Mpx/s, peak RSS;
- for contrast, the same counts on whole arrays (both rasters read at once; what the stage avoids);
- the whole ``evaluate_model`` stage (metrics, all figures, report).

Prints a Markdown table. Example:

    python benchmarks/bench_evaluate.py --size 10980 --tile 300 --windows 512 1024 2048
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from affine import Affine
from rasterio.enums import Resampling

TRANSFORM = Affine(10.0, 0.0, 399960.0, 0.0, -10.0, 4600020.0)
CRS = "EPSG:32631"
K = 6
REFLECTANCE = np.array(  # B02, B03, B04, B08 per class 1..6
    [[0.03, 0.05, 0.03, 0.30], [0.05, 0.09, 0.07, 0.35], [0.08, 0.11, 0.13, 0.28],
     [0.12, 0.13, 0.15, 0.20], [0.14, 0.17, 0.21, 0.25], [0.04, 0.05, 0.03, 0.01]]
)  # fmt: skip


def build_inputs(folder: Path, size: int, tile: int, seed: int = 0) -> dict[str, Path]:
    """Write scene, mask, prediction and split table (memory: one 512-row strip)."""
    paths = {n: folder / f"{n}.tif" for n in ("scene", "mask", "prediction")}
    common = dict(
        driver="GTiff", width=size, height=size, crs=CRS, transform=TRANSFORM, tiled=True,
        blockxsize=512, blockysize=512, compress="deflate", predictor=2, bigtiff="IF_SAFER",
        num_threads="ALL_CPUS", nodata=0,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    patches = rng.integers(1, K + 1, (size // 150 + 2, size // 150 + 2)).astype(np.uint8)
    with (
        rasterio.open(paths["scene"], "w", count=4, dtype="uint16", **common) as scene,
        rasterio.open(paths["mask"], "w", count=1, dtype="uint8", **common) as mask,
        rasterio.open(paths["prediction"], "w", count=1, dtype="uint8", **common) as pred,
    ):
        for row in range(0, size, 512):
            rows = min(512, size - row)
            r = (np.arange(row, row + rows) // 150)[:, None]
            c = (np.arange(size) // 150)[None, :]
            labels = patches[r, c]
            window = rasterio.windows.Window(0, row, size, rows)
            mask.write(labels, 1, window=window)
            wrong = rng.random(labels.shape) < 0.15
            predicted = np.where(wrong, rng.integers(1, K + 1, labels.shape), labels)
            pred.write(predicted.astype(np.uint8), 1, window=window)
            reflectance = REFLECTANCE[labels - 1].transpose(2, 0, 1)
            reflectance = reflectance + rng.normal(0, 0.01, reflectance.shape)
            scene.write(
                np.clip((reflectance + 0.1) / 1e-4, 1, 65535).astype(np.uint16), window=window
            )
        scene.descriptions = ("B02", "B03", "B04", "B08")
        scene.scales = (1e-4,) * 4
        scene.offsets = (-0.1,) * 4
        factors = [f for f in (2, 4, 8, 16, 32, 64) if size // f >= 128]
        for dataset in (scene, mask, pred):
            dataset.build_overviews(factors, Resampling.nearest)
    offsets = range(0, size - tile + 1, tile)
    chips = pd.DataFrame(
        [{"chip_id": f"bench_r{r}_c{c}", "scene": "bench", "row_off": r, "col_off": c,
          "height": tile, "width": tile, "valid_fraction": 1.0,
          "split": ("train", "train", "train", "val", "test")[int(rng.integers(0, 5))]}
         for r in offsets for c in offsets]
    )  # fmt: skip
    paths["split"] = folder / "split.parquet"
    chips.to_parquet(paths["split"])
    return paths


def worker(mode: str, folder: Path, window: int) -> None:
    """Run one measured task in this process; print a JSON line with its result."""
    from s2landcover.classes import ClassTable
    from s2landcover.config import validate_config
    from s2landcover.evaluate import (
        SPLIT_AREAS,
        accumulate_area_counts,
        chip_windows,
        confusion_counts,
        evaluate_model,
    )
    from s2landcover.io.evaluation_io import iter_label_windows, read_split_table

    config = validate_config({})
    classes = ClassTable.from_config(config["classes"])
    started = time.perf_counter()
    if mode == "windowed":
        table = read_split_table(folder / "split.parquet")
        chips = {area: chip_windows(table, "bench", area) for area in SPLIT_AREAS}
        blocks = iter_label_windows(folder / "prediction.tif", folder / "mask.tif", window)
        totals = accumulate_area_counts(blocks, chips, K)
        pixels = int(totals["whole_scene"].sum())
    elif mode == "whole_arrays":
        with rasterio.open(folder / "mask.tif") as m, rasterio.open(folder / "prediction.tif") as p:
            reference, prediction = m.read(1), p.read(1)
        pixels = int(confusion_counts(reference, prediction, K).sum())
    else:
        evaluate_model(
            {"bench": folder / "prediction.tif"}, {"bench": folder / "mask.tif"},
            {"bench": folder / "scene.tif"}, folder / "split.parquet", folder / "no_model",
            folder / "evaluation", classes, config["evaluation"], window_size=window,
        )  # fmt: skip
        pixels = 0
    print(json.dumps({"seconds": time.perf_counter() - started, "pixels": pixels}))


def measure(mode: str, folder: Path, window: int) -> dict:
    """Run :func:`worker` under ``/usr/bin/time -v``; wall time of the task and peak RSS (MiB)."""
    command = ["/usr/bin/time", "-v", sys.executable, __file__, "--worker", mode, "--folder"]
    command += [str(folder), "--window", str(window)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    result["peak_rss_mib"] = int(rss.group(1)) / 1024 if rss else float("nan")
    return result


def main() -> None:
    """Parse arguments, build inputs, measure, print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10980, help="scene side in pixels")
    parser.add_argument("--tile", type=int, default=300, help="chip side in pixels")
    parser.add_argument("--windows", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, default=1024, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, Path(args.folder), args.window)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        build_inputs(folder, args.size, args.tile)
        print(f"inputs built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        megapixels = args.size * args.size / 1e6
        print(
            f"Scene {args.size} x {args.size} px ({megapixels:.0f} Mpx), "
            f"chips {args.tile} px, K = {K}.\n"
        )
        print("| task | window (px) | time (s) | Mpx/s | peak RSS (MiB) |")
        print("|---|---:|---:|---:|---:|")
        runs = [("windowed", w) for w in args.windows]
        runs += [("whole_arrays", 0), ("evaluate_model", 1024)]
        labels = {
            "windowed": "confusion matrices, all areas, windowed",
            "whole_arrays": "same counts on whole arrays (not used; for contrast)",
            "evaluate_model": "whole stage: metrics + figures + report",
        }
        for mode, window in runs:
            result = measure(mode, folder, window)
            rate = megapixels / result["seconds"]
            print(
                f"| {labels[mode]} | {window or '-'} | {result['seconds']:.2f} | {rate:.0f} "
                f"| {result['peak_rss_mib']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
