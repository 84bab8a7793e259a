"""The model checkpoint: weights plus everything prediction needs, loadable without pickle.

A checkpoint is a ``torch.save`` file holding only tensors and plain JSON-able values, read back
with ``torch.load(..., weights_only=True)`` so that opening a file never runs code from it::

    {"format": "s2landcover-model", "version": 2,
     "state_dict": {name: tensor}, "metadata": {...}, "weights_sha256": str}

``weights_sha256`` (:func:`weights_sha256`: names, dtypes, shapes and raw bytes of every tensor)
is checked on load, so a file damaged on disk or in transit (bit rot, a truncated copy) fails
with a clear error instead of predicting something else. Version 1 files (no checksum) still
load, with a warning.

``metadata`` (see :data:`REQUIRED_METADATA`) holds the task, architecture, encoder, band names in
order, the scene stack's scale and offset per band, normalisation mean and std (of reflectance, per
band, from the training split), the class table, the tile size and the pixel size in metres.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from s2landcover.errors import InputError
from s2landcover.io.rasters import atomic_path

CHECKPOINT_FORMAT = "s2landcover-model"
CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: no weights checksum

log = logging.getLogger(__name__)
REQUIRED_METADATA = (
    "task",  # "segmentation" or "classification"
    "architecture",
    "encoder",
    "bands",  # list of band names, model input order
    "scales",  # stored value -> reflectance, per band
    "offsets",
    "mean",  # reflectance normalisation, per band
    "std",
    "classes",  # ClassTable.to_dict()
    "tile_size",  # training chip side in pixels
    "resolution",  # pixel size in metres
)


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a state dict: per tensor (sorted by name) its name, dtype, shape, bytes."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model_checkpoint(
    path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]
) -> None:
    """Write a checkpoint atomically (a temporary file renamed at the end)."""
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ValueError(f"checkpoint metadata lacks {missing}")
    tensors = {k: v.detach().cpu() for k, v in state_dict.items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "state_dict": tensors,
        "metadata": metadata,
        "weights_sha256": weights_sha256(tensors),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_model_checkpoint`: (state_dict, metadata).

    Raises:
        InputError: when the file is missing, corrupt (including weights that do not match their
            checksum), or not a checkpoint of this project.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(
            f"checkpoint {path} cannot be read (corrupt or not a torch file): {error}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            f"checkpoint {path} is not an s2landcover model "
            f"(expected format {CHECKPOINT_FORMAT!r}); "
            "use the model.pt written by train_model"
        )
    if payload.get("version") not in READABLE_VERSIONS:
        raise InputError(
            f"checkpoint {path} has version {payload.get('version')}, expected one of "
            f"{list(READABLE_VERSIONS)}"
        )
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise InputError(f"checkpoint {path} holds no weights (state_dict of tensors)")
    expected = payload.get("weights_sha256")
    if expected is None:
        if payload["version"] >= 2:
            raise InputError(f"checkpoint {path} lacks the checksum of its weights")
        log.warning("checkpoint %s (version 1) carries no weights checksum: not verified", path)
    elif weights_sha256(state_dict) != expected:
        raise InputError(
            f"checkpoint {path} is corrupt: its weights do not match their SHA-256 checksum "
            f"(stored {str(expected)[:12]}...); the file was damaged after training. "
            "Copy it again or train again"
        )
    metadata = payload.get("metadata", {})
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise InputError(f"checkpoint {path} lacks metadata {missing}")
    return state_dict, metadata
