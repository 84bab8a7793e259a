"""Training memory and speed: peak RSS / PSS of ``train_model`` (summed over its loader workers)
beside chips/s, for variants of the ``training`` section, run interleaved.

Each run is ``train_model`` on an existing split and chip stores (for example those of a default
pipeline run) in a fresh child process, into a scratch model folder. The parent polls the child's
process tree every ``--interval`` seconds (psutil): the sum of RSS over the child and its loader
workers (what Snakemake's benchmark file calls ``max_rss``; shared pages count once per process),
the sum of PSS (shared pages split between the processes that map them: the memory really used),
and the RSS of the main process alone. chips/s is training samples (epochs x samples per epoch)
per second of the whole ``train_model`` call, validation and setup included.

Variants run round-robin (``--repeat`` rounds), so that a change of machine load hits every variant
alike; the table gives per variant the median of its runs::

    python benchmarks/bench_training_memory.py \\
        --split results/splits/size300/split.parquet --chips-root results/chips/size300 \\
        --epochs 3 --repeat 2 \\
        --variant 'before={"num_workers": 2, "precision": "float32", "layout": "contiguous"}' \\
        --variant 'after={}'

Prints a Markdown table and writes the raw runs as JSON lines to ``--out``/runs.jsonl.
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
from typing import Any

MIB = 1024 * 1024


def child_main(args: argparse.Namespace) -> None:
    """Run train_model with the given overrides; print one JSON line (summary + seconds)."""
    from s2landcover.config import validate_config
    from s2landcover.training.train import train_model

    config = json.loads(Path(args.config_file).read_text()) if args.config_file else {}
    overrides = json.loads(args.child)
    config.setdefault("training", {}).update(overrides)
    config["training"]["keep_checkpoints"] = False
    config = validate_config(config)
    start = time.perf_counter()
    summary = train_model(args.split, args.chips_root, args.model_dir, config, progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, **summary}, default=str))


def tree_memory(pid: int) -> tuple[float, float, float, int]:
    """(sum RSS, sum PSS, main RSS) in MiB and the process count of ``pid``'s tree."""
    import psutil

    try:
        main = psutil.Process(pid)
        processes = [main, *main.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0.0, 0.0, 0
    rss = pss = main_rss = 0.0
    for process in processes:
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", 0)
        if process.pid == pid:
            main_rss = info.rss
    return rss / MIB, pss / MIB, main_rss / MIB, len(processes)


def run_variant(
    name: str, overrides: dict[str, Any], args: argparse.Namespace, scratch: Path, run: int
) -> dict[str, Any]:
    """One child run of train_model under memory polling."""
    model_dir = scratch / f"{name}_{run}"
    overrides = {"epochs": args.epochs, **overrides}
    command = [
        sys.executable,
        __file__,
        "--child",
        json.dumps(overrides),
        "--split",
        args.split,
        "--chips-root",
        args.chips_root,
        "--model-dir",
        str(model_dir),
    ]
    if args.config:
        command += ["--config-file", args.config]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_rss = peak_pss = peak_main = 0.0
    peak_procs = 0
    while child.poll() is None:
        rss, pss, main_rss, procs = tree_memory(child.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        peak_main, peak_procs = max(peak_main, main_rss), max(peak_procs, procs)
        time.sleep(args.interval)
    out, err = child.communicate()
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(f"variant {name} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    per_epoch = overrides.get("steps_per_epoch")
    batch = int(overrides.get("batch_size", args.batch_size))
    per_epoch_samples = result["train_chips"] if per_epoch is None else int(per_epoch) * batch
    samples = result["epochs_completed"] * per_epoch_samples
    return {
        "variant": name,
        "run": run,
        "overrides": overrides,
        "load_before": load,
        "wall_s": wall,
        "train_model_s": result["seconds"],
        "chips_per_s": samples / result["seconds"],
        "peak_tree_rss_mib": peak_rss,
        "peak_tree_pss_mib": peak_pss,
        "peak_main_rss_mib": peak_main,
        "processes": peak_procs,
        "best_val_miou": result.get("best_val_miou"),
        "best_epoch": result.get("best_epoch"),
        "precision": result.get("precision"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", required=True, help="split.parquet of a pipeline run")
    parser.add_argument("--chips-root", required=True, help="results/chips/size{tile}")
    parser.add_argument("--config", help="JSON file of a config (default: schema defaults)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1, help="rounds over the variants")
    parser.add_argument(
        "--batch-size", type=int, default=4, help="the config's batch size (for chips/s)"
    )
    parser.add_argument("--interval", type=float, default=0.1, help="polling interval, s")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=JSON of training overrides (e.g. 'w0={\"num_workers\": 0}')",
    )
    parser.add_argument("--out", help="folder for runs.jsonl and the scratch model folders")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--config-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child_main(args)
        return
    variants = [(v.split("=", 1)[0], json.loads(v.split("=", 1)[1])) for v in args.variant]
    variants = variants or [("default", {})]
    out = Path(args.out or tempfile.mkdtemp(prefix="train_memory_"))
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    for run in range(args.repeat):
        for name, overrides in variants:
            record = run_variant(name, overrides, args, out, run)
            runs.append(record)
            with open(out / "runs.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(json.dumps(record), file=sys.stderr, flush=True)
    print(
        "| variant | runs | chips/s | train_model s | peak RSS, tree (MiB) | peak PSS, tree (MiB) "
        "| peak RSS, main (MiB) | processes | best val mIoU |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, _ in variants:
        mine = [r for r in runs if r["variant"] == name]

        def med(key: str, mine: list[dict[str, Any]] = mine) -> float:
            return statistics.median(r[key] for r in mine)

        mious = ", ".join(f"{r['best_val_miou']:.3f}" for r in mine)
        print(
            f"| {name} | {len(mine)} | {med('chips_per_s'):.2f} | {med('train_model_s'):.0f} "
            f"| {med('peak_tree_rss_mib'):.0f} | {med('peak_tree_pss_mib'):.0f} "
            f"| {med('peak_main_rss_mib'):.0f} | {max(r['processes'] for r in mine)} | {mious} |"
        )


if __name__ == "__main__":
    main()
