"""Digests of the data a training run depends on, and the check that a model fits its split.

A trained model is stale when anything it was trained on changes: the split table
(``results/splits/size{tile}/split.parquet``), a chip store of a scene in it
(``results/chips/size{tile}/{scene}/``: ``meta.json``, ``index.parquet``, ``images.npy``,
``masks.npy``) or the class table. :func:`data_fingerprint` hashes all of them (SHA-256 of each
file's bytes; the class table as canonical JSON) into one digest. The resumable training state
(``last.ckpt``) stores it, so that training started again after any upstream change starts afresh
instead of "resuming" a finished run; ``model.pt`` records it (metadata ``training_data``), so that
evaluation can refuse a model trained on another split (:func:`check_model_training_data`).

Cost: hashing reads every byte of the chip stores once (about 1 GB/s on one core). A fresh start
always hashes; a resumed run reuses the hashes stored in ``last.ckpt`` for files whose size and
modification time (ns) have not changed since, so resuming costs a ``stat`` per file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from s2landcover.errors import InputError
from s2landcover.io.file_hashes import file_sha256

log = logging.getLogger(__name__)

CHIP_STORE_FILES = ("meta.json", "index.parquet", "images.npy", "masks.npy")
SPLIT_KEY = "split"
CLASSES_KEY = "classes"


def classes_sha256(classes: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a class table (``ClassTable.to_dict()``) as canonical JSON."""
    return hashlib.sha256(json.dumps(dict(classes), sort_keys=True).encode()).hexdigest()


def _file_record(path: Path, known: Mapping[str, Any] | None) -> dict[str, Any]:
    """{size, mtime_ns, sha256} of a file; the known hash is reused when size and mtime match."""
    if not path.is_file():
        raise InputError(f"training input {path} does not exist")
    stat = path.stat()
    if known and known.get("size") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns:
        sha = str(known["sha256"])
    else:
        sha = file_sha256(path)
    return {"size": int(stat.st_size), "mtime_ns": int(stat.st_mtime_ns), "sha256": sha}


def data_fingerprint(
    split_path: str | Path,
    chips_root: str | Path,
    scenes: Iterable[str],
    classes: Mapping[str, Any],
    known: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The digest of a training run's data and the per-file records it was made of.

    Args:
        split_path: the split table.
        chips_root: folder of the chip stores (``chips_root / scene``).
        scenes: the scenes of the split table.
        classes: the class table (``ClassTable.to_dict()``).
        known: records of an earlier call (from ``last.ckpt``): their hashes are reused for files
            whose size and modification time are unchanged.

    Returns:
        (digest, records): a 16-hex-digit digest of everything, and per key (``split``,
        ``classes``, ``{scene}/{file}``) the record ``{size, mtime_ns, sha256}`` (``classes``:
        ``{sha256}`` only). Keys are relative, so a moved results folder keeps its digest.
    """
    known = known or {}
    records: dict[str, Any] = {SPLIT_KEY: _file_record(Path(split_path), known.get(SPLIT_KEY))}
    for scene in sorted(set(scenes)):
        for name in CHIP_STORE_FILES:
            key = f"{scene}/{name}"
            records[key] = _file_record(Path(chips_root) / scene / name, known.get(key))
    records[CLASSES_KEY] = {"sha256": classes_sha256(classes)}
    content = {key: record["sha256"] for key, record in records.items()}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    return digest, records


def training_data_metadata(digest: str, records: Mapping[str, Any]) -> dict[str, Any]:
    """What ``model.pt`` records of its training data (plain JSON): digest, split, classes."""
    return {
        "digest": digest,
        "split_sha256": records[SPLIT_KEY]["sha256"],
        "classes_sha256": records[CLASSES_KEY]["sha256"],
    }


def check_model_training_data(
    model_path: str | Path, split_path: str | Path, classes: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Check that the model at ``model_path`` was trained on the split table at ``split_path``.

    Returns a plain record for reports: ``status`` is ``"match"`` (same split table and class
    table), or ``"unknown"`` (no model.pt, or one written before models recorded their data; a
    warning is logged), with the digests compared.

    Raises:
        InputError: when the model was trained on another split table (or class table): scoring it
            on this split would mix its training chips into the validation areas.
    """
    from s2landcover.io.checkpoints import load_model_checkpoint

    model_path, split_path = Path(model_path), Path(split_path)
    split_sha = file_sha256(split_path)
    record: dict[str, Any] = {"model": str(model_path), "split_sha256": split_sha}
    if not model_path.is_file():
        log.warning("no %s: cannot check which split the model was trained on", model_path)
        return {**record, "status": "unknown"}
    _, metadata = load_model_checkpoint(model_path)
    trained = metadata.get("training_data")
    if not isinstance(trained, Mapping) or "split_sha256" not in trained:
        log.warning(
            "%s does not record its training data (older model): cannot check that it was "
            "trained on %s",
            model_path,
            split_path,
        )
        return {**record, "status": "unknown"}
    record.update(training_data_digest=trained.get("digest"))
    if trained["split_sha256"] != split_sha:
        raise InputError(
            f"model {model_path} was trained on another split table than {split_path} "
            f"(split SHA-256 {str(trained['split_sha256'])[:12]}... at training, "
            f"{split_sha[:12]}... now): its training chips may lie in this split's validation "
            "areas. Train the model again on this split (Snakemake re-runs train_model when "
            "split.parquet changes)"
        )
    if classes is not None and trained.get("classes_sha256") not in (None, classes_sha256(classes)):
        raise InputError(
            f"model {model_path} was trained with another class table than the configured one; "
            "train the model again with the configured classes"
        )
    return {**record, "status": "match"}
