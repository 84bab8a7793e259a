"""Host side of whole-scene prediction: the machinery's megapixels per second, per core, by phase.

Runs :func:`s2landcover.predict.predict_scene_with_model` end to end (reader thread: decode,
normalise, cut windows; main thread: network, blend into the row-band accumulator, argmax; writer
thread: stage GeoTIFF, then the COG rewrite) with the stand-in network of bench_predict.py (one
3 x 3 convolution, 4 bands -> K logits), so that what is measured is the machinery, on synthetic
4-band uint16 scenes: SIZE x SIZE (square) and 2 SIZE x SIZE (tall). Each run is a subprocess
(its own peak RSS); settings are interleaved over ``--repeats`` rounds and medians are quoted.

Besides wall-clock Mpx/s it reports Mpx per CPU-second of the process (user + system over all
threads): on a shared, loaded machine the wall clock mostly measures the other jobs, CPU time what
this job needs; "per core" below is that figure. Per phase: CPU seconds of each thread (reader,
main, writer) and the COG rewrite (``rasterio.shutil.copy``, GDAL threads not included).

``--device-stand-in``: what the host does in a GPU run, alone. The network, the blend and the
argmax (all on the device in a GPU run) are replaced by a stand-in that takes each batch as a
device copy would (no host CPU) and hands the writer the class rows of a fixed synthetic class
map (the no-data strip as 0); in this tree the device also cuts, normalises and batches the
windows (``predict.device_window_batches``), so the stand-in takes each band of rows from the
readers instead (:func:`device_cuts`). What remains is the readers (this tree: decode and no-data
mask, as on CUDA; trees before it: decode and window cuts of stored values, or before that also
the host's normalisation) and the writer (stage GeoTIFF, overviews, COG). This is the machinery
the issue's "today 8-15 Mpx/s" and "44-73 ms per Mpx on the host" describe; host-to-device
copies and pinned allocations are not in it (DMA, and a one-off allocation).

``--baseline-src DIR`` also runs every setting with the package at ``DIR`` (e.g. a checkout of
the commit before issue 20's host-side work), interleaved with this tree's runs in the same rounds,
so that "x baseline" compares the machinery of both trees under the same load.

Example (this project's 2-core machine):

    python benchmarks/bench_predict_host.py --size 4096 --threads 2 --repeats 3 \
        --baseline-src /path/to/checkout-before/src
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _measure import python_command, run_measured
from bench_predict import metadata, stand_in_network, write_scene, write_stack_scene

# (label, prediction settings); the first is the reference (the defaults before issue 20).
SETTINGS = [
    ("before: 320 px, overlap 0.25, float32, NCHW",
     {"window": None, "overlap": 0.25, "precision": "float32", "layout": "contiguous"}),
    ("defaults: auto (1024) px, margin 64, float32, NHWC", {"precision": "float32"}),
]  # fmt: skip
# --device-stand-in: each tree's defaults on a GPU. 16 windows of 1,024 px: what batch_size auto
# takes on a large GPU for a 4-band scene (256 MiB of float32 input per batch, the cap of
# s2landcover.predict.device_batch_size); 4: the default before batch_size auto.
DEVICE_SETTINGS = [
    ("before: 320 px, overlap 0.25, batch 4", {"window": None, "overlap": 0.25, "batch_size": 4}),
    ("defaults on a GPU: auto (1024) px, margin 64, batch 16", {"batch_size": 16}),
]  # fmt: skip

# The stand-in device's class map: smooth blobs of K = 6 classes (a pattern of the synthetic
# scene's first band, in 6 levels), repeated every CLASS_TILE px.
CLASS_TILE = 2048


def class_band(width: int, num_classes: int) -> np.ndarray:
    """(CLASS_TILE, width) uint8 classes 1..K, 0 over the scene's no-data strip (width // 50)."""
    rows = np.arange(CLASS_TILE, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    pattern = np.sin(rows / 37.0) * np.cos(cols / 53.0)  # in [-1, 1]
    classes = 1 + np.minimum(num_classes - 1, ((pattern + 1) / 2 * num_classes).astype(np.uint8))
    classes[:, : width // 50] = 0
    return classes


def device_stand_in(classes: np.ndarray):
    """A ``blend_rows`` whose network, blend and argmax take no host CPU (a GPU's share): each
    batch is taken (a device copy would read it by DMA), and at each window row's end the finished
    rows of ``classes`` (:func:`class_band`, repeated down the scene) go to the writer."""

    def blend_rows(model, batches, grid, num_classes, emit_rows, *args, **kwargs):
        confidence = kwargs.get("confidence", False)
        on_batch = kwargs.get("on_batch")

        def emit(top: int, end: int) -> None:
            rows = classes[np.arange(top, end) % CLASS_TILE]  # a fresh array: the writer keeps it
            emit_rows((top, rows, (rows * 40).astype(np.uint8) if confidence else None))

        top = 0
        for offsets, _images, _valids in batches:
            for row_off, _ in offsets:
                if row_off > top:
                    emit(top, row_off)
                    top = row_off
            if on_batch is not None:
                on_batch(len(offsets))
        emit(top, grid.height)

    return blend_rows


def device_cuts(bands, grid, norm, batch_size, device):
    """A ``device_window_batches`` whose copies, cuts and normalisation take no host CPU (a GPU's
    share): each band of rows from the readers is taken (a device copy would read it by DMA) and
    its windows' offsets are handed on in batches of ``batch_size``, without data."""
    offsets = []
    for row_off, _stored, _valid in bands:
        for col_off in grid.col_starts:
            offsets.append((row_off, col_off))
            if len(offsets) == batch_size:
                yield offsets, None, None
                offsets = []
    if offsets:
        yield offsets, None, None


def child(scene: Path, out: Path, cfg: dict, threads: int, on_device: bool = False) -> dict:
    """One measured run in this process: wall and CPU seconds, per-thread CPU by phase;
    ``on_device``: with :func:`device_stand_in` for the device's share of a GPU run."""
    import inspect
    import threading

    import rasterio.shutil
    import torch

    from s2landcover import cli, predict

    # the process settings of `s2lc predict` on the CPU, or on CUDA with on_device (trees before
    # prediction_process_settings: their CLI's process_settings, or threads only)
    if hasattr(cli, "prediction_process_settings"):
        cli.prediction_process_settings(threads, "cuda" if on_device else "cpu")
    elif hasattr(cli, "process_settings"):
        cli.process_settings(threads, reuse_freed_memory=True)
    else:
        torch.set_num_threads(threads)
    cpu_by_thread: dict[str, float] = {}
    lock = threading.Lock()

    def timed(name: str, function):  # CPU time of the calling thread inside ``function``
        def wrapper(*args, **kwargs):
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                with lock:
                    cpu_by_thread[name] = (
                        cpu_by_thread.get(name, 0.0) + time.thread_time() - started
                    )

        return wrapper

    def timed_iter(name: str, make):
        def wrapper(*args, **kwargs):
            iterator = make(*args, **kwargs)
            while True:
                started = time.thread_time()
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    with lock:
                        cpu_by_thread[name] = (
                            cpu_by_thread.get(name, 0.0) + time.thread_time() - started
                        )
                yield item

        return wrapper

    from s2landcover.io import prediction_writer

    prediction_writer.rasterio.shutil.copy = timed("COG rewrite", rasterio.shutil.copy)
    predict.window_batches = timed_iter("reader: decode, normalise, cut", predict.window_batches)
    if hasattr(predict, "stored_row_bands"):  # the readers of the device's cuts (CUDA path)
        predict.stored_row_bands = timed_iter("reader: decode, mask", predict.stored_row_bands)
    if hasattr(predict, "normalise_row_band"):  # reader threads (after issue 20): their own CPU
        predict.normalise_row_band = timed("readers: normalise", predict.normalise_row_band)
        predict.valid_pixels = timed("readers: no-data mask", predict.valid_pixels)
    writer_write = prediction_writer.StreamingRasterWriter.write_rows
    prediction_writer.StreamingRasterWriter.write_rows = timed("writer: stage", writer_write)
    for name in ("RowBandAccumulator", "HostStripAccumulator"):  # the latter: this tree's CPU one
        accumulator = getattr(predict, name, None)
        if accumulator is not None:
            accumulator.release = timed("main: argmax + shift", accumulator.release)
            accumulator.add = timed("main: accumulate", accumulator.add)
    model = stand_in_network(6)
    forward = model.forward
    model.forward = timed("main: network + weights", forward)  # type: ignore[method-assign]
    meta = metadata(6, "resnet18", 300)
    options = {}
    if on_device:
        with rasterio.open(scene) as dataset:
            classes = class_band(dataset.width, 6)
        predict.blend_rows = device_stand_in(classes)
        if hasattr(predict, "device_window_batches"):  # trees whose device cuts the windows
            predict.device_window_batches = device_cuts
        capped = getattr(predict, "effective_batch_size", None)
        if capped is not None:  # the batch as on CUDA: no CPU cap of the window pixels per batch
            predict.effective_batch_size = lambda size, h, w, device="cpu": capped(
                size, h, w, "cuda"
            )
        if "normalise_on_device" in inspect.signature(predict.predict_scene_with_model).parameters:
            options["normalise_on_device"] = True  # the CUDA default: no host normalisation
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    from s2landcover.config import validate_config

    cfg = {**validate_config({})["prediction"], **cfg}  # the setting over the config's defaults
    summary = predict.predict_scene_with_model(
        model, meta, scene, out, cfg, progress=False, **options
    )
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime - cpu0,
        "windows": summary["windows"],
        "batch_size": summary.get("batch_size"),  # trees before batch_size auto: not reported
        "phases": cpu_by_thread,
    }


def measure(
    scene: Path,
    out: Path,
    cfg: dict,
    threads: int,
    src: Path | None = None,
    on_device: bool = False,
) -> dict:
    """Run :func:`child` in its own process (`_measure.run_measured`): figures + peak RSS (MiB);
    ``src``: the package tree to import (None: the one this process would import)."""
    argv = ["--child", json.dumps(cfg), "--scene", str(scene), "--out", str(out)]
    argv += ["--device-stand-in"] if on_device else []
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    run = run_measured(python_command(__file__, *argv, "--threads", str(threads)), env=env)
    return {**run.result, "peak_rss_mib": run.peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="scene width (square side) in px")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--layout",
        choices=("deflate", "stack"),
        default="deflate",
        help="scene file layout: deflate (pixel-interleaved, DEFLATE + predictor: the tables "
        "before 2026-12-02) or stack (the ingest's StackWriter: band-interleaved, zstd 1)",
    )
    parser.add_argument(
        "--device-stand-in",
        action="store_true",
        help="the host side of a GPU run alone: network, blend and argmax replaced by a stand-in "
        "that costs no host CPU (see the module docstring)",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also run every setting with the s2landcover package of this src/ directory",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(
            json.dumps(
                child(
                    Path(args.scene),
                    Path(args.out),
                    json.loads(args.child),
                    args.threads,
                    args.device_stand_in,
                )
            )
        )
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_predict_host_"))
    workdir.mkdir(parents=True, exist_ok=True)
    scenes = {}
    for name, height in (("square", args.size), ("tall", 2 * args.size)):
        suffix = "" if args.layout == "deflate" else "_stack"
        scenes[name] = workdir / f"scene_{name}_{args.size}{suffix}.tif"
        if not scenes[name].exists():
            (write_scene if args.layout == "deflate" else write_stack_scene)(
                scenes[name], height, args.size
            )
    trees: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.baseline_src is not None:
        trees.insert(0, ("baseline", args.baseline_src.resolve()))
    settings = DEVICE_SETTINGS if args.device_stand_in else SETTINGS
    rows = [(tree, label) for tree, _ in trees for label, _ in settings]
    runs: dict[tuple[str, str, str], list[dict]] = {}
    for _ in range(args.repeats):
        for shape in scenes:
            for tree, src in trees:
                for label, cfg in settings:
                    figures = measure(
                        scenes[shape], workdir / "out.tif", cfg, args.threads, src,
                        args.device_stand_in,
                    )  # fmt: skip
                    runs.setdefault((tree, label, shape), []).append(figures)
                    print(tree, label, shape, json.dumps(figures), file=sys.stderr)
    load = os.getloadavg()
    print(
        f"scene {args.size:,} px wide (square {args.size:,}^2, tall {2 * args.size:,} x "
        f"{args.size:,}), scene layout {args.layout}, "
        + (
            "the host side of a GPU run (network, blend and argmax: a stand-in device at no "
            "host cost), K = 6, "
            if args.device_stand_in
            else "stand-in 3x3 conv network, K = 6, "
        )
        + f"{args.threads} threads, median of {args.repeats} interleaved rounds, load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) at the end"
        + (f"; baseline: {args.baseline_src}" if args.baseline_src is not None else "")
        + "\n"
    )
    print(
        "| machinery | setting | scene | windows | wall s | Mpx/s (wall) | x ref (wall) | CPU s "
        "| Mpx per CPU-s (per core) | x ref (per core) | peak RSS MiB |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for shape, factor in (("square", 1), ("tall", 2)):
        megapixels = factor * args.size * args.size / 1e6
        reference = runs[(rows[0][0], rows[0][1], shape)]  # the first tree's first setting
        base_wall = statistics.median(r["wall"] for r in reference)
        base_cpu = statistics.median(r["cpu"] for r in reference)
        for tree, label in rows:
            rs = runs[(tree, label, shape)]
            wall = statistics.median(r["wall"] for r in rs)
            cpu = statistics.median(r["cpu"] for r in rs)
            rss = statistics.median(r["peak_rss_mib"] for r in rs)
            print(
                f"| {tree} | {label} | {shape} | {rs[0]['windows']:,} | {wall:.2f} | "
                f"{megapixels / wall:.1f} | {base_wall / wall:.2f} | {cpu:.2f} | "
                f"{megapixels / cpu:.1f} | {base_cpu / cpu:.2f} | {rss:,.0f} |"
            )
    print(f"\nref: {rows[0][0]}, {rows[0][1]}, same scene.")
    print("\nCPU seconds by phase (square scene, median; threads' own CPU time only):\n")
    phases = sorted({p for rs in runs.values() for r in rs for p in r["phases"]})
    print("| phase | " + " | ".join(f"{tree}: {label}" for tree, label in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for phase in phases:
        cells = []
        for tree, label in rows:
            values = [r["phases"].get(phase, 0.0) for r in runs[(tree, label, "square")]]
            cells.append(f"{statistics.median(values):.2f}")
        print(f"| {phase} | " + " | ".join(cells) + " |")
    print("\nCPU seconds in no phase (GDAL decode and torch worker threads, window copies, the")
    print("kernel zeroing fresh pages, set-up, the rest of the main loop), square scene, median:\n")
    print("| " + " | ".join(f"{tree}: {label}" for tree, label in rows) + " |")
    print("|" + "---:|" * len(rows))
    cells = []
    for tree, label in rows:
        rs = runs[(tree, label, "square")]
        cells.append(f"{statistics.median(r['cpu'] - sum(r['phases'].values()) for r in rs):.2f}")
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
