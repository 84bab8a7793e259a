"""The LightningModule: a task's network wired to its loss, optimiser, schedule and metrics.

Validation metrics come from one torchmetrics ``MulticlassConfusionMatrix`` over the K classes
(rows: reference, columns: prediction; no-data and padding targets ignored), accumulated over the
epoch and synchronised across DDP processes by torchmetrics. IoU, F1 (= Dice), precision, recall
per class, mIoU and overall accuracy are derived from it by
:func:`s2landcover.evaluate.metrics_from_confusion` (the one implementation, flattened for
logging by :func:`epoch_metrics`), so the same code serves pixels (segmentation) and chips
(classification).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from s2landcover.errors import InputError
from s2landcover.evaluate import metrics_from_confusion
from s2landcover.models import PixelBranchNet
from s2landcover.training.losses import IGNORE_INDEX, CombinedLoss
from s2landcover.training.tasks import Task

FOCAL_GAMMA = 2.0
STEP_SCHEDULE_GAMMA = 0.1  # StepLR: lr x 0.1 every third of the epochs
PLATEAU_FACTOR = 0.5  # ReduceLROnPlateau on val mIoU: lr x 0.5 after 3 epochs without gain
PLATEAU_PATIENCE = 3
SGD_MOMENTUM = 0.9


def epoch_metrics(
    confusion: np.ndarray | torch.Tensor, class_names: Sequence[str]
) -> dict[str, float]:
    """Per-class IoU, F1, precision, recall, plus mIoU and overall accuracy from a K x K matrix,
    as one flat mapping for per-epoch logging.

    ``confusion[i, j]`` counts reference class i predicted as j (pixels or chips). The metrics are
    those of :func:`s2landcover.evaluate.metrics_from_confusion` (one implementation for training
    and evaluation), flattened. Keys: ``miou``, ``accuracy``, ``iou_<name>``, ``f1_<name>``,
    ``precision_<name>``, ``recall_<name>`` (NaN when undefined).
    """
    matrix = confusion.cpu().numpy() if isinstance(confusion, torch.Tensor) else confusion
    report = metrics_from_confusion(np.rint(np.asarray(matrix)).astype(np.int64), class_names)
    metrics = {"miou": report["miou"], "accuracy": report["overall_accuracy"]}
    for name, per_class in report["per_class"].items():
        for key in ("iou", "f1", "precision", "recall"):
            metrics[f"{key}_{name}"] = per_class[key]
    return metrics


class LandCoverModule(L.LightningModule):
    """Training of a task's network with the ``training`` section's loss, optimiser and schedule.

    Args:
        task: what network and targets (see :mod:`s2landcover.training.tasks`).
        model_config: the ``model`` section.
        training_config: the ``training`` section.
        in_channels: number of input bands.
        class_names: the K class names (logit channel i = class i + 1).
        class_weights: K cross-entropy/focal weights, or None.
        channels_last: run the network and its input in channels-last memory format (faster
            convolutions on GPU, and with bf16 on a CPU: docs/benchmarks/training.md).
    """

    def __init__(
        self,
        task: Task,
        model_config: Mapping[str, Any],
        training_config: Mapping[str, Any],
        in_channels: int,
        class_names: Sequence[str],
        class_weights: np.ndarray | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.task = task
        self.training_config = dict(training_config)
        self.class_names = list(class_names)
        self.channels_last = channels_last
        self.net = task.build_model(model_config, in_channels, len(class_names))
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.loss = CombinedLoss(training_config["loss"], class_weights, FOCAL_GAMMA)
        self.pixel_branch_loss = float(training_config.get("pixel_branch_loss", 0.0))
        self.pixel_branch_detached = bool(training_config.get("pixel_branch_detached", False))
        if self.pixel_branch_detached and self.pixel_branch_loss <= 0:
            raise InputError(
                "training.pixel_branch_detached trains the per-pixel branch by its own loss "
                "alone; give training.pixel_branch_loss a weight > 0"
            )
        if self.pixel_branch_loss > 0 and not isinstance(self.net, PixelBranchNet):
            raise InputError(
                f"training.pixel_branch_loss = {self.pixel_branch_loss} weighs a loss on the "
                "per-pixel branch, but the network has none; set model.pixel_branch > 0 or "
                "pixel_branch_loss: 0"
            )
        self.val_confusion = MulticlassConfusionMatrix(
            num_classes=len(class_names), ignore_index=IGNORE_INDEX, validate_args=False
        )
        self.last_val_metrics: dict[str, float] = {}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, ...) for standardised images (N, C, H, W)."""
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return self.net(image)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        """Loss of one batch, logged as ``train_loss`` (epoch mean)."""
        image, target = batch
        # Logits in float32 for the loss (under bf16/fp16 autocast the network gives half floats).
        if self.pixel_branch_loss > 0:
            # Deep supervision of the per-pixel branch: it must classify pixels on its own (as
            # the pixel baseline does), the rest of the network learns what context adds.
            if self.channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            assert isinstance(self.net, PixelBranchNet)  # checked when the module was built
            context, pixel = self.net.parts(image)
            # detached: the branch learns from its own loss alone, the rest of the network
            # from the loss of the sum (the residual the branch leaves)
            summed = context + (pixel.detach() if self.pixel_branch_detached else pixel)
            loss = self.loss(summed.float(), target)
            loss = loss + self.pixel_branch_loss * self.loss(pixel.float(), target)
        else:
            loss = self.loss(self(image).float(), target)
        self.log(
            "train_loss", loss, on_step=False, on_epoch=True, batch_size=len(image), sync_dist=True
        )
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Accumulate the confusion matrix; log ``val_loss`` (epoch mean)."""
        image, target = batch
        logits = self(image).float()
        loss = self.loss(logits, target)
        self.log(
            "val_loss", loss, on_step=False, on_epoch=True, batch_size=len(image), sync_dist=True
        )
        self.val_confusion.update(logits.argmax(dim=1), target)

    def on_validation_epoch_end(self) -> None:
        """Derive and log ``val_miou``, ``val_accuracy`` and the per-class metrics."""
        metrics = epoch_metrics(self.val_confusion.compute(), self.class_names)
        self.val_confusion.reset()
        self.last_val_metrics = metrics
        # The matrix is already summed over processes (torchmetrics), so every process holds the
        # same values; sync_dist only averages equal numbers. NaN (a class absent from reference
        # and prediction) is logged as is.
        for name, value in metrics.items():
            self.log(f"val_{name}", value, on_step=False, on_epoch=True, sync_dist=True)

    def configure_optimizers(self) -> Any:
        """AdamW / Adam / SGD with a plateau, step, cosine or one-cycle schedule (or none)."""
        config = self.training_config
        lr, weight_decay = float(config["learning_rate"]), float(config["weight_decay"])
        name = config["optimizer"]
        params, peaks = self._parameter_groups(lr)
        optimizer: torch.optim.Optimizer
        if name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        elif name == "adam":
            optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        elif name == "sgd":
            optimizer = torch.optim.SGD(
                params,
                lr=lr,
                weight_decay=weight_decay,
                momentum=SGD_MOMENTUM,
                nesterov=True,
            )
        else:
            raise InputError(
                f"training.optimizer = {name!r} is not known; choose adamw, adam or sgd"
            )
        schedule = config["scheduler"]
        epochs = int(config["epochs"])
        if schedule == "none":
            return optimizer
        if schedule == "plateau":
            scheduler: Any = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {
                    "scheduler": scheduler,
                    "monitor": self.task.monitor,
                    "interval": "epoch",
                },
            }
        if schedule == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(
                optimizer, step_size=max(1, epochs // 3), gamma=STEP_SCHEDULE_GAMMA
            )
            interval = "epoch"
        elif schedule == "cosine":
            total_steps = max(1, int(self.trainer.estimated_stepping_batches))
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
            interval = "step"
        elif schedule == "onecycle":
            # Warm-up over 20 % of the steps (at least 2 steps: torch's one-cycle divides by
            # zero when its warm-up phase is shorter than one step), then cosine annealing.
            total_steps = max(4, int(self.trainer.estimated_stepping_batches))
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=peaks,
                total_steps=total_steps,
                pct_start=min(0.5, max(0.2, 2.0 / total_steps)),
            )
            interval = "step"
        else:
            raise InputError(
                f"training.scheduler = {schedule!r} is not known; "
                "choose plateau, step, cosine, onecycle or none"
            )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval},
        }

    def _parameter_groups(self, lr: float) -> tuple[list[dict[str, Any]], list[float]]:
        """Optimiser parameter groups and their peak learning rates: one group at ``lr``, or,
        with ``training.pixel_branch_learning_rate`` set and a per-pixel branch, the branch's
        weights in a second group at that rate (the small per-pixel classifier learns faster
        at a higher rate than the U-Net tolerates: docs/benchmarks/training.md section (f))."""
        branch_lr = self.training_config.get("pixel_branch_learning_rate")
        if branch_lr is None:
            return [{"params": list(self.parameters())}], [lr]
        if not isinstance(self.net, PixelBranchNet):
            raise InputError(
                f"training.pixel_branch_learning_rate = {branch_lr} is the rate of the per-pixel "
                "branch, but the network has none; set model.pixel_branch > 0 or leave it null"
            )
        branch = {id(p) for p in self.net.pixel.parameters()}
        rest = [p for p in self.parameters() if id(p) not in branch]
        groups: list[dict[str, Any]] = [
            {"params": rest},
            {"params": list(self.net.pixel.parameters()), "lr": float(branch_lr)},
        ]
        return groups, [lr, float(branch_lr)]

    def network_state_dict(self) -> dict[str, torch.Tensor]:
        """The network's weights alone (contiguous CPU tensors): what model.pt stores."""
        return {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
