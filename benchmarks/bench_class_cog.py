"""The class map's writer (``StreamingRasterWriter``, MODE overviews; ``--resampling NEAREST``:
the confidence raster's): CPU while the rows stream and wall / CPU seconds of its end (close +
the COG driver's copy), this tree against another.

Each run is a subprocess that writes one SIZE x SIZE uint8 class map in bands of 512 rows, as
``s2lc predict``'s writer thread does (one thread here, so "stream CPU" is the writer thread's
own), and times the end (``__exit__``: closing the stage, the overview stages, the COG copy)
with process CPU (user + system, GDAL's threads included). The class map: ``--class-map`` (a
GeoTIFF, e.g. the ``out.tif`` of ``bench_predict_host.py --workdir DIR``; its top-left SIZE x SIZE)
or, without it, a synthetic map of smooth regions (6 classes, a no-data border; NEAREST: a smooth
synthetic confidence, 1..255). Runs of both
trees are interleaved over ``--repeats`` rounds; medians are quoted.

Example (issue 20; the tree before the streamed overviews as the baseline):

    git archive 1cefb94 src | tar -x -C /tmp/base
    python benchmarks/bench_class_cog.py --size 4096 --repeats 5 --baseline-src /tmp/base/src
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).parents[1] / "src"


def synthetic_class_map(size: int, seed: int = 0) -> np.ndarray:
    """Smooth regions of 6 classes (argmax of upsampled coarse noise), a 64 px no-data border."""
    from scipy.ndimage import zoom

    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(6, size // 64 + 1, size // 64 + 1))
    fields = np.stack([zoom(c, 64, order=1)[:size, :size] for c in coarse])
    labels = (fields.argmax(axis=0) + 1).astype(np.uint8)
    labels[:64], labels[:, :64] = 0, 0
    return labels


def synthetic_confidence(size: int, seed: int = 0) -> np.ndarray:
    """Smooth values 1..255 (upsampled coarse noise) with per-pixel jitter, 0 on the border."""
    from scipy.ndimage import zoom

    rng = np.random.default_rng(seed)
    smooth = zoom(rng.random((size // 64 + 1, size // 64 + 1)), 64, order=1)[:size, :size]
    values = np.clip(smooth * 200 + rng.normal(0, 8, (size, size)) + 40, 1, 255).astype(np.uint8)
    values[:64], values[:, :64] = 0, 0
    return values


def child(labels_path: str, resampling: str) -> None:
    from affine import Affine
    from rasterio.crs import CRS

    from s2landcover.classes import ClassTable
    from s2landcover.io.prediction_writer import StreamingRasterWriter
    from s2landcover.io.rasters import Grid

    labels = np.load(labels_path)
    height, width = labels.shape
    classes = ClassTable.from_dict(
        {
            "names": [f"class {i}" for i in range(1, 7)],
            "colors": ["#1b6e2a", "#a6cee3", "#2171b5", "#fdbf6f", "#e31a1c", "#6a3d9a"],
            "codes": [[i] for i in range(1, 7)],
            "water": [],
        }
    )
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 4e5, 0, -10, 5e6), width, height)

    def cpu() -> float:
        times = os.times()
        return times.user + times.system

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "prediction.tif"
        if resampling == "MODE":
            writer = StreamingRasterWriter(out, grid, classes=classes, overview_resampling="MODE")
        else:
            writer = StreamingRasterWriter(out, grid, description="confidence")
        writer.__enter__()
        cpu0, thread0 = cpu(), time.thread_time()
        for row in range(0, height, 512):
            writer.write_rows(row, labels[row : row + 512])
        cpu1, thread1, wall1 = cpu(), time.thread_time(), time.perf_counter()
        writer.__exit__(None, None, None)
        cpu2, wall2 = cpu(), time.perf_counter()
        print(
            json.dumps(
                {
                    "stream_thread_cpu_s": thread1 - thread0,
                    "stream_cpu_s": cpu1 - cpu0,
                    "end_wall_s": wall2 - wall1,
                    "end_cpu_s": cpu2 - cpu1,
                    "bytes": out.stat().st_size,
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--class-map", type=Path, default=None)
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--resampling", choices=["MODE", "NEAREST"], default="MODE")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.resampling)
        return
    if args.class_map is not None:
        import rasterio

        with rasterio.open(args.class_map) as src:
            labels = src.read(1)[: args.size, : args.size]
    elif args.resampling == "MODE":
        labels = synthetic_class_map(args.size)
    else:
        labels = synthetic_confidence(args.size)
    trees = [("this tree", SRC)] + (
        [("baseline", args.baseline_src)] if args.baseline_src is not None else []
    )
    results: dict[str, list[dict]] = {name: [] for name, _ in trees}
    with tempfile.TemporaryDirectory() as folder:
        labels_path = str(Path(folder) / "labels.npy")
        np.save(labels_path, labels)
        for _ in range(args.repeats):
            for name, src in trees:
                env = {**os.environ, "PYTHONPATH": str(src)}
                command = [sys.executable, __file__, "--child", labels_path]
                command += ["--resampling", args.resampling]
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
                results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    height, width = labels.shape
    print(
        f"{args.resampling}: {width:,} x {height:,} px, median of {args.repeats}, "
        f"load average {os.getloadavg()[0]:.1f} at the end\n"
    )
    keys = ["stream_thread_cpu_s", "stream_cpu_s", "end_wall_s", "end_cpu_s", "bytes"]
    print("| tree | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, runs in results.items():
        cells = [statistics.median(run[key] for run in runs) for key in keys]
        print(
            f"| {name} | "
            + " | ".join(f"{c:.3f}" if c < 1e3 else f"{c:,.0f}" for c in cells)
            + " |"
        )


if __name__ == "__main__":
    main()
