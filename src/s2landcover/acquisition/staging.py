"""The staging folder of a download: assets are fetched there first, beside the output.

``.<name>.download`` beside the output folder ``<name>`` survives a failed run, so the next run
resumes the files in it (:func:`s2landcover.acquisition.http.download_file` resumes partial
files); the leftover cleaning of :mod:`s2landcover.io.atomic` never touches it. When every asset
is there its files are moved into the output being written (same file system: a rename each) and
the folder is removed; a full device removes it too (a full device is not resumed: free it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path


def staging_folder(out_dir: str | Path) -> Path:
    """The staging folder of the output folder ``out_dir``: ``.<name>.download`` beside it."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f".{out_dir.name}.download")


def move_staged_files(staging: str | Path, names: Iterable[str], dest: str | Path) -> None:
    """Move the files ``names`` of ``staging`` into the folder ``dest`` (made if absent)."""
    staging, dest = Path(staging), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.replace(staging / name, dest / name)


def discard_staging(staging: str | Path) -> None:
    """Remove a staging folder and what it holds (nothing when it does not exist)."""
    shutil.rmtree(staging, ignore_errors=True)


__all__ = ["discard_staging", "move_staged_files", "staging_folder"]
