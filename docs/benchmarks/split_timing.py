"""Time of split_chips, plain and class-aware, on synthetic Sentinel-2 tiles (no pixels).

    PYTHONPATH=src:tests python docs/benchmarks/split_timing.py N   # N tiles over the same ground

Each tile is 10,980 x 10,980 px cut in 256 px chips (1,849 chips) with the sea along its west
edge and land classes in 2,560 px squares; blocks of 2 chips, buffer 1, fractions 0.6/0.2/0.2.
"""

import logging
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from s2landcover.split import split_chips
from test_split import CLASSES, CONFIG, chip_table

logging.disable(logging.WARNING)


def classes_of(r: int, c: int) -> dict[int, int]:
    if c < 2000:
        return {6: 65536}
    k = 1 + (r // 2560 + c // 2560) % 5
    return {k: 40000, 6 if r > 9000 else 2: 25536}


n = int(sys.argv[1])
table = pd.concat(
    [chip_table(f"s{i}", 10980, 10980, 256, 256, classes_of=classes_of) for i in range(n)],
    ignore_index=True,
)
folder = Path(tempfile.mkdtemp())
table.to_parquet(folder / "selected.parquet")
fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
for stratify in (False, True):
    started = time.perf_counter()
    cfg = dict(CONFIG["split"], stratify=stratify, fractions=fractions)
    result = split_chips(folder / "selected.parquet", folder / "out", cfg, CLASSES)
    print(
        f"{len(table)} chips, stratify {stratify}: {time.perf_counter() - started:.1f} s, "
        f"{result['counts']}"
    )
