"""Losses that ignore no-data, and class weights computed on the training split.

Targets are class positions ``0..K-1`` (class index ``i`` of the class table is position ``i - 1``,
the logit channel of that class) with :data:`IGNORE_INDEX` (-1) for no data. Every loss accepts
logits ``(N, K, ...)`` with targets ``(N, ...)``: pixels (segmentation, ``(N, K, H, W)`` against
``(N, H, W)``) or chips (classification, ``(N, K)`` against ``(N,)``), so one set of losses serves
both tasks. A batch without a single valid target gives a loss of exactly 0 with zero gradient (not
NaN): the denominators are clamped and every ignored element contributes a multiplicative 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from s2landcover.errors import InputError

IGNORE_INDEX = -1
CLASS_WEIGHT_METHODS = ("none", "inverse_frequency", "inverse_sqrt_frequency")


def class_weights_from_counts(
    counts: Sequence[float] | np.ndarray, method: str
) -> np.ndarray | None:
    """Cross-entropy class weights from the training split's counts per class.

    With ``f_k = counts_k / sum(counts)`` over the classes present (``counts_k > 0``):
    ``inverse_frequency`` gives ``w_k = 1 / f_k``, ``inverse_sqrt_frequency``
    ``w_k = 1 / sqrt(f_k)``,
    both rescaled so that the weights of the present classes average 1. A class absent from the
    training split gets the largest weight of the others (it has no training pixel, but a validation
    pixel of it must not be weighted 0). ``none`` returns None (unweighted).

    Args:
        counts: K numbers, pixels (segmentation) or chips (classification) per class 1..K.
        method: one of :data:`CLASS_WEIGHT_METHODS`.
    """
    if method not in CLASS_WEIGHT_METHODS:
        raise InputError(
            f"training.class_weights = {method!r} is not known; "
            f"choose one of {list(CLASS_WEIGHT_METHODS)}"
        )
    if method == "none":
        return None
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise InputError(
            "training.class_weights: the training split has no labelled pixel of any class"
        )
    frequency = counts[present] / counts[present].sum()
    power = 1.0 if method == "inverse_frequency" else 0.5
    weights_present = frequency**-power
    weights_present /= weights_present.mean()
    weights = np.full(counts.shape, weights_present.max())
    weights[present] = weights_present
    return weights.astype(np.float32)


def _flatten(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K, ...) logits and (N, ...) targets -> (M, K) float32 logits and (M,) targets."""
    num_classes = logits.shape[1]
    flat_logits = logits.float().movedim(1, -1).reshape(-1, num_classes)
    return flat_logits, target.reshape(-1).long()


def cross_entropy_loss(
    logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy averaged over valid targets (weighted mean when class weights are given)."""
    flat_logits, flat_target = _flatten(logits, target)
    valid = flat_target != IGNORE_INDEX
    safe_target = flat_target.clamp(min=0)
    per_element = F.cross_entropy(flat_logits, safe_target, reduction="none") * valid
    if class_weights is None:
        return per_element.sum() / valid.sum().clamp(min=1)
    element_weight = class_weights.to(flat_logits)[safe_target] * valid
    return (per_element * element_weight).sum() / element_weight.sum().clamp(min=1e-12)


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss ``(1 - p_t)^gamma * CE`` (Lin et al. 2017) averaged over valid targets."""
    flat_logits, flat_target = _flatten(logits, target)
    valid = flat_target != IGNORE_INDEX
    safe_target = flat_target.clamp(min=0)
    log_p = F.log_softmax(flat_logits, dim=1).gather(1, safe_target[:, None])[:, 0]
    per_element = -((1.0 - log_p.exp()) ** gamma) * log_p * valid
    if class_weights is not None:
        element_weight = class_weights.to(flat_logits)[safe_target] * valid
        return (per_element * element_weight).sum() / element_weight.sum().clamp(min=1e-12)
    return per_element.sum() / valid.sum().clamp(min=1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft multiclass Dice loss, ``1 - mean_k (2 |P_k G_k| + s) / (|P_k| + |G_k| + s)``.

    Probabilities and one-hot targets are summed over the valid elements of the whole batch; a class
    absent from both prediction and target scores 1 (no loss). No-data elements are multiplied by 0.
    """
    flat_logits, flat_target = _flatten(logits, target)
    valid = (flat_target != IGNORE_INDEX).float()[:, None]
    probabilities = flat_logits.softmax(dim=1) * valid
    one_hot = F.one_hot(flat_target.clamp(min=0), flat_logits.shape[1]).float() * valid
    intersection = (probabilities * one_hot).sum(dim=0)
    total = probabilities.sum(dim=0) + one_hot.sum(dim=0)
    return 1.0 - ((2.0 * intersection + smooth) / (total + smooth)).mean()


class CombinedLoss(nn.Module):
    """Weighted sum of cross-entropy, Dice and focal losses (weights from ``training.loss``).

    Args:
        weights: ``{"cross_entropy": w, "dice": w, "focal": w}``; terms with weight 0 are skipped.
        class_weights: K class weights for cross-entropy and focal (None: unweighted).
        focal_gamma: focusing parameter of the focal term.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        class_weights: np.ndarray | torch.Tensor | None = None,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.terms = {name: float(w) for name, w in weights.items() if float(w) > 0}
        unknown = set(self.terms) - {"cross_entropy", "dice", "focal"}
        if unknown:
            raise InputError(
                f"training.loss: unknown terms {sorted(unknown)}; valid: cross_entropy, dice, focal"
            )
        if not self.terms:
            raise InputError(
                "training.loss: every weight is 0; give cross_entropy, dice or focal a weight > 0"
            )
        self.focal_gamma = focal_gamma
        weight_tensor = (
            None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        )
        # A buffer moves with the module to the training device.
        self.register_buffer("class_weights", weight_tensor, persistent=False)
        self.class_weights: torch.Tensor | None  # declared for type checkers: a buffer or None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted sum (a float32 scalar)."""
        total = logits.new_zeros((), dtype=torch.float32)
        if "cross_entropy" in self.terms:
            total = total + self.terms["cross_entropy"] * cross_entropy_loss(
                logits, target, self.class_weights
            )
        if "dice" in self.terms:
            total = total + self.terms["dice"] * dice_loss(logits, target)
        if "focal" in self.terms:
            total = total + self.terms["focal"] * focal_loss(
                logits, target, self.focal_gamma, self.class_weights
            )
        return total
