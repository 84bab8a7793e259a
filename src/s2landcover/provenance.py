"""Provenance of an evaluation: what produced the maps that a report scores.

:func:`collect_provenance` gathers, as plain JSON-ready values, the config and its digest, the
versions of the packages that made the products, the git commit of the code (when it runs from a
git checkout), the bands and epochs of the model (``model.pt`` metadata, ``metrics.csv``), the
acquisition dates of the scenes (``DATE`` tag of each scene stack) and the time of each workflow
stage (Snakemake's benchmark files, ``results/benchmarks/{rule}/...tsv``). Missing pieces are
recorded as ``"unknown"`` or left empty; nothing here raises on a missing file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from s2landcover.io.run_records import (
    benchmark_files,
    count_table_rows,
    read_benchmark_seconds,
    read_raster_tags,
)

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
# Distribution name -> label in the report.
PACKAGES = {
    "torch": "torch",
    "segmentation-models-pytorch": "segmentation-models-pytorch (smp)",
    "lightning": "lightning",
    "rasterio": "rasterio",
    "lightgbm": "lightgbm",
    "numpy": "numpy",
}
REPOSITORY = Path(__file__).resolve().parents[2]  # src/s2landcover/ -> the checkout, if any


def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the config as canonical JSON (keys sorted): equal configs, equal digest."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def package_versions() -> dict[str, str]:
    """Installed version of each package of :data:`PACKAGES` and of GDAL (rasterio's)."""
    from s2landcover import __version__

    versions = {"s2landcover": __version__}
    for distribution, label in PACKAGES.items():
        try:
            versions[label] = importlib_metadata.version(distribution)
        except importlib_metadata.PackageNotFoundError:
            versions[label] = "not installed"
    try:
        import rasterio

        versions["GDAL"] = str(rasterio.__gdal_version__)
    except ImportError:
        versions["GDAL"] = "not installed"
    return versions


def git_commit(repository: Path = REPOSITORY) -> str:
    """``git rev-parse HEAD`` of ``repository``, with ``" (uncommitted changes)"`` when its
    working tree differs from it; ``"unknown"`` when it is no git checkout (an installed package:
    no ``.git`` beside ``src/``, so an enclosing repository is never asked) or git is missing."""
    if not (Path(repository) / ".git").exists():
        return UNKNOWN
    try:
        commit = subprocess.run(
            ["git", "-C", str(repository), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repository), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return f"{commit} (uncommitted changes)" if dirty else commit or UNKNOWN


def scene_dates(scenes: Mapping[str, Path]) -> dict[str, str]:
    """Acquisition date of each scene stack (its ``DATE`` tag), ``"unknown"`` when it has none."""
    dates = {}
    for name, path in scenes.items():
        tags = read_raster_tags(path) or {}
        dates[name] = tags.get("DATE") or tags.get("date") or UNKNOWN
    return dates


def model_record(model_dir: Path) -> dict[str, Any]:
    """Bands, best epoch and epochs trained of the model folder (``model.pt`` metadata and the
    rows of ``metrics.csv``); what cannot be read is left out."""
    record: dict[str, Any] = {}
    epochs = count_table_rows(model_dir / "metrics.csv")
    if epochs is not None:
        record["epochs_trained"] = epochs
    model_path = model_dir / "model.pt"
    if model_path.is_file():
        from s2landcover.io.checkpoints import load_model_checkpoint

        try:
            _, meta = load_model_checkpoint(model_path)
        except Exception as error:  # provenance must not stop the report
            log.warning("provenance: cannot read %s: %s", model_path, error)
            return record
        for key in ("architecture", "encoder", "bands", "tile_size"):
            if key in meta:
                record[key] = meta[key]
        if "epoch" in meta:
            record["best_epoch"] = int(meta["epoch"])
    return record


def stage_times(
    benchmarks_dir: Path | None, exclude: tuple[str, ...] = ("evaluate_model",)
) -> list[dict[str, Any]]:
    """Wall-clock seconds of each job with a Snakemake benchmark file under ``benchmarks_dir``
    (``{rule}/{wildcards...}.tsv`` or ``{rule}.tsv``, column ``s``): a list of
    ``{"stage", "job", "seconds"}`` sorted by stage. Empty when the folder does not exist (a run
    outside the workflow). Stages in ``exclude`` are left out (the evaluation itself: its file is
    that of an earlier run)."""
    if benchmarks_dir is None or not Path(benchmarks_dir).is_dir():
        return []
    rows = []
    for path in benchmark_files(benchmarks_dir):
        seconds = read_benchmark_seconds(path)
        if seconds is None:
            continue
        relative = path.relative_to(benchmarks_dir).with_suffix("")
        stage, *job = relative.parts  # {rule}.tsv, or {rule}/{wildcards...}.tsv
        if stage in exclude:
            continue
        rows.append({"stage": stage, "job": "/".join(job), "seconds": seconds})
    return rows


def collect_provenance(
    config: Mapping[str, Any] | None,
    model_dir: str | Path,
    scenes: Mapping[str, Path],
    benchmarks_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The provenance record of an evaluation (the ``provenance`` key of metrics.json).

    Args:
        config: the config sections the evaluation was given (validated), or None.
        model_dir: the model folder (``model.pt``, ``metrics.csv``).
        scenes: scene name -> scene stack GeoTIFF.
        benchmarks_dir: Snakemake's benchmark folder (``results/benchmarks``), or None.
    """
    config = dict(config or {})
    model = model_record(Path(model_dir))
    training = config.get("training", {})
    return {
        "config_sha256": config_digest(config) if config else UNKNOWN,
        "config": config,
        "packages": package_versions(),
        "git_commit": git_commit(),
        "bands": model.get("bands") or config.get("bands") or UNKNOWN,
        "model": model,
        "epochs_configured": training.get("epochs") if isinstance(training, Mapping) else None,
        "scene_dates": scene_dates(scenes),
        "stage_times": stage_times(Path(benchmarks_dir) if benchmarks_dir else None),
    }
