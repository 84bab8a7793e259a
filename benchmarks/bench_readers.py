"""The readers of whole-scene prediction alone: decode, no-data mask, (normalisation, window cuts).

What a GPU host's CPUs must sustain to keep the device busy (on CUDA the window cuts, the
normalisation, the blending and the argmax run on the device):
``io.prediction_writer.read_row_bands`` of a synthetic scene (:func:`bench_predict.scene_blocks`,
the ``bench_predict_host.py`` file layout) at the default CPU window grid (1,024 px, margin 64),
either through ``predict.window_batches`` (normalised and cut on the host into batches of one
window, the CPU path) or through ``predict.stored_row_bands`` (decoded into 4 buffers and masked,
the CUDA default), output dropped, no network. Each case in its own process, interleaved rounds,
with 1, 2 and 4 reader threads. Reports wall seconds, CPU seconds (all threads), megapixels per
CPU-second and peak RSS.

    python benchmarks/bench_readers.py --size 10980 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import python_command, run_measured
from bench_predict import BANDS, write_scene


def child(scene: Path, normalise: bool, readers: int) -> dict:
    """Read, mask, (normalise,) cut every window of ``scene``; wall and CPU seconds."""
    from s2landcover.config import validate_config
    from s2landcover.io.prediction_writer import (
        bounded_block_cache,
        inspect_scene_bands,
        read_row_bands,
    )
    from s2landcover.predict import stored_row_bands, window_batches, window_grid
    from s2landcover.radiometry import InputNormalization

    scene_bands = inspect_scene_bands(scene, BANDS)
    height, width = scene_bands.grid.height, scene_bands.grid.width
    grid = window_grid(validate_config({})["prediction"], 300, height, width, "cpu")
    norm = InputNormalization(
        scene_bands.scales, scene_bands.offsets, (0.08,) * 4, (0.05,) * 4, scene_bands.nodata
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    windows = 0
    with bounded_block_cache(width, len(BANDS)):
        if normalise:  # the CPU path: normalised, cut into batches of one window
            rows = read_row_bands(
                scene_bands, grid.row_starts, grid.window_height, buffers=1, threads=readers
            )
            for offsets, _batch, _valids in window_batches(rows, grid, norm, 1, workers=readers):
                windows += len(offsets)
        else:  # the CUDA path: bands of rows decoded into 4 buffers and masked; the device cuts
            rows = read_row_bands(
                scene_bands, grid.row_starts, grid.window_height, buffers=4, threads=readers
            )
            for _row_off, _stored, _valid in stored_row_bands(rows, grid, scene_bands.nodata):
                windows += len(grid.col_starts)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime - cpu0, "windows": windows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10980, help="square scene side in px")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--readers", default="1,2,4", help="reader thread counts, comma-separated")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case = json.loads(args.child)
        print(json.dumps(child(Path(case["scene"]), case["normalise"], case["readers"])))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_readers_"))
    workdir.mkdir(parents=True, exist_ok=True)
    scene = workdir / f"scene_square_{args.size}.tif"
    if not scene.exists():
        write_scene(scene, args.size, args.size)
    cases = [
        (normalise, readers)
        for normalise in (True, False)
        for readers in (int(r) for r in args.readers.split(","))
    ]
    runs: dict[tuple[bool, int], list[dict]] = {}
    for _ in range(args.repeats):
        for normalise, readers in cases:
            case = {"scene": str(scene), "normalise": normalise, "readers": readers}
            run = run_measured(python_command(__file__, "--child", json.dumps(case)))
            figures = {**run.result, "peak_rss_mib": run.peak_mib}
            runs.setdefault((normalise, readers), []).append(figures)
            print(normalise, readers, json.dumps(figures), file=sys.stderr)
    megapixels = args.size * args.size / 1e6
    print(
        f"scene {args.size:,}^2, 4 bands uint16 (tiled 512, DEFLATE + predictor), windows of the "
        f"default CPU grid, output dropped, median of {args.repeats} interleaved "
        "rounds\n"
    )
    print(
        "| readers' work | reader threads | wall s | Mpx/s | CPU s | Mpx per CPU-s | peak RSS MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for normalise, readers in cases:
        rs = runs[(normalise, readers)]
        wall = statistics.median(r["wall"] for r in rs)
        cpu = statistics.median(r["cpu"] for r in rs)
        rss = statistics.median(r["peak_rss_mib"] for r in rs)
        label = "normalised, cut (CPU path)" if normalise else "decoded, masked (CUDA path)"
        print(
            f"| {label} | {readers} | {wall:.2f} | {megapixels / wall:.1f} | {cpu:.2f} | "
            f"{megapixels / cpu:.1f} | {rss:,.0f} |"
        )


if __name__ == "__main__":
    main()
