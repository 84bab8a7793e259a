"""The records a run leaves behind, read back for its provenance and its closing summary.

Scene stack tags (``DATE``), the rows of a training ``metrics.csv``, Snakemake's benchmark files
(``results/benchmarks/{rule}/...tsv``, tab-separated, column ``s``: wall-clock seconds) and an
evaluation's ``metrics.json``. A missing or unreadable record is ``None`` here, never an error:
provenance and summaries describe a run, they must not stop it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_raster_tags(path: str | Path) -> dict[str, str] | None:
    """The dataset tags of a raster (``None`` when it cannot be opened)."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        with rasterio.open(path) as src:
            return dict(src.tags())
    except RasterioIOError:
        return None


def count_table_rows(path: str | Path) -> int | None:
    """Rows of a CSV table with a header (``None`` when missing, empty or not a table)."""
    path = Path(path)
    if not path.is_file():
        return None
    import pandas as pd

    try:
        return len(pd.read_csv(path))
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError):
        return None


def benchmark_files(folder: str | Path) -> list[Path]:
    """Snakemake benchmark files (``*.tsv``) under ``folder``, sorted; empty when it is absent."""
    folder = Path(folder)
    return sorted(folder.rglob("*.tsv")) if folder.is_dir() else []


def read_benchmark_seconds(path: str | Path) -> float | None:
    """Wall-clock seconds (column ``s``, first row) of a Snakemake benchmark file, or ``None``."""
    try:
        header, values = Path(path).read_text(encoding="utf-8").splitlines()[:2]
        return float(dict(zip(header.split("\t"), values.split("\t"), strict=False))["s"])
    except (ValueError, KeyError, OSError):
        return None


def read_json_record(path: str | Path) -> Any | None:
    """The content of a JSON file (``None`` when missing or not JSON)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


__all__ = [
    "benchmark_files",
    "count_table_rows",
    "read_benchmark_seconds",
    "read_json_record",
    "read_raster_tags",
]
