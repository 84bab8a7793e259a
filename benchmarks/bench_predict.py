"""Benchmark of whole-scene prediction: peak memory against scene height, speed, in-memory baseline.

Builds synthetic 4-band uint16 scene stacks (tiled 512, DEFLATE + predictor, band names, scale and
offset, nodata 0) of HEIGHT x SIZE and 2 HEIGHT x SIZE pixels and runs, each in a subprocess so that
its peak RSS (``os.wait4``) is its own:

- ``stream``: :func:`s2landcover.predict.predict_scene_with_model` (reader thread, row-band
  accumulator, writer thread, COG conversion) with a tiny stand-in network of the same interface
  (one 3 x 3 convolution, C -> K logits), so that what is measured is the streaming machinery, not
  the network; on both scene heights (the memory criterion: doubling the height adds < 10 %);
- ``inmemory``: the usual way, the whole scene read and one score array (K x H x W float32) for all
  logits, blended with the same windows and network (:func:`s2landcover.predict.stitch_in_memory`);
- ``speed``: the real network, a resnet34 U-Net (random weights; the weights do not change the
  arithmetic) with the default overlap on a SPEED_HEIGHT x SPEED_WIDTH crop, end to end (read,
  infer, blend, write, COG), in megapixels per second, extrapolated to the full scene.

Prints a Markdown table. Example:

    python benchmarks/bench_predict.py --size 10980 --classes 6 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from _measure import python_command, run_measured
from affine import Affine
from rasterio.windows import Window

BANDS = ["B02", "B03", "B04", "B08"]
TRANSFORM = Affine(10.0, 0.0, 399960.0, 0.0, -10.0, 4600020.0)
CRS = "EPSG:32631"
SCALE, OFFSET = 1e-4, -0.1
PALETTE = ["#1b6e2a", "#a6d96a", "#f2e35b", "#d7301f", "#b3a58c", "#2171b5", "#999999", "#ffffff"]


def class_table(num_classes: int) -> dict:
    return {
        "names": [f"class {i + 1}" for i in range(num_classes)],
        "colors": [PALETTE[i % len(PALETTE)] for i in range(num_classes)],
        "codes": [[i + 1] for i in range(num_classes)],
        "water": [False] * num_classes,
    }


def metadata(num_classes: int, encoder: str, tile_size: int) -> dict:
    return {
        "task": "segmentation",
        "architecture": "Unet",
        "encoder": encoder,
        "bands": BANDS,
        "scales": [SCALE] * 4,
        "offsets": [OFFSET] * 4,
        "mean": [0.06, 0.08, 0.07, 0.25],
        "std": [0.04, 0.04, 0.05, 0.10],
        "classes": class_table(num_classes),
        "tile_size": tile_size,
        "resolution": 10.0,
    }


def scene_blocks(height: int, width: int, block_rows: int = 1024, bands: int = len(BANDS)):
    """The synthetic scene's pixels by bands of ``block_rows`` rows: ``(top, (bands, rows, width)
    uint16)``, smooth spatial patterns per band, a no-data strip (0) on the left."""
    cols = np.arange(width, dtype=np.float32)[None, :]
    for top in range(0, height, block_rows):
        rows = np.arange(top, min(height, top + block_rows), dtype=np.float32)[:, None]
        block = np.empty((bands, rows.shape[0], width), dtype=np.uint16)
        for b in range(bands):
            pattern = np.sin(rows / (37.0 + 11 * b)) * np.cos(cols / (53.0 - 7 * b))
            block[b] = (1600 + 300 * b + 800 * pattern).astype(np.uint16)
        block[:, :, : width // 50] = 0  # no-data strip
        yield top, block


def write_stack_scene(path: Path, height: int, width: int) -> None:
    """The synthetic scene in the layout the pipeline's ingest writes (and ``s2lc predict`` reads
    in a run): :class:`s2landcover.io.stack.StackWriter` (band-interleaved COG, blocks of 512 px,
    zstd level 1, nodata 0, overviews, band names, scale and offset)."""
    from s2landcover.io.rasters import Grid
    from s2landcover.io.stack import StackWriter

    grid = Grid(rasterio.crs.CRS.from_string(CRS), TRANSFORM, width, height)
    with StackWriter(
        path, grid, len(BANDS), "uint16", descriptions=BANDS,
        scales=[SCALE] * len(BANDS), offsets=[OFFSET] * len(BANDS), tile_size=512,
    ) as writer:  # fmt: skip
        for top, block in scene_blocks(height, width):
            writer.write(Window(0, top, width, block.shape[1]), block)


def write_scene(path: Path, height: int, width: int, block_rows: int = 1024) -> None:
    """A synthetic scene stack (:func:`scene_blocks`): tiled 512, pixel-interleaved, DEFLATE level
    1 with the horizontal predictor."""
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": len(BANDS),
        "dtype": "uint16",
        "nodata": 0,
        "crs": CRS,
        "transform": TRANSFORM,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "zlevel": 1,
        "predictor": 2,
        "bigtiff": "IF_SAFER",
        "num_threads": "ALL_CPUS",
    }
    with rasterio.open(path, "w", **profile) as dst:
        for top, block in scene_blocks(height, width, block_rows):
            dst.write(block, window=Window(0, top, width, block.shape[1]))
        dst.descriptions = tuple(BANDS)
        dst.scales = (SCALE,) * len(BANDS)
        dst.offsets = (OFFSET,) * len(BANDS)


def stand_in_network(num_classes: int):  # torch is imported in the children only
    import torch

    torch.manual_seed(0)
    return torch.nn.Conv2d(len(BANDS), num_classes, 3, padding=1).eval()


def child(args: argparse.Namespace) -> dict:
    """Run one measured job in this (sub)process; returns its figures."""
    import torch

    from s2landcover.predict import (
        WindowGrid,
        model_from_checkpoint,
        predict_scene_with_model,
        stitch_in_memory,
        window_side,
        window_stride,
    )
    from s2landcover.radiometry import to_network_input

    torch.set_num_threads(args.threads)
    from s2landcover.config import validate_config

    cfg = {
        **validate_config({})["prediction"],
        "window": None,
        "overlap": args.overlap,
        "blend": "hann",
        "tta": False,
        "batch_size": args.batch_size,
        "confidence": False,
    }
    started = time.perf_counter()
    if args.child == "stream":
        meta = metadata(args.classes, "resnet18", args.tile)
        model = stand_in_network(args.classes)
        summary = predict_scene_with_model(model, meta, args.scene, args.out, cfg, progress=False)
        return {"seconds": summary["seconds"], "windows": summary["windows"]}
    if args.child == "speed":
        model, meta = model_from_checkpoint(args.checkpoint)
        summary = predict_scene_with_model(model, meta, args.scene, args.out, cfg, progress=False)
        return {"seconds": summary["seconds"], "windows": summary["windows"]}
    # inmemory: the whole scene and one score array for all logits
    meta = metadata(args.classes, "resnet18", args.tile)
    with rasterio.open(args.scene) as src:
        stored = src.read()
        profile = src.profile
    image, valid = to_network_input(
        stored, [SCALE] * 4, [OFFSET] * 4, meta["mean"], meta["std"], nodata=0
    )
    del stored
    window = window_side(cfg, args.tile)
    grid = WindowGrid.for_scene(*image.shape[1:], window, window_stride(window, args.overlap))
    blended = stitch_in_memory(
        stand_in_network(args.classes), image, grid, args.classes, batch_size=4
    )
    classes = (blended.argmax(axis=0) + 1).astype(np.uint8)
    classes[~valid] = 0
    profile.update(count=1, dtype="uint8", predictor=1)
    with rasterio.open(args.out, "w", **profile) as dst:
        dst.write(classes, 1)
    return {"seconds": time.perf_counter() - started, "windows": grid.count}


def measure(argv: list[str]) -> dict:
    """Run ``bench_predict.py --child ...`` in its own process (``_measure.run_measured``): its
    figures + peak RSS (MiB)."""
    run = run_measured(python_command(__file__, *argv))
    return {**run.result, "peak_rss_mib": run.peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10980, help="scene width (and height) in px")
    parser.add_argument("--classes", type=int, default=6, help="K, logit channels")
    parser.add_argument("--tile", type=int, default=300, help="model tile size (window: next x32)")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speed-height", type=int, default=960, help="rows of the resnet34 crop")
    parser.add_argument(
        "--speed-width", type=int, default=1280, help="columns of the resnet34 crop"
    )
    parser.add_argument("--skip-inmemory", action="store_true", help="skip the in-memory baseline")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", choices=["stream", "inmemory", "speed"], help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    workdir.mkdir(parents=True, exist_ok=True)
    common = [
        "--classes",
        str(args.classes),
        "--tile",
        str(args.tile),
        "--overlap",
        str(args.overlap),
    ]
    common += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    rows: list[tuple[str, str, str, str, str]] = []

    scenes = {}
    for factor in (1, 2):
        path = workdir / f"scene_{factor}x.tif"
        started = time.perf_counter()
        write_scene(path, factor * args.size, args.size)
        scenes[factor] = path
        print(f"wrote {path} in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    stream = {}
    for factor in (1, 2):
        stream[factor] = measure(
            [
                "--child",
                "stream",
                "--scene",
                str(scenes[factor]),
                "--out",
                str(workdir / f"pred_{factor}x.tif"),
                *common,
            ]
        )
        mpx = factor * args.size * args.size / 1e6
        rows.append(
            (
                f"streaming, stand-in 3x3 conv, {args.size * factor:,} x {args.size:,}",
                f"{stream[factor]['windows']:,}",
                f"{stream[factor]['seconds']:.1f}",
                f"{mpx / stream[factor]['seconds']:.2f}",
                f"{stream[factor]['peak_rss_mib']:,.0f}",
            )
        )
        print(rows[-1], file=sys.stderr)
    growth = stream[2]["peak_rss_mib"] / stream[1]["peak_rss_mib"] - 1

    inmemory = None
    if not args.skip_inmemory:
        inmemory = measure(
            [
                "--child",
                "inmemory",
                "--scene",
                str(scenes[1]),
                "--out",
                str(workdir / "inmemory.tif"),
                *common,
            ]
        )
        rows.append(
            (
                f"in-memory stitcher (one K x H x W array), stand-in, {args.size:,}^2",
                f"{inmemory['windows']:,}",
                f"{inmemory['seconds']:.1f}",
                f"{args.size * args.size / 1e6 / inmemory['seconds']:.2f}",
                f"{inmemory['peak_rss_mib']:,.0f}",
            )
        )
        print(rows[-1], file=sys.stderr)

    # Speed of the real network on a crop of the scene.
    import torch

    from s2landcover.io.checkpoints import save_model_checkpoint
    from s2landcover.models import build_segmentation_model

    crop = workdir / "crop.tif"
    write_scene(crop, args.speed_height, args.speed_width)
    torch.manual_seed(0)
    network = build_segmentation_model("Unet", "resnet34", len(BANDS), args.classes)
    checkpoint = workdir / "resnet34.pt"
    save_model_checkpoint(
        checkpoint, network.state_dict(), metadata(args.classes, "resnet34", args.tile)
    )
    speed = measure(
        [
            "--child",
            "speed",
            "--scene",
            str(crop),
            "--out",
            str(workdir / "crop_pred.tif"),
            "--checkpoint",
            str(checkpoint),
            *common,
        ]
    )
    crop_mpx = args.speed_height * args.speed_width / 1e6
    rows.append(
        (
            f"streaming, resnet34 U-Net, {args.speed_height:,} x {args.speed_width:,} crop",
            f"{speed['windows']:,}",
            f"{speed['seconds']:.1f}",
            f"{crop_mpx / speed['seconds']:.3f}",
            f"{speed['peak_rss_mib']:,.0f}",
        )
    )
    from s2landcover.predict import WindowGrid, round_up, window_stride

    window = round_up(args.tile)
    full = WindowGrid.for_scene(args.size, args.size, window, window_stride(window, args.overlap))
    per_window = speed["seconds"] / speed["windows"]

    print("| run | windows | seconds | Mpx/s | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(
        f"- Window {window} px (tile {args.tile} rounded up to 32), overlap {args.overlap}, "
        f"Hann blend, batch {args.batch_size}, K = {args.classes} classes, {args.threads} threads."
    )
    print(
        f"- Doubling the scene height raises peak RSS by {growth:+.1%} "
        f"({stream[1]['peak_rss_mib']:,.0f} -> {stream[2]['peak_rss_mib']:,.0f} MiB)."
    )
    if inmemory is not None:
        print(
            f"- In-memory stitcher / streaming on the same {args.size:,}^2 scene: time x"
            f"{inmemory['seconds'] / stream[1]['seconds']:.2f}, peak memory x"
            f"{inmemory['peak_rss_mib'] / stream[1]['peak_rss_mib']:.1f}."
        )
    print(
        f"- resnet34 U-Net: {per_window:.2f} s per {window} px window; the full "
        f"{args.size:,}^2 scene has {full.count:,} windows: about "
        f"{full.count * per_window / 60:.0f} min "
        f"on this CPU ({args.size**2 / 1e6 / (full.count * per_window):.3f} Mpx/s)."
    )


if __name__ == "__main__":
    main()
