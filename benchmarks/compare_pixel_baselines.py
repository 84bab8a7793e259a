"""The random forest of issue 19 beside the pixel baseline, on the chips and split of a run.

Issue 19 measured a scikit-learn random forest (100 trees, 60,000 pixels from the training chips,
the 10 bands) on the Aberystwyth test chips. This script repeats that recipe on the chips and split
that the ``s2lc`` stages wrote (see docs/benchmarks/training.md, section d) and prints the test-area
mIoU, overall accuracy and IoU per class for each variant of sampling and features::

    python benchmarks/compare_pixel_baselines.py --results /tmp/aber --tile 96 --scene aberystwyth \
        --config config/examples/aberystwyth.yaml
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import rasterio
from rasterio.windows import Window
from sklearn.ensemble import RandomForestClassifier

from s2landcover import evaluate as ev
from s2landcover import pixel_model as pm
from s2landcover.classes import ClassTable
from s2landcover.config import load_config
from s2landcover.io import evaluation_io as eio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True, help="results folder of the s2lc stages")
    parser.add_argument("--tile", type=int, required=True)
    parser.add_argument("--scene", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--samples", type=int, default=60000)
    args = parser.parse_args()
    config = load_config(args.config)
    bands = list(config["bands"])
    classes = ClassTable.from_config(config["classes"])
    names = list(classes.names)
    root = args.results
    split = eio.read_split_table(f"{root}/splits/size{args.tile}/split.parquet")
    train = split[split["split"] == "train"]
    with rasterio.open(f"{root}/scenes/{args.scene}.tif") as src:
        stored, scales, offsets = src.read(), src.scales, src.offsets
    with rasterio.open(f"{root}/masks/{args.scene}.tif") as src:
        reference = src.read(1)
    height, width = reference.shape
    features_all = pm.pixel_features(
        pm.stored_to_reflectance(stored.reshape(len(bands), -1), scales, offsets), bands
    )
    chips = {"test": ev.chip_windows(split, args.scene, "test")}
    for sampling, count in (
        ("proportional", len(bands)),
        ("balanced", len(bands)),
        ("balanced", None),
    ):
        x, y = pm.sample_pixels(
            train, f"{root}/chips/size{args.tile}", bands, classes.num_classes, args.samples,
            sampling, 42,
        )  # fmt: skip
        count = count or x.shape[1]
        started = time.perf_counter()
        forest = RandomForestClassifier(100, n_jobs=-1, random_state=0).fit(x[:, :count], y)
        fit = time.perf_counter() - started
        started = time.perf_counter()
        prediction = forest.predict(features_all[:, :count]).reshape(height, width)
        predict = time.perf_counter() - started
        totals = ev.accumulate_area_counts(
            [(Window(0, 0, width, height), reference, prediction.astype(np.uint8))],
            chips,
            classes.num_classes,
        )
        test = ev.area_metrics(totals["test"], names)
        per_class = {n: round(v["iou"], 3) for n, v in test["per_class"].items()}
        print(
            f"random forest, {sampling} sample of {len(y)} px, {count} features: test mIoU "
            f"{test['miou']:.3f}, accuracy {test['overall_accuracy']:.3f}, IoU {per_class}; "
            f"fit {fit:.1f} s, predict {predict:.1f} s"
        )


if __name__ == "__main__":
    main()
