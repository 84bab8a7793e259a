"""What the seasons buy: one date alone, both dates pooled, both dates stacked, on the same area and
the same held-out blocks (docs/benchmarks/seasons.md).

Makes the demo area (``--size`` 10 m pixels a side, its 1 m map 10 x finer) at two dates (April
and August by default; the demo's spectra are seasonal: crops, grass and deciduous forest change,
water, built-up and bare soil do not), ingests both, brings the map onto their (shared) grid, and
stacks them (:func:`s2landcover.dates.write_stack`, dated band names). All three inputs are tiled
the same way; one spatial-block split (blocks with a buffer, ``split.method: blocks``) of the
April chips decides, by chip window, which chips are trained on and which are held out for every
case, so all cases are scored on the same pixels:

- ``single <date>``: a U-Net trained on the first date's chips, scored on its held-out chips
  (``--both-singles``: the second date's too);
- ``pooled``: one U-Net trained on both dates' chips as separate samples (the seeds' way), scored
  on each date's held-out chips;
- ``stacked``: one U-Net trained on the stacked chips (bands x dates as channels), scored on the
  stack's held-out chips.

Every model has the same encoder, epochs, batch size and seed (pooled sees twice the chips per
epoch). Scores: per-class IoU and mIoU (:func:`s2landcover.evaluate.metrics_from_confusion`) of
the whole-scene prediction (:func:`s2landcover.predict.predict_scene`) inside the held-out chips.
Writes a Markdown table (``--out``) and prints it::

    python benchmarks/bench_seasons.py --size 600 --tile 64 --epochs 10 --out seasons_table.md
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_DATES = ("2024-04-15", "2024-08-20")


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    from s2landcover.config import validate_config

    return validate_config(
        {
            "scenes": [
                {"name": f"d{i}", "date": date, "source": {"type": "demo"}, "role": "both"}
                for i, date in enumerate(args.dates)
            ],
            "demo": {"size": args.size, "mask_factor": 10, "seed": args.seed},
            "bands": list(args.bands),
            "tile_size": args.tile,
            "split": {
                "method": "blocks",
                "fractions": {"train": 0.7, "val": 0.3, "test": 0.0},
                "seed": args.seed,
            },
            "model": {"name": "bench", "architecture": "Unet", "encoder": args.encoder},
            "training": {
                "epochs": args.epochs,
                "batch_size": args.batch,
                "num_workers": 0,
                "seed": args.seed,
            },
            "prediction": {"batch_size": args.batch},
            "validity": {"source": "none"},
        },
        source="bench_seasons",
    )


def prepare(work: Path, config: dict[str, Any], threads: int) -> dict[str, Path]:
    """Demo map, the dated scenes, the mask, the stack: name -> scene path (and 'mask')."""
    from s2landcover.classes import ClassTable
    from s2landcover.dates import write_stack
    from s2landcover.demo import make_demo_landcover, make_demo_scene
    from s2landcover.ingest import ingest_scene
    from s2landcover.masks import downsample_mask

    classes = ClassTable.from_config(config["classes"])
    landcover = work / "landcover_1m.tif"
    make_demo_landcover(landcover, config["demo"])
    paths: dict[str, Path] = {}
    for scene in config["scenes"]:
        safe = work / f"{scene['name']}.SAFE"
        make_demo_scene(
            safe, landcover, config["demo"], scene["name"], scene["date"], config["bands"]
        )
        paths[scene["name"]] = work / f"{scene['name']}.tif"
        ingest_scene(
            {"type": "demo", "path": str(safe)},
            config["bands"],
            paths[scene["name"]],
            config["ingest"],
            threads=threads,
        )
    paths["mask"] = work / "mask.tif"
    first = paths[config["scenes"][0]["name"]]
    downsample_mask(
        landcover, first, paths["mask"], classes, config["mask"], threads=threads, progress=False
    )
    names = [s["name"] for s in config["scenes"]]
    paths["stacked"] = work / "stacked.tif"
    write_stack([paths[n] for n in names], [s["date"] for s in config["scenes"]], paths["stacked"])
    return paths


def tile_all(work: Path, paths: dict[str, Path], inputs: list[str], config: dict[str, Any]) -> Path:
    from s2landcover.chips import tile_scene
    from s2landcover.classes import ClassTable

    classes = ClassTable.from_config(config["classes"])
    root = work / "chips"
    for name in inputs:
        tile_scene(
            paths[name],
            paths["mask"],
            name,
            root / name,
            config["tile_size"],
            config["chips"],
            classes,
        )
    return root


def block_split(work: Path, root: Path, first: str, config: dict[str, Any]) -> pd.DataFrame:
    """The spatial-block split of the first date's chips: (row_off, col_off) -> split."""
    from s2landcover.chips import filter_chips
    from s2landcover.classes import ClassTable
    from s2landcover.io.chipstore import read_chip_index
    from s2landcover.split import split_chips

    classes = ClassTable.from_config(config["classes"])
    selected = work / "selected.parquet"
    filter_chips([root / first / "index.parquet"], selected, config["filter"], classes)
    split_chips(selected, work / "split", config["split"], classes)
    table = read_chip_index(work / "split/split.parquet")
    return table[["row_off", "col_off", "split"]]


def split_for(root: Path, names: list[str], windows: pd.DataFrame, out: Path) -> Path:
    """A split table of the chips of ``names`` with the split of their window."""
    from s2landcover.io.chipstore import read_chip_index

    parts = []
    for name in names:
        index = read_chip_index(root / name / "index.parquet")
        merged = index.merge(windows, on=["row_off", "col_off"], how="inner")
        parts.append(merged)
    table = pd.concat(parts, ignore_index=True)
    table = table[table["split"].isin(["train", "val"])].reset_index(drop=True)
    table.to_parquet(out)
    return out


def held_out_scores(
    prediction: Path, mask: Path, windows: pd.DataFrame, tile: int, class_names: list[str]
) -> dict[str, Any]:
    """Per-class IoU and mIoU of ``prediction`` against ``mask`` inside the held-out chips."""
    import rasterio
    from rasterio.windows import Window

    from s2landcover.evaluate import confusion_matrix, metrics_from_confusion

    held = windows[windows["split"] == "val"]
    matrix = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
    with rasterio.open(prediction) as pred, rasterio.open(mask) as ref:
        for row, col in zip(held["row_off"], held["col_off"], strict=True):
            window = Window(int(col), int(row), tile, tile)
            matrix += confusion_matrix(
                ref.read(1, window=window), pred.read(1, window=window), len(class_names)
            )
    return metrics_from_confusion(matrix, class_names)


def run_case(
    work: Path,
    label: str,
    train_names: list[str],
    score_names: list[str],
    root: Path,
    windows: pd.DataFrame,
    paths: dict[str, Path],
    config: dict[str, Any],
    bands: list[str],
    threads: int,
) -> list[dict[str, Any]]:
    from s2landcover.predict import predict_scene
    from s2landcover.training.train import train_model

    case_dir = work / label.replace(" ", "_")
    case_dir.mkdir()
    split = split_for(root, train_names, windows, case_dir / "split.parquet")
    case_config = {**config, "bands": bands}
    started = time.perf_counter()
    summary = train_model(
        split, root, case_dir / "model", case_config, accelerator="cpu", progress=False
    )
    train_s = time.perf_counter() - started
    names = [c["name"] for c in config["classes"]]
    rows = []
    for name in score_names:
        out = case_dir / f"{name}.tif"
        predict_scene(
            case_dir / "model/model.pt",
            paths[name],
            out,
            config["prediction"],
            device="cpu",
            threads=threads,
            progress=False,
        )
        scores = held_out_scores(out, paths["mask"], windows, config["tile_size"], names)
        rows.append(
            {
                "case": label,
                "scored_on": name,
                "train_chips": int((pd.read_parquet(split)["split"] == "train").sum()),
                "train_s": round(train_s, 1),
                "best_val_miou": summary.get("best_val_miou"),
                "scores": scores,
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> str:
    names = list(rows[0]["scores"]["per_class"]) if rows else []
    head = "| case | scored on | train chips | mIoU | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (4 + len(names))]
    for row in rows:
        iou = {n: c["iou"] for n, c in row["scores"]["per_class"].items()}
        cells = ["-" if np.isnan(iou[n]) else f"{iou[n]:.3f}" for n in names]
        lines.append(
            f"| {row['case']} | {row['scored_on']} | {row['train_chips']} | "
            f"{row['scores']['miou']:.3f} | " + " | ".join(cells) + " |"
        )
    command = "python benchmarks/bench_seasons.py " + " ".join(sys.argv[1:])
    return (
        "\n".join(lines)
        + f"\n\nCommand: `{command}`; dates {', '.join(args.dates)}; demo {args.size} px, tile "
        f"{args.tile}, bands {', '.join(args.bands)}, U-Net {args.encoder}, {args.epochs} epochs, "
        f"batch {args.batch}, seed {args.seed}; {platform.processor() or platform.machine()}, "
        f"{seconds / 60:.1f} min in all.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=600, help="demo side in 10 m pixels")
    parser.add_argument("--tile", type=int, default=64, help="chip side in pixels")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--bands", nargs="+", default=["B02", "B03", "B04", "B08"])
    parser.add_argument("--dates", nargs=2, default=list(DEFAULT_DATES))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--both-singles", action="store_true", help="also the second date alone (one more model)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", help="work folder (default: a temporary one)")
    parser.add_argument("--out", help="write the Markdown table here")
    parser.add_argument("--json", help="write every score here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        config = build_config(args)
        first, second = (s["name"] for s in config["scenes"])
        paths = prepare(work, config, args.threads)
        root = tile_all(work, paths, [first, second, "stacked"], config)
        windows = block_split(work, root, first, config)
        from s2landcover.config import dated_band_names

        plain = list(config["bands"])
        dated = dated_band_names(args.dates, plain)
        common = (root, windows, paths, config)
        cases = [
            (f"single {args.dates[0]}", [first], [first], plain),
            ("pooled", [first, second], [first, second], plain),
            ("stacked", ["stacked"], ["stacked"], dated),
        ]
        if args.both_singles:
            cases.insert(1, (f"single {args.dates[1]}", [second], [second], plain))
        dates = dict(zip((first, second), args.dates, strict=True))
        rows: list[dict[str, Any]] = []
        for label, train, score, bands in cases:
            new = run_case(work, label, train, score, *common, bands, args.threads)
            for row in new:
                row["scored_on"] = dates.get(row["scored_on"], "both (stack)")
            rows += new
            print(f"{label}: done after {time.perf_counter() - started:.0f} s", file=sys.stderr)
            # The table so far, after each case: a long run killed midway keeps what it measured.
            table = markdown(rows, args, time.perf_counter() - started)
            if args.out:
                Path(args.out).write_text(table)
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=1, default=float))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
