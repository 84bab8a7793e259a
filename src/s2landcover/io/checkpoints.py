"""The model checkpoint: weights plus everything prediction needs, loadable without pickle.

A checkpoint is a ``torch.save`` file holding only tensors and plain JSON-able values, read back
with ``torch.load(..., weights_only=True)`` so that opening a file never runs code from it::

    {"format": "s2landcover-model", "version": 1,
     "state_dict": {name: tensor}, "metadata": {...}}

``metadata`` (see :data:`REQUIRED_METADATA`) holds the task, architecture, encoder, band names in
order, the scene stack's scale and offset per band, normalisation mean and std (of reflectance, per
band, from the training split), the class table, the tile size and the pixel size in metres.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from s2landcover.errors import InputError
from s2landcover.io.rasters import atomic_path

CHECKPOINT_FORMAT = "s2landcover-model"
CHECKPOINT_VERSION = 1
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


def save_model_checkpoint(
    path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]
) -> None:
    """Write a checkpoint atomically (a temporary file renamed at the end)."""
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ValueError(f"checkpoint metadata lacks {missing}")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "metadata": metadata,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_model_checkpoint`: (state_dict, metadata).

    Raises:
        InputError: when the file is missing, corrupt, or not a checkpoint of this project.
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
    if payload.get("version") != CHECKPOINT_VERSION:
        raise InputError(
            f"checkpoint {path} has version {payload.get('version')}, expected {CHECKPOINT_VERSION}"
        )
    metadata = payload.get("metadata", {})
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise InputError(f"checkpoint {path} lacks metadata {missing}")
    return payload["state_dict"], metadata
