"""Water share per split on the Aberystwyth example, by water-only survival and stratification.

    python docs/benchmarks/sea_split_sweep.py RESULTS   # RESULTS holds chips/size96/aberystwyth/

Runs the package's filter_chips and split_chips (what `s2lc filter` and `s2lc split` run) on the
chip index of the example (`s2lc tile` output) with the example's config, for
filter.water_only_keep_fraction in 0, 0.25, 0.5, 1, split.stratify false/true and split seeds
1, 2, 3, 7, 42; prints chips per split and the water share of each split's valid pixels.
"""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import yaml

from s2landcover.chips import filter_chips
from s2landcover.classes import ClassTable
from s2landcover.config import validate_config
from s2landcover.split import split_chips

logging.disable(logging.WARNING)
results = Path(sys.argv[1])
config = validate_config(yaml.safe_load(Path("config/examples/aberystwyth.yaml").read_text()))
classes = ClassTable.from_config(config["classes"])
index = results / "chips" / "size96" / "aberystwyth" / "index.parquet"
print(
    "stratify survival | chips train val test excluded (mean) | water % train val test (mean; "
    "min train over seeds)"
)
for stratify in (False, True):
    for fraction in (0.0, 0.25, 0.5, 1.0):
        out = results / "sweep" / f"f{fraction}"
        filter_cfg = dict(config["filter"], water_only_keep_fraction=fraction)
        filter_chips([index], out / "selected.parquet", filter_cfg, classes)
        rows = []
        for seed in (1, 2, 3, 7, 42):
            cfg = dict(config["split"], seed=seed, stratify=stratify)
            split_chips(out / "selected.parquet", out / f"s{seed}", cfg, classes)
            summary = json.loads((out / f"s{seed}" / "split_summary.json").read_text())
            counts, shares = summary["counts"], summary["class_pixel_shares"]
            rows.append(
                [counts[s] for s in ("train", "val", "test", "excluded")]
                + [100 * shares[s]["Water"] for s in ("train", "val", "test")]
            )
        a = np.array(rows, dtype=float)
        print(
            f"{stratify!s:5} {fraction:4} | "
            + " ".join(f"{v:4.1f}" for v in a[:, :4].mean(0))
            + " | "
            + " ".join(f"{v:5.2f}" for v in a[:, 4:].mean(0))
            + f"; {a[:, 4].min():.2f}"
        )
