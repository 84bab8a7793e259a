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
- ``pad_multiple``: chip sides reach the network as a multiple of this (training: random crop;
  validation: padding at the bottom/right).

The metrics are the same for every task: one multiclass confusion matrix over the K classes, from
which IoU, F1, precision, recall and accuracy follow, whether its entries count pixels or chips.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from s2landcover.errors import InputError
from s2landcover.models import build_segmentation_model, encoder_names, load_encoder_weights

CLASSIFICATION_ARCHITECTURES = ("small_cnn", "encoder")
SMALL_CNN_WIDTHS = (32, 64, 128, 256)
SMALL_CNN_DROPOUT = 0.2


class Task(Protocol):
    """The task-specific part of training (see the module docstring)."""

    @property
    def name(self) -> str:
        """``segmentation`` or ``classification`` (the config's ``task``)."""
        ...

    @property
    def monitor(self) -> str:
        """The validation metric that selects the best checkpoint (``val_miou``, ...)."""
        ...

    @property
    def pad_multiple(self) -> int:
        """Chip sides reach the network as a multiple of this."""
        ...

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


def _build_from_section(
    build: Callable[[str, str, int, int, str | None], nn.Module],
    model_config: Mapping[str, Any],
    in_channels: int,
    num_classes: int,
) -> nn.Module:
    """``build(architecture, encoder, in_channels, num_classes, encoder_weights)`` with the values
    of the ``model`` section (``encoder_weights`` optional: None when absent, as in checkpoints)."""
    return build(
        model_config["architecture"],
        model_config["encoder"],
        in_channels,
        num_classes,
        model_config.get("encoder_weights"),
    )


@dataclass(frozen=True)
class SegmentationTask:
    """One class per pixel: an smp network (U-Net by default), the chip's mask as target."""

    name: str = "segmentation"
    monitor: str = "val_miou"
    pad_multiple: int = 32  # smp U-Nets need sides divisible by 32

    def build_model(
        self, model_config: Mapping[str, Any], in_channels: int, num_classes: int
    ) -> nn.Module:
        """``build_segmentation_model`` with the model section's architecture, encoder, weights."""
        pairs = model_config.get("pixel_branch_indices") or []
        if pairs is True:  # the config's switch, not yet the band positions
            raise InputError(
                "model.pixel_branch_indices = true needs the band positions of the indices: "
                "build the model section with s2landcover.training.train.network_section"
            )
        return build_segmentation_model(
            model_config["architecture"],
            model_config["encoder"],
            in_channels,
            num_classes,
            model_config.get("encoder_weights"),  # absent in a checkpoint's model section
            int(model_config["encoder_depth"]),
            int(model_config["pixel_branch"]),
            # band positions of the branch's indices (absent in models written before the key)
            [tuple(pair) for pair in pairs],
            bool(model_config.get("pixel_branch_batch_norm", True)),  # True before the key
        )

    def chip_targets(self, chip_index: pd.DataFrame, num_classes: int) -> np.ndarray | None:
        """None: the target is the mask."""
        return None

    def class_counts(self, chip_index: pd.DataFrame, num_classes: int) -> np.ndarray:
        """Pixels per class on these chips."""
        return pixel_counts(chip_index, num_classes)


def dominant_classes(
    chip_index: pd.DataFrame, num_classes: int, min_fraction: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The dominant valid class of each chip, from the chip index's ``px_1..px_K`` columns.

    No pixel is read: the counts were made by tiling. Valid pixels are those of classes 1..K
    (``px_0``, no data, is left out of the share). Ties go to the lower class index.

    Returns:
        ``positions`` (int64, class position ``0..K-1`` = class index - 1; -1 when the chip has no
        valid pixel or its dominant share is below ``min_fraction``) and ``shares`` (float64, the
        dominant class's share of the chip's valid pixels, 0 for a chip without valid pixels).
    """
    counts = np.atleast_2d(_class_count_matrix(chip_index, num_classes))
    valid = counts.sum(axis=1)
    positions = counts.argmax(axis=1).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(valid > 0, counts.max(axis=1) / np.maximum(valid, 1), 0.0)
    positions[(valid <= 0) | (shares < min_fraction)] = -1
    return positions, shares


def _class_count_matrix(chip_index: pd.DataFrame, num_classes: int) -> np.ndarray:
    """(chips, K) pixel counts of classes 1..K (checks that the columns exist)."""
    pixel_counts(chip_index.iloc[:0], num_classes)  # the column check, with its message
    columns = [f"px_{k}" for k in range(1, num_classes + 1)]
    return chip_index[columns].to_numpy(dtype=np.float64)


class SmallCNN(nn.Module):
    """A small chip classifier: conv-BN-ReLU-max-pool blocks, global average pooling, a linear head.

    Four blocks (32, 64, 128, 256 channels; each a 3 x 3 convolution, batch norm, ReLU and 2 x 2
    max pooling), so any chip side of 16 px or more works (no padding needed); then global average
    pooling, dropout and a linear layer to ``num_classes`` logits. About 0.4 M parameters.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_channels
        for width in SMALL_CNN_WIDTHS:
            blocks += [
                nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(SMALL_CNN_DROPOUT),
            nn.Linear(channels, num_classes),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) for images (N, C, H, W)."""
        return self.head(self.features(image))


class EncoderClassifier(nn.Module):
    """An smp encoder's deepest feature map, global average pooling, dropout and a linear head."""

    def __init__(self, encoder: str, in_channels: int, num_classes: int) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.encoder = smp.encoders.get_encoder(encoder, in_channels=in_channels, weights=None)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(SMALL_CNN_DROPOUT),
            nn.Linear(self.encoder.out_channels[-1], num_classes),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) for images (N, C, H, W)."""
        return self.head(self.encoder(image)[-1])


def build_classification_model(
    architecture: str,
    encoder: str,
    in_channels: int,
    num_classes: int,
    encoder_weights: str | None = None,
) -> nn.Module:
    """A chip classifier with ``in_channels`` inputs and ``num_classes`` logits.

    Args:
        architecture: ``small_cnn`` (:class:`SmallCNN`) or ``encoder`` (:class:`EncoderClassifier`
            on the smp encoder named ``encoder``).
        encoder: smp encoder name (``resnet18``, ...); used by ``encoder`` only.
        in_channels: number of input bands.
        num_classes: K, the number of classes without no data.
        encoder_weights: None or a local weights file for the encoder (``encoder`` only).

    Raises:
        InputError: for an unknown architecture or encoder (listing the valid names).
    """
    if architecture == "small_cnn":
        return SmallCNN(in_channels, num_classes)
    if architecture != "encoder":
        raise InputError(
            f"model.architecture = {architecture!r} is not a chip classifier (task: "
            f"classification); choose one of {list(CLASSIFICATION_ARCHITECTURES)}"
        )
    if encoder not in encoder_names():
        raise InputError(
            f"model.encoder {encoder!r} is not a segmentation-models-pytorch encoder; valid: "
            f"{', '.join(encoder_names())}"
        )
    model = EncoderClassifier(encoder, in_channels, num_classes)
    if encoder_weights is not None:
        load_encoder_weights(model.encoder, encoder_weights, in_channels)
    return model


@dataclass(frozen=True)
class ClassificationTask:
    """One class per chip: its dominant valid class (from the chip index), a CNN with a linear head.

    Chips whose dominant class covers less than ``min_dominant_fraction`` of their valid pixels
    (and chips without valid pixels) get target -1 and are left out of training and validation.
    Class weights come from chip counts per dominant class. The monitored metric is the validation
    overall accuracy (the share of chips classified right).
    """

    min_dominant_fraction: float = 0.0
    architecture: str = "small_cnn"
    name: str = "classification"
    monitor: str = "val_accuracy"

    @property
    def pad_multiple(self) -> int:
        """32 for smp encoders (some need sides divisible by 32); 1 (no padding) for small_cnn."""
        return 1 if self.architecture == "small_cnn" else 32

    def build_model(
        self, model_config: Mapping[str, Any], in_channels: int, num_classes: int
    ) -> nn.Module:
        """``build_classification_model`` with the model section's architecture and encoder."""
        return _build_from_section(
            build_classification_model, model_config, in_channels, num_classes
        )

    def chip_targets(self, chip_index: pd.DataFrame, num_classes: int) -> np.ndarray | None:
        """Dominant class positions (-1: left out); see :func:`dominant_classes`."""
        return dominant_classes(chip_index, num_classes, self.min_dominant_fraction)[0]

    def class_counts(self, chip_index: pd.DataFrame, num_classes: int) -> np.ndarray:
        """Chips per dominant class 1..K (left-out chips not counted)."""
        targets = self.chip_targets(chip_index, num_classes)
        assert targets is not None
        return np.bincount(targets[targets >= 0], minlength=num_classes).astype(np.float64)


def task_from_config(config: Mapping[str, Any]) -> Task:
    """The task named by the config's ``task`` key."""
    name = config["task"]
    if name == "segmentation":
        return SegmentationTask()
    if name == "classification":
        architecture = config["model"]["architecture"]
        if architecture not in CLASSIFICATION_ARCHITECTURES:
            raise InputError(
                f"model.architecture = {architecture!r} does not classify chips (task: "
                f"classification); choose one of {list(CLASSIFICATION_ARCHITECTURES)}"
            )
        fraction = float(config["classification"]["min_dominant_fraction"])
        return ClassificationTask(fraction, architecture)
    raise InputError(
        f"task = {name!r} is not known; choose one of ['segmentation', 'classification']"
    )
