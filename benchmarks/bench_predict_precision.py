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

# (label, window, overlap, precision); the first is the reference.
SETTINGS = [
    ("320 px, overlap 0.25, float32 (reference)", 320, 0.25, "float32"),
    ("320 px, overlap 0.25, bf16 channels-last", 320, 0.25, "bfloat16"),
    ("512 px, overlap 0.125, float32", 512, 0.125, "float32"),
    ("512 px, overlap 0.125, bf16 channels-last", 512, 0.125, "bfloat16"),
    ("1024 px, overlap 0.0625, bf16 channels-last", 1024, 0.0625, "bfloat16"),
]


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
    args = parser.parse_args()

    import torch

    from s2landcover.models import build_segmentation_model
    from s2landcover.predict import model_from_checkpoint, predict_scene_with_model

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
        rates: dict[str, list[float]] = {label: [] for label, *_ in SETTINGS}
        outputs: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            for label, window, overlap, precision in SETTINGS:
                out = Path(tmp) / "out.tif"
                cfg = {"window": window, "overlap": overlap, "precision": precision}
                started = time.perf_counter()
                predict_scene_with_model(model, meta, scene, out, cfg, device="cpu", progress=False)
                rates[label].append(megapixels / (time.perf_counter() - started))
                with rasterio.open(out) as dst:
                    outputs[label] = dst.read(1)
        reference = SETTINGS[0][0]
        valid = outputs[reference] > 0
        base = statistics.median(rates[reference])
        weights = "trained" if args.checkpoint else "random (agreement not meaningful)"
        print(
            f"scene {args.size} px, {args.threads} threads, weights {weights}, "
            f"median of {args.repeats} interleaved rounds, torch {torch.__version__}\n"
        )
        print("| setting | Mpx/s | x reference | agreement with reference |")
        print("|---|---|---|---|")
        for label, *_ in SETTINGS:
            rate = statistics.median(rates[label])
            agree = (outputs[label] == outputs[reference])[valid].mean()
            print(f"| {label} | {rate:.2f} | {rate / base:.2f} | {100 * agree:.2f} % |")


if __name__ == "__main__":
    main()
