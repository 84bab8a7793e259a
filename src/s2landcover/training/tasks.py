"""What differs between learning tasks on the same chips: the network head, the target, the counts.

The training machinery (data module, LightningModule, losses, metrics, checkpoints, resume) is
shared; a task object only answers the questions below, so that chip classification
(``task: classification``) plugs in as a second :class:`Task` implementation instead of a second
copy of the machinery:

- ``build_model``: the network for ``in_channels`` bands and ``num_classes`` classes (logit channel
  ``i`` is class ``i + 1``).
- ``chip_targets``: per-chip targets (class positions ``0..K-1``) for chip-level tasks, or None
  when the target is the chip's mask (segmentation: pixels of class 0 become :data:`IGNORE_INDEX`).
- ``class_counts``: counts per class on the training split (pixels or chips) for class weights.
- ``monitor``: the validation metric that selects the best checkpoint and drives early stopping.

The metrics are the same for every task: one multiclass confusion matrix over the K classes, from
which IoU, F1, precision, recall and accuracy follow, whether its entries count pixels or chips.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
from torch import nn

from s2landcover.errors import InputError
from s2landcover.models import build_segmentation_model


class Task(Protocol):
    """The task-specific part of training (see the module docstring)."""

    name: str
    monitor: str

    def build_model(
        self, model_config: Mapping[str, Any], in_channels: int, num_classes: int
    ) -> nn.Module:
        """The network, logits (N, K, ...) for inputs (N, in_channels, H, W)."""
        ...

    def chip_targets(self, chip_index: pd.DataFrame, num_classes: int) -> np.ndarray | None:
        """Per-chip class positions (int64, -1 = leave out), or None for per-pixel targets."""
        ...

    def class_counts(self, chip_index: pd.DataFrame, num_classes: int) -> np.ndarray:
        """Counts per class 1..K on the given chips (the training split), for class weights."""
        ...


def pixel_counts(chip_index: pd.DataFrame, num_classes: int) -> np.ndarray:
    """Pixels per class 1..K summed over chips, from the chip index columns ``px_1..px_K``."""
    columns = [f"px_{k}" for k in range(1, num_classes + 1)]
    missing = [c for c in columns if c not in chip_index.columns]
    if missing:
        raise InputError(
            f"the chip index lacks the pixel count columns {missing} "
            f"(expected px_0..px_{num_classes} "
            "for the configured classes); re-run tiling with this class table"
        )
    return chip_index[columns].to_numpy(dtype=np.float64).sum(axis=0)


@dataclass(frozen=True)
class SegmentationTask:
    """One class per pixel: an smp network (U-Net by default), the chip's mask as target."""

    name: str = "segmentation"
    monitor: str = "val_miou"

    def build_model(
        self, model_config: Mapping[str, Any], in_channels: int, num_classes: int
    ) -> nn.Module:
        """``build_segmentation_model`` with the model section's architecture, encoder, weights."""
        return build_segmentation_model(
            model_config["architecture"],
            model_config["encoder"],
            in_channels,
            num_classes,
            model_config.get("encoder_weights"),
        )

    def chip_targets(self, chip_index: pd.DataFrame, num_classes: int) -> np.ndarray | None:
        """None: the target is the mask."""
        return None

    def class_counts(self, chip_index: pd.DataFrame, num_classes: int) -> np.ndarray:
        """Pixels per class on these chips."""
        return pixel_counts(chip_index, num_classes)


def task_from_config(config: Mapping[str, Any]) -> Task:
    """The task named by the config's ``task`` key."""
    name = config.get("task", "segmentation")
    if name == "segmentation":
        return SegmentationTask()
    if name == "classification":
        raise InputError(
            "task = 'classification' is not available in this version of training yet; "
            "use task: segmentation"
        )
    raise InputError(
        f"task = {name!r} is not known; choose one of ['segmentation', 'classification']"
    )
