"""One line per training epoch on stderr: epoch/total, losses, val mIoU, time per epoch, ETA.

Lightning's own progress bars redraw with carriage returns, which a log file (``2> log``) keeps
as one unreadable line per redraw; :class:`EpochProgress` writes one plain line per epoch instead,
through the ``s2landcover`` logger, so that ``tail -f results/logs/train_model/...log`` (and the
terminal, where the workflow's train rule copies the line) shows where training stands::

    epoch 3/40: train loss 0.8123, val loss 0.9021, val mIoU 0.412, 41.2 s/epoch, ETA 25 min

The ETA is the mean duration of the epochs run by this process times the epochs left (an early
stop can end training sooner).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from s2landcover.progress import format_duration

log = logging.getLogger("s2landcover.training")

# Lightning's loggers: each sets up its own stderr handler when imported before the root logger has
# one; the s2lc command's root handler then prints their lines a second time.
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric")


def epoch_line(
    epoch: int,
    total: int,
    metrics: Mapping[str, Any],
    epoch_seconds: float,
    mean_seconds: float,
) -> str:
    """The progress line of finished epoch ``epoch`` (1-based) of ``total``.

    ``metrics`` holds ``train_loss``, ``val_loss`` and ``val_miou`` when known (numbers or 0-d
    tensors); a missing one is left out. ``mean_seconds`` (seconds per epoch so far) gives the ETA.
    """
    parts = [f"epoch {epoch}/{total}"]
    for key, label, digits in (
        ("train_loss", "train loss", 4),
        ("val_loss", "val loss", 4),
        ("val_miou", "val mIoU", 3),
        ("val_accuracy", "val accuracy", 3),
    ):
        value = metrics.get(key)
        if value is not None and math.isfinite(float(value)):
            parts.append(f"{label} {float(value):.{digits}f}")
    parts.append(f"{epoch_seconds:.1f} s/epoch")
    left = max(0, total - epoch)
    parts.append("done" if left == 0 else f"ETA {format_duration(left * mean_seconds)}")
    return ", ".join(parts)


def single_lightning_output() -> None:
    """Let Lightning's log lines reach stderr once: through the root handler when there is one
    (``s2lc`` sets it up), dropping the handler Lightning adds for itself."""
    if not logging.getLogger().handlers:
        return
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


class EpochProgress(Callback):
    """Logs :func:`epoch_line` at the end of each training epoch (rank 0), after validation.

    Args:
        total_epochs: ``training.epochs``.
    """

    def __init__(self, total_epochs: int) -> None:
        self.total_epochs = int(total_epochs)
        single_lightning_output()  # before the Trainer is made: it logs the devices it found
        self._started = math.nan
        self._durations: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.monotonic() - self._started
        if not math.isfinite(seconds):
            return
        self._durations.append(seconds)
        if not trainer.is_global_zero:
            return
        mean = sum(self._durations) / len(self._durations)
        log.info(
            "%s",
            epoch_line(
                trainer.current_epoch + 1,
                self.total_epochs,
                trainer.callback_metrics,
                seconds,
                mean,
            ),
        )
