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
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from s2landcover.errors import InputError
from s2landcover.io.rasters import atomic_path

if TYPE_CHECKING:
    import pandas as pd

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


# --- other files of a model folder ---------------------------------------------------------------
# The model folder (results/models/size{tile}/{model}/) holds model.pt, the resumable training
# state last.ckpt, best.pt while training runs, and metrics.csv; their file operations live here.


def save_tensor_file(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tensors and plain containers only) with ``torch.save``, atomically."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_tensor_file(path: str | Path) -> Any:
    """Read a file written by ``torch.save`` without unpickling code (``weights_only=True``), onto
    the CPU. Errors (missing, corrupt, unsafe content) are the caller's to report."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_encoder_state(path: str | Path) -> dict[str, Any]:
    """The tensors of a local encoder weights file (``.safetensors``, or a ``.pth``/``.pt`` state
    dict read with ``weights_only=True``); a ``{"state_dict": ...}`` wrapper is unwrapped.

    Raises:
        InputError: the file is missing or cannot be read (names the setting
            ``model.encoder_weights`` and the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model.encoder_weights: file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = load_tensor_file(path)
    except Exception as error:
        raise InputError(f"model.encoder_weights: cannot read {path}: {error}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(
            f"model.encoder_weights: {path} holds no state dict (a mapping of tensor names to "
            f"tensors), but a {type(state).__name__}"
        )
    return state


def publish_checkpoint(source: str | Path, final: str | Path) -> None:
    """Copy ``source`` (``best.pt``) to ``final`` (``model.pt``) atomically."""
    with atomic_path(final) as tmp:
        shutil.copyfile(source, tmp)


def remove_checkpoints(paths: Iterable[str | Path]) -> None:
    """Delete model-folder files (stale or finished checkpoints); missing ones are skipped."""
    for path in paths:
        Path(path).unlink(missing_ok=True)


def write_training_metrics(path: str | Path, table: pd.DataFrame) -> None:
    """Write the per-epoch (or per-round) training metrics table as CSV (6 significant digits),
    atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
