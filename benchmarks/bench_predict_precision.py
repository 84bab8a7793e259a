"""CPU prediction settings side by side: window, overlap, precision and layout, in one run.

Runs :func:`s2landcover.predict.predict_scene_with_model` end to end (read, infer, blend, write,
COG) on one synthetic scene with a resnet34 U-Net, once per setting, interleaved over ``--repeats``
rounds, and reports the median megapixels of scene per second, the ratio to the reference (today's
default: the tile size rounded up to 320 px, overlap 0.25, float32) and the share of valid pixels
whose class equals the reference's output.

Agreement is only meaningful with trained weights (``--checkpoint results/models/.../model.pt``,
whose bands the scene then carries): random weights give near-tied logits that any rounding flips.
Without ``--checkpoint`` the network has random weights and only the speed columns mean anything.

Example (2 threads, as a Snakemake job on this project's CPU machine):

    python benchmarks/bench_predict_precision.py --size 1536 --threads 2 --repeats 3 \\
        --checkpoint results/models/size300/unet-resnet34/model.pt --scene results/scenes/demo.tif
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).parent))
from bench_predict import metadata, write_scene

# (label, prediction settings over the config's defaults); the first is the reference: the
# defaults before issue 20.
SETTINGS = [
    ("320 px, overlap 0.25, float32 NCHW (before)",
     {"window": None, "overlap": 0.25, "precision": "float32", "layout": "contiguous"}),
    ("320 px, overlap 0.25, float32 NHWC",
     {"window": None, "overlap": 0.25, "precision": "float32", "layout": "channels_last"}),
    ("320 px, overlap 0.25, bf16 NHWC",
     {"window": None, "overlap": 0.25, "precision": "bfloat16"}),
    ("512 px, margin 32, float32 NHWC", {"window": 512, "margin": 32, "precision": "float32"}),
    ("512 px, margin 32, bf16 NHWC", {"window": 512, "margin": 32, "precision": "bfloat16"}),
    ("1024 px, margin 32, float32 NHWC", {"window": 1024, "margin": 32, "precision": "float32"}),
    ("1024 px, margin 32, bf16 NHWC", {"window": 1024, "margin": 32, "precision": "bfloat16"}),
    ("1024 px, margin 64, bf16 NHWC", {"window": 1024, "margin": 64, "precision": "bfloat16"}),
    ("defaults (auto: 1024 px, margin 32, bf16 where native, NHWC)", {}),

]  # fmt: skip


def with_defaults(settings: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Each setting over the validated config's ``prediction`` defaults."""
    from s2landcover.config import validate_config

    defaults = validate_config({})["prediction"]
    return [(label, {**defaults, **cfg}) for label, cfg in settings]


def seam_measure(classes: np.ndarray, shifted: np.ndarray, grid) -> tuple[float, float, float]:
    """(agreement with the half-window-shifted grid over pixels with data, class-change rate of
    neighbouring pixels across window borders, the same elsewhere): docs/benchmarks/predict.md."""
    height, width = classes.shape

    def border_flags(starts: tuple[int, ...], window: int, length: int) -> np.ndarray:
        edges = {s for s in starts if s > 0} | {s + window for s in starts if s + window < length}
        flags = np.zeros(length - 1, dtype=bool)
        flags[[e - 1 for e in edges]] = True
        return flags

    col_change = classes[:, 1:] != classes[:, :-1]
    row_change = classes[1:, :] != classes[:-1, :]
    at_col = border_flags(grid.col_starts, grid.window_width, width)
    at_row = border_flags(grid.row_starts, grid.window_height, height)
    border = np.concatenate([col_change[:, at_col].ravel(), row_change[at_row].ravel()])
    other = np.concatenate([col_change[:, ~at_col].ravel(), row_change[~at_row].ravel()])
    valid = classes > 0
    agreement = float((classes == shifted)[valid].mean())
    return agreement, float(border.mean()) if border.size else float("nan"), float(other.mean())


def crop_scene(source: Path, out: Path, size: int) -> None:
    """The top-left ``size`` x ``size`` px of a scene stack, with its band names, scale, offset."""
    with rasterio.open(source) as src:
        window = Window(0, 0, min(size, src.width), min(size, src.height))
        profile = src.profile | {
            "width": int(window.width),
            "height": int(window.height),
            "transform": src.window_transform(window),
        }
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.descriptions = src.descriptions
            dst.scales = src.scales
            dst.offsets = src.offsets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1536, help="scene side in px")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", type=Path, help="trained model.pt (else random weights)")
    parser.add_argument("--scene", type=Path, help="scene stack to crop (else synthetic)")
    parser.add_argument("--no-seams", action="store_true", help="skip the half-window shift runs")
    args = parser.parse_args()

    import torch

    from s2landcover.models import build_segmentation_model
    from s2landcover.predict import model_from_checkpoint, predict_scene_with_model, window_grid

    torch.set_num_threads(args.threads)
    if args.checkpoint:
        model, meta = model_from_checkpoint(args.checkpoint)
    else:
        torch.manual_seed(0)
        meta = metadata(6, "resnet34", 300)
        model = build_segmentation_model("Unet", "resnet34", len(meta["bands"]), 6).eval()
    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / "scene.tif"
        if args.scene:
            crop_scene(args.scene, scene, args.size)
        else:
            write_scene(scene, args.size, args.size)
        with rasterio.open(scene) as src:
            megapixels = src.width * src.height / 1e6
        rates: dict[str, list[float]] = {label: [] for label, _ in SETTINGS}
        outputs: dict[str, np.ndarray] = {}
        summaries: dict[str, dict] = {}
        for _ in range(args.repeats):
            for label, cfg in with_defaults(SETTINGS):
                out = Path(tmp) / "out.tif"
                started = time.perf_counter()
                summaries[label] = predict_scene_with_model(
                    model, meta, scene, out, cfg, device="cpu", progress=False
                )
                rates[label].append(megapixels / (time.perf_counter() - started))
                with rasterio.open(out) as dst:
                    outputs[label] = dst.read(1)
        seams = {}
        if not args.no_seams:  # the half-window shift of docs/benchmarks/predict.md
            with rasterio.open(scene) as src:
                height, width = src.height, src.width
            for label, cfg in with_defaults(SETTINGS):
                grid = window_grid(cfg, int(meta["tile_size"]), height, width)
                out = Path(tmp) / "shifted.tif"
                predict_scene_with_model(
                    model, meta, scene, out, cfg, device="cpu", progress=False,
                    grid_shift=grid.window_height // 2,
                )  # fmt: skip
                with rasterio.open(out) as dst:
                    seams[label] = seam_measure(outputs[label], dst.read(1), grid)
        reference = SETTINGS[0][0]
        valid = outputs[reference] > 0
        base = statistics.median(rates[reference])
        weights = "trained" if args.checkpoint else "random (agreement not meaningful)"
        load = os.getloadavg()
        print(
            f"scene {args.size} px, {args.threads} threads, weights {weights}, "
            f"median of {args.repeats} interleaved rounds, torch {torch.__version__}, "
            f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end\n"
        )
        print(
            "| setting | windows (h x w px) | Mpx/s | x before | agreement with before | "
            "agreement, grid shifted by half a window | class changes across window borders / "
            "elsewhere |"
        )
        print("|---|---|---:|---:|---:|---:|---:|")
        for label, _ in SETTINGS:
            rate = statistics.median(rates[label])
            agree = (outputs[label] == outputs[reference])[valid].mean()
            summary = summaries[label]
            windows = (
                f"{summary['windows']} ({summary['window_height']} x {summary['window_width']}, "
                f"{summary['precision']})"
            )
            seam = seams.get(label)
            seam_cells = (
                f"{100 * seam[0]:.2f} % | {100 * seam[1]:.2f} % / {100 * seam[2]:.2f} %"
                if seam
                else "- | -"
            )
            print(
                f"| {label} | {windows} | {rate:.3f} | {rate / base:.2f} | {100 * agree:.2f} % | "
                f"{seam_cells} |"
            )


if __name__ == "__main__":
    main()
