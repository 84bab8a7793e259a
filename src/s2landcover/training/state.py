"""The resumable training state (``last.ckpt``): saved and loaded without unpickling code.

``last.ckpt`` is a torch file of tensors and plain containers only, read back without
unpickling (``weights_only``, :mod:`s2landcover.io.checkpoints`): a file swapped in by someone
else (a copied or shared results folder) can at worst fail to load, never run code. Lightning's
own checkpoint format needs full unpickling, so Lightning never loads it:
:func:`restore_training_state` puts everything back itself. Contents
(:func:`collect_training_state`)::

    {"format": "s2landcover-training-state", "version": 1,
     "config_digest": str, "data_digest": str, "data_files": {key: {size, mtime_ns, sha256}},
     "epochs_completed": int, "stopped": bool, "global_step": int, "batches_that_stepped": int,
     "model": {name: tensor}, "optimizers": [state_dict], "schedulers": [state_dict],
     "precision": {...} (the fp16 gradient scaler), "callbacks": {name: state},
     "rng": {"python": ..., "numpy": ..., "torch": tensor, "cuda": [tensor]},
     "tensors_sha256": str}

``tensors_sha256`` covers the weights and the optimiser's tensors: a state damaged on disk is not
resumed from (training starts afresh).

It is saved between two epochs (after the epoch's scheduler step), so a resumed run continues
exactly where the saved one was: same weights, optimiser moments, schedule position, early
stopping counters, metric history and random state (Python, NumPy, torch CPU and CUDA).
Shuffling and augmentation do not depend on the random state of data-loader workers (they are
keyed by seed, epoch and chip, see :mod:`s2landcover.training.data`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from s2landcover.io.checkpoints import load_tensor_file, save_tensor_file, weights_sha256

log = logging.getLogger(__name__)

STATE_FORMAT = "s2landcover-training-state"
STATE_VERSION = 1


def capture_rng() -> dict[str, Any]:
    """The global random state of Python, NumPy and torch (CPU, and CUDA when initialised)."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)  # noqa: NPY002 (global state)
    cuda = (
        [s.clone() for s in torch.cuda.get_rng_state_all()]
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else []
    )
    return {
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state().clone(),
        "cuda": cuda,
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only when the device count matches)."""
    python = state["python"]
    internal = tuple(int(v) for v in python["internal"].tolist())
    random.setstate((int(python["version"]), internal, python["gauss"]))
    numpy_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002 (the global state)
        {
            "bit_generator": "MT19937",
            "state": {
                "key": numpy_state["key"].numpy().astype(np.uint32),
                "pos": numpy_state["pos"],
            },
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda", []))
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning(
                "resume: CUDA random state saved for %d devices, %d present; not restored",
                len(cuda),
                torch.cuda.device_count(),
            )


def _state_tensors(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The weights and the optimisers' per-parameter tensors of a state, by a flat name."""
    tensors = {f"model.{k}": v for k, v in state["model"].items()}
    for i, optimizer in enumerate(state["optimizers"]):
        for parameter, values in optimizer.get("state", {}).items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer{i}.{parameter}.{key}"] = value
    return tensors


def collect_training_state(
    trainer: L.Trainer,
    module: L.LightningModule,
    callbacks: Mapping[str, Any],
    digests: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything needed to continue ``trainer.fit`` after the epochs completed so far.

    Call between epochs (``on_train_epoch_start``, ``on_train_end``). ``callbacks`` maps a name to
    an object with ``state_dict()`` (metric history, best model, early stopping); ``digests``
    holds ``config_digest``, ``data_digest`` and ``data_files``.
    """
    loop = trainer.fit_loop
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        **dict(digests),
        "epochs_completed": int(trainer.current_epoch),
        "stopped": bool(trainer.should_stop),
        "global_step": int(trainer.global_step),
        "batches_that_stepped": int(loop.epoch_loop._batches_that_stepped),
        "model": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        "optimizers": [optimizer.state_dict() for optimizer in trainer.optimizers],
        "schedulers": [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs],
        "precision": trainer.precision_plugin.state_dict(),
        "callbacks": {name: callback.state_dict() for name, callback in callbacks.items()},
        "rng": capture_rng(),
    }


def save_training_state(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write the state atomically (temporary file renamed): a kill never leaves half a file."""
    payload = dict(state)
    payload["tensors_sha256"] = weights_sha256(_state_tensors(payload))
    save_tensor_file(path, payload)


def load_training_state(path: str | Path) -> tuple[dict[str, Any] | None, str]:
    """(state, "") from ``last.ckpt``, or (None, why it cannot be used).

    Loaded with ``weights_only=True``: a file holding anything but tensors and plain containers
    (e.g. a pickled object whose ``__reduce__`` runs a command) is rejected unread.
    """
    path = Path(path)
    if not path.is_file():
        return None, "no resumable state"
    try:
        state = load_tensor_file(path)
    except Exception as error:  # any unreadable or unsafe file: start afresh
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return None, f"{path} cannot be loaded safely ({type(error).__name__}: {first_line})"
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        return None, f"{path} is not a resumable state of this project"
    if state.get("version") != STATE_VERSION:
        return None, f"{path} has state version {state.get('version')}, expected {STATE_VERSION}"
    try:
        intact = weights_sha256(_state_tensors(state)) == state.get("tensors_sha256")
    except (KeyError, AttributeError, TypeError):
        intact = False
    if not intact:
        return None, f"{path} is corrupt (its tensors do not match their SHA-256 checksum)"
    return state, ""


def restore_training_state(trainer: L.Trainer, state: Mapping[str, Any]) -> None:
    """Put optimiser, schedule, gradient scaler, loop position and random state back.

    Call at ``on_train_start`` (optimisers exist, no epoch has started); the module's weights and
    the callbacks' states are restored before ``fit`` by the caller.
    """
    if len(state["optimizers"]) != len(trainer.optimizers) or len(state["schedulers"]) != len(
        trainer.lr_scheduler_configs
    ):
        raise RuntimeError("resumable state does not match the optimisers and schedules")
    for optimizer, saved in zip(trainer.optimizers, state["optimizers"], strict=True):
        optimizer.load_state_dict(saved)
    for config, saved in zip(trainer.lr_scheduler_configs, state["schedulers"], strict=True):
        config.scheduler.load_state_dict(saved)
    if state.get("precision"):
        trainer.precision_plugin.load_state_dict(state["precision"])
    loop = trainer.fit_loop
    epochs = int(state["epochs_completed"])
    trackers: tuple[Any, ...] = (loop.epoch_progress.total, loop.epoch_progress.current)
    for progress in trackers:  # total and current are trackers of different classes
        progress.ready = progress.started = progress.processed = progress.completed = epochs
    steps = loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step.total
    steps.ready = steps.completed = int(state["global_step"])
    loop.epoch_loop._batches_that_stepped = int(state["batches_that_stepped"])
    restore_rng(state["rng"])
