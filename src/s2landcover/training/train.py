"""``train_model``: chips + split -> model folder (model.pt, last.ckpt, metrics.csv, curves.png).

Lightning runs the loop, so the same call trains on a CPU, one GPU (bf16/fp16 autocast,
channels-last) or several GPUs (``strategy="ddp"``; under SLURM one task per GPU). Files of the
model folder ``results/models/size{tile}/{model}/``:

- ``model.pt``: the weights of the epoch with the best value of the task's monitored metric
  (validation mIoU for segmentation, validation accuracy over chips for classification)
  and everything prediction needs (:mod:`s2landcover.io.checkpoints`, loads with
  ``weights_only=True``, its weights checked against their SHA-256). It records the digest of the
  data it was trained on (metadata ``training_data``: split table, chip stores, class table; see
  :mod:`s2landcover.training.digests`), which evaluation checks. ``best.pt`` is the same file
  kept while training runs (Snakemake deletes the declared outputs of a killed job; ``best.pt``
  survives and is copied to ``model.pt`` at the end).
- ``last.ckpt``: the resumable training state between epochs (:mod:`s2landcover.training.state`:
  weights, optimiser, schedule, gradient scaler, early stopping, metric history, random state;
  tensors and plain containers only, loaded with ``weights_only=True``), replaced atomically.
  Calling :func:`train_model` again resumes from it at the next epoch and reproduces the
  uninterrupted run bit for bit (on the same hardware); a run whose epochs are all done returns at
  once. A ``last.ckpt`` written with other settings or other data (any change to the split table,
  a chip store or the class table), or one that cannot be loaded safely, is ignored: training
  starts afresh and the log says why ("starting fresh: data changed").
- ``best.pt`` and ``last.ckpt`` are removed after a successful run unless
  ``training.keep_checkpoints`` is true.
- ``metrics.csv``: one row per completed epoch (``epoch`` counts from 1): ``train_loss``,
  ``val_loss``, ``val_miou``, ``val_accuracy``, per class ``val_iou_<name>``, ``val_f1_<name>``,
  ``val_precision_<name>``, ``val_recall_<name>``, and ``lr`` (at the end of the epoch).
- ``curves.png``: loss, mIoU / accuracy and per-class IoU over the epochs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, TQDMProgressBar
from lightning.pytorch.plugins.environments import LightningEnvironment

from s2landcover.classes import ClassTable
from s2landcover.devices import lightning_devices, trains_on_cuda
from s2landcover.errors import InputError
from s2landcover.io.checkpoints import (
    publish_checkpoint,
    remove_checkpoints,
    save_model_checkpoint,
    write_training_metrics,
)
from s2landcover.io.chipstore import read_chip_index
from s2landcover.models import PixelBranchNet, branch_index_pairs
from s2landcover.training.data import (
    PAD_MULTIPLE,
    AugmentSettings,
    ChipDataModule,
    ChipDataset,
    SceneInput,
    band_statistics,
    class_balanced_chip_weights,
    open_chip_store,
    resolve_num_workers,
)
from s2landcover.training.digests import data_fingerprint, training_data_metadata
from s2landcover.training.losses import class_weights_from_counts
from s2landcover.training.module import LandCoverModule
from s2landcover.training.progress import EpochProgress
from s2landcover.training.state import (
    collect_training_state,
    load_training_state,
    restore_training_state,
    save_training_state,
)
from s2landcover.training.tasks import Task, task_from_config

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
BEST_FILE = "best.pt"
LAST_FILE = "last.ckpt"
METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves.png"


# training.precision -> Lightning's precision (the older Lightning names stay accepted).
PRECISION_NAMES = {
    "float32": "32-true",
    "32": "32-true",
    "bfloat16": "bf16-mixed",
    "bf16-mixed": "bf16-mixed",
    "float16": "16-mixed",
    "16-mixed": "16-mixed",
}
LAYOUTS = ("auto", "channels_last", "contiguous")
# Whether ``auto`` on a CPU trains in bf16 autocast where the CPU computes bf16 natively: bf16 +
# channels-last took 2.2x less CPU time per step than float32 here and the default run learnt as
# well (val mIoU 0.891 at epoch 25; docs/benchmarks/training.md, section (g)).
CPU_AUTO_BF16 = True


def resolve_precision(setting: str, on_cuda: bool) -> str:
    """Lightning precision of ``training.precision``.

    ``auto``: bf16 mixed precision on GPUs with bf16, else fp16 mixed (loss scaling); on a CPU
    bf16 autocast where it computes bf16 natively (AVX-512 BF16 or AMX,
    :func:`s2landcover.predict.cpu_has_native_bf16`; :data:`CPU_AUTO_BF16`), else 32-bit
    (emulated bf16 is slower).
    ``float32`` / ``bfloat16`` / ``float16`` (or Lightning's ``32``, ``bf16-mixed``,
    ``16-mixed``): that precision on any device.
    """
    if setting in PRECISION_NAMES:
        return PRECISION_NAMES[setting]
    if setting != "auto":
        raise InputError(
            f"training.precision is {setting!r}; expected auto or one of {list(PRECISION_NAMES)}"
        )
    if on_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    from s2landcover.predict import cpu_has_native_bf16

    return "bf16-mixed" if CPU_AUTO_BF16 and cpu_has_native_bf16() else "32-true"


def resolve_layout(setting: str, on_cuda: bool, precision: str) -> bool:
    """Whether the network and its input run channels-last (NHWC) for ``training.layout``.

    ``auto``: channels-last on CUDA, and on a CPU when training in bf16 (oneDNN's bf16 kernels are
    NHWC; measured in docs/benchmarks/training.md); ``channels_last`` / ``contiguous``: always /
    never.
    """
    if setting not in LAYOUTS:
        raise InputError(f"training.layout is {setting!r}; expected one of {list(LAYOUTS)}")
    if setting == "auto":
        return on_cuda or precision == "bf16-mixed"
    return setting == "channels_last"


def config_digest(config: Mapping[str, Any]) -> str:
    """Hash of the settings a training state depends on (not loader, precision, save interval)."""
    ignored = (
        "num_workers",
        "precision",
        "layout",
        "checkpoint_interval_s",
        "accelerator",
        "strategy",
        "keep_checkpoints",
    )
    training = {k: v for k, v in config["training"].items() if k not in ignored}
    relevant = {
        "model": config["model"],
        "training": training,
        "classes": config["classes"],
        "bands": config["bands"],
        "tile_size": config["tile_size"],
        "task": config["task"],
    }
    if relevant["task"] == "classification":
        # Only for classification, so that segmentation digests (and their last.ckpt) stay valid.
        relevant["classification"] = config["classification"]
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def cluster_plugins(environ: Mapping[str, str] | None = None) -> list[Any]:
    """Lightning plugins for how this process was started.

    Started by ``srun`` with one task per GPU (``SLURM_NTASKS`` > 1), Lightning's SLURM environment
    wires the tasks together (nothing to add). Started as a single SLURM task, as the Snakemake
    SLURM executor starts every job, Lightning must launch one process per GPU itself, but its
    SLURM detection would demand ``--ntasks-per-node`` = devices and refuse: the plain single-node
    environment replaces it. Outside SLURM nothing is added (Lightning's own choice: single-node,
    or torchrun's environment).
    """
    environ = os.environ if environ is None else environ
    if "SLURM_NTASKS" in environ and int(environ["SLURM_NTASKS"] or 1) == 1:
        return [LightningEnvironment()]
    return []


class StderrProgressBar(TQDMProgressBar):
    """Lightning's progress bars, written to stderr (stdout stays free for results)."""

    def init_train_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()

    def init_sanity_tqdm(self) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_sanity_tqdm()


class EpochHistory(Callback):
    """Collects one row of metrics per epoch, rewrites metrics.csv and curves.png (rank 0).

    The rows are part of the callback state, hence of ``last.ckpt``: a resumed run keeps them.
    """

    def __init__(self, csv_path: Path, png_path: Path, class_names: list[str]) -> None:
        self.csv_path = csv_path
        self.png_path = png_path
        self.class_names = class_names
        self.rows: list[dict[str, float]] = []

    def columns(self) -> list[str]:
        """The CSV columns in order."""
        per_class = [
            f"val_{metric}_{name}"
            for metric in ("iou", "f1", "precision", "recall")
            for name in self.class_names
        ]
        return ["epoch", "train_loss", "val_loss", "val_miou", "val_accuracy", *per_class, "lr"]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row: dict[str, float] = {"epoch": trainer.current_epoch + 1}
        for column in self.columns()[1:-1]:
            value = metrics.get(column)
            row[column] = float(value) if value is not None else math.nan
        row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        if trainer.is_global_zero:
            self.write()

    def write(self) -> None:
        """Write metrics.csv and curves.png from the rows so far."""
        table = pd.DataFrame(self.rows, columns=self.columns())
        write_training_metrics(self.csv_path, table)
        plot_training_curves(table, self.class_names, self.png_path)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


class BestModelExport(Callback):
    """Writes best.pt (io/checkpoints format) whenever the monitored metric improves (rank 0)."""

    def __init__(self, path: Path, monitor: str, metadata: dict[str, Any]) -> None:
        self.path = path
        self.monitor = monitor
        self.metadata = metadata
        self.best = -math.inf
        self.best_epoch = 0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not math.isfinite(float(value)) or float(value) <= self.best:
            return
        self.best, self.best_epoch = float(value), trainer.current_epoch + 1
        if trainer.is_global_zero:
            export_model(
                self.path,
                cast(LandCoverModule, pl_module),
                self.metadata,
                self.best_epoch,
                {self.monitor: self.best},
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = float(state_dict.get("best", -math.inf))
        self.best_epoch = int(state_dict.get("best_epoch", 0))


class LastCheckpoint(Callback):
    """Saves the resumable state to last.ckpt between epochs; restores one at the start of fit.

    The state is taken at the start of each epoch after the first (the previous epoch, its
    validation and its scheduler step are all done) and at the end of training (always). To spare
    the disk on fast epochs, a save is skipped when the previous one is less than ``interval_s``
    seconds old: a kill loses at most ``interval_s`` seconds of training plus one epoch.

    Args:
        path: last.ckpt.
        interval_s: least seconds between two saves (the final save is never skipped).
        parts: callbacks whose ``state_dict`` goes into the state (history, best model, early
            stopping).
        digests: ``config_digest``, ``data_digest`` and ``data_files``, stored for the next start.
        resume: a loaded state to restore at ``on_train_start`` (optimisers, schedules, scaler,
            loop position, random state), or None.
    """

    def __init__(
        self,
        path: Path,
        interval_s: float = 0.0,
        parts: Mapping[str, Any] | None = None,
        digests: Mapping[str, Any] | None = None,
        resume: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.interval_s = interval_s
        self.parts = dict(parts or {})
        self.digests = dict(digests or {})
        self.resume = resume
        self._start_epoch = int(resume["epochs_completed"]) if resume else 0
        self._saved_at = -math.inf

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.resume is not None:
            restore_training_state(trainer, self.resume)
            self._saved_at = time.monotonic()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self._start_epoch:
            return  # nothing done since the start (or the restored state)
        if time.monotonic() - self._saved_at < self.interval_s:
            return
        self.save(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer, pl_module)

    def save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write the state now (rank 0; every process holds the same state under DDP)."""
        if trainer.is_global_zero:
            state = collect_training_state(trainer, pl_module, self.parts, self.digests)
            save_training_state(self.path, state)
        self._saved_at = time.monotonic()


def export_model(
    path: Path,
    module: LandCoverModule,
    metadata: dict[str, Any],
    epoch: int,
    scores: Mapping[str, float],
) -> None:
    """Write the network's weights with the prediction metadata (io/checkpoints format)."""
    full = dict(metadata)
    full["epoch"] = int(epoch)
    full.update({k: float(v) for k, v in scores.items()})
    save_model_checkpoint(path, module.network_state_dict(), full)


def plot_training_curves(table: pd.DataFrame, class_names: list[str], png_path: Path) -> None:
    """Write ``curves.png`` (atomically) from the metrics table: the figure of
    :func:`s2landcover.plots.training_curves_figure` (losses, val mIoU and accuracy, val IoU per
    class), the one drawing of training curves (evaluation's report and the pixel model use it)."""
    from s2landcover.io.documents import write_bytes
    from s2landcover.plots import figure_png, training_curves_figure

    write_bytes(figure_png(training_curves_figure(table, class_names)), png_path)


def _read_split_table(split_path: Path) -> pd.DataFrame:
    table = read_chip_index(split_path)
    missing = [c for c in ("scene", "store_index", "split") if c not in table.columns]
    if missing:
        raise InputError(
            f"split table {split_path} lacks columns {missing}; found {list(table.columns)}"
        )
    return table


def _scene_inputs(
    split: pd.DataFrame, chips_root: Path, bands: list[str]
) -> tuple[dict[str, SceneInput], dict[str, Any]]:
    """Open each scene's chip store, check its bands; scene inputs and the opened stores."""
    scenes: dict[str, SceneInput] = {}
    stores: dict[str, Any] = {}
    for scene in sorted(split["scene"].astype(str).unique()):
        chip_dir = chips_root / scene
        if not chip_dir.is_dir():
            raise InputError(
                f"chip store {chip_dir} of scene {scene!r} (in the split table) does not exist"
            )
        store = open_chip_store(chip_dir)
        meta = store.meta
        if list(meta["bands"]) != list(bands):
            raise InputError(
                f"chip store {chip_dir} has bands {list(meta['bands'])}, "
                f"the config's bands are {list(bands)}; "
                "re-run tiling (and ingest) with the configured bands"
            )
        scenes[scene] = SceneInput.from_meta(chip_dir, meta)
        stores[scene] = store
    return scenes, stores


def _index_rows(chips: pd.DataFrame, stores: Mapping[str, Any]) -> pd.DataFrame:
    """The chip-index rows (pixel counts per class etc.) of the given chips, in their order."""
    parts = []
    positions = []
    for scene, group in chips.groupby(chips["scene"].astype(str), sort=False):
        index = stores[scene].index
        parts.append(index.iloc[group["store_index"].to_numpy(dtype=np.int64)])
        positions.append(np.flatnonzero((chips["scene"].astype(str) == scene).to_numpy()))
    # Groups come scene by scene; put the rows back in the order of ``chips`` (per-chip targets).
    rows = pd.concat(parts, ignore_index=True)
    return rows.iloc[np.argsort(np.concatenate(positions), kind="stable")].reset_index(drop=True)


def _labelled(
    chips: pd.DataFrame, targets: np.ndarray | None, split_name: str, split_path: Path
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Chips with a target (chip-level targets of -1 are left out); all chips when None."""
    if targets is None:
        return chips, None
    keep = targets >= 0
    if not keep.any():
        raise InputError(
            f"split table {split_path}: none of the {len(chips)} {split_name} chips has a "
            "dominant class (classification.min_dominant_fraction is too high, or the chips "
            "hold no valid pixel); lower classification.min_dominant_fraction"
        )
    return chips[keep].reset_index(drop=True), targets[keep]


def network_section(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``model`` section as the network builder takes it: ``pixel_branch_indices`` (true /
    false in the config) becomes the band positions of the pixel baseline's indices among the
    configured bands (:func:`s2landcover.models.branch_index_pairs`), as model.pt stores them."""
    section = dict(config["model"])
    wanted = bool(section.get("pixel_branch_indices", False))
    section["pixel_branch_indices"] = branch_index_pairs(config["bands"]) if wanted else []
    return section


def _scene_metadata(
    config: Mapping[str, Any],
    classes: ClassTable,
    task: Task,
    scenes: Mapping[str, SceneInput],
    stores: Mapping[str, Any],
    chips: pd.DataFrame,
    mean: np.ndarray,
    std: np.ndarray,
) -> dict[str, Any]:
    """Everything prediction needs, for model.pt."""
    first = str(chips["scene"].iloc[0])
    store = stores[first]
    transform = store.transform_of(int(chips["store_index"].iloc[0]))
    meta = store.meta
    return {
        "task": task.name,
        "architecture": config["model"]["architecture"],
        "encoder": config["model"]["encoder"],
        "encoder_depth": int(config["model"]["encoder_depth"]),
        "pixel_branch": int(config["model"]["pixel_branch"]),
        "pixel_branch_indices": [list(p) for p in network_section(config)["pixel_branch_indices"]],
        "pixel_branch_batch_norm": bool(config["model"]["pixel_branch_batch_norm"]),
        "model_name": config["model"]["name"],
        "bands": list(meta["bands"]),
        "scales": list(scenes[first].scales),
        "offsets": list(scenes[first].offsets),
        "nodata": scenes[first].nodata,
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "classes": classes.to_dict(),
        "tile_size": int(meta.get("tile_size", config["tile_size"])),
        "resolution": float(math.hypot(transform.a, transform.d)),
        "crs": str(meta.get("crs", "")),
    }


def training_budget(training: Mapping[str, Any], train_samples: int) -> dict[str, Any]:
    """Epochs, steps and samples of a run from ``training`` (steps, steps_per_epoch, epochs,
    batch_size, max_time_s) and the number of training chips.

    ``steps_per_epoch`` (null: ``ceil(chips / batch_size)``, one pass) sets how many samples an
    epoch draws (``steps_per_epoch * batch_size``) and so how often validation runs. With
    ``steps``, the epochs are ``ceil(steps / steps_per_epoch)`` and Lightning stops at exactly
    ``steps`` optimizer steps (``max_steps``); the one-cycle and cosine schedules span those steps.
    Without, ``epochs`` epochs are run (``max_steps`` -1: no step limit).

    Returns:
        ``epochs``, ``steps_per_epoch``, ``samples_per_epoch`` (None: one pass over the chips,
        the sampler's default), ``max_steps`` and ``max_time`` (a ``timedelta`` or None).
    """
    from datetime import timedelta

    batch_size = int(training["batch_size"])
    one_pass = max(1, -(-int(train_samples) // batch_size))
    per_epoch = training["steps_per_epoch"]
    steps_per_epoch = one_pass if per_epoch is None else int(per_epoch)
    samples_per_epoch = None if per_epoch is None else steps_per_epoch * batch_size
    steps = training["steps"]
    if steps is None:
        epochs, max_steps = int(training["epochs"]), -1
    else:
        epochs, max_steps = max(1, -(-int(steps) // steps_per_epoch)), int(steps)
    max_time_s = training["max_time_s"]
    return {
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "samples_per_epoch": samples_per_epoch,
        "max_steps": max_steps,
        "max_time": None if max_time_s is None else timedelta(seconds=float(max_time_s)),
    }


SAMPLING_POWER = {"inverse_sqrt_frequency": 0.5, "inverse_frequency": 1.0}


def _chip_weights(
    training: Mapping[str, Any], chip_index: pd.DataFrame, num_classes: int
) -> np.ndarray | None:
    """``training.sampling``: None (uniform, each chip once per pass) or per-chip draw weights
    from the chips' pixel counts per class (:func:`class_balanced_chip_weights`)."""
    sampling = training["sampling"]
    if sampling == "uniform":
        return None
    columns = [f"px_{k}" for k in range(1, num_classes + 1)]
    counts = chip_index[columns].to_numpy(dtype=np.float64)
    return class_balanced_chip_weights(counts, SAMPLING_POWER[sampling])


def train_model(
    split_path: str | Path,
    chips_root: str | Path,
    out_dir: str | Path,
    config: Mapping[str, Any],
    accelerator: str = "auto",
    devices: Any = "auto",
    strategy: str = "auto",
    progress: bool = True,
    num_nodes: int = 1,
) -> dict[str, Any]:
    """Train the configured model on the split's train chips, validate on its val chips.

    Args:
        split_path: ``results/splits/size{tile}/split.parquet`` (columns scene, store_index, split).
        chips_root: ``results/chips/size{tile}``; the chip store of scene S is ``chips_root / S``.
        out_dir: the model folder (created); see the module docstring for its files.
        config: validated config with at least model, training, classes, bands, tile_size, task.
        accelerator, devices, strategy: Lightning Trainer arguments (``"gpu"``, ``4``, ``"ddp"``).
        progress: show Lightning's progress bars (on stderr).
        num_nodes: machines taking part (several: started by ``srun``, one task per device).

    Returns:
        A summary: epochs completed, best epoch and its val mIoU, chip counts, normalisation and
        class weights, output paths.

    Raises:
        InputError: missing or inconsistent inputs, no training or no validation chips.
    """
    split_path, chips_root, out_dir = Path(split_path), Path(chips_root), Path(out_dir)
    task = task_from_config(config)
    classes = ClassTable.from_config(config["classes"])
    training = config["training"]
    split = _read_split_table(split_path)
    train_chips = split[split["split"] == "train"].reset_index(drop=True)
    val_chips = split[split["split"] == "val"].reset_index(drop=True)
    if len(train_chips) == 0:
        raise InputError(
            f"split table {split_path} has no chip with split == 'train'; nothing to train on"
        )
    if len(val_chips) == 0:
        raise InputError(
            f"split table {split_path} has no chip with split == 'val': training would run "
            "blind (no "
            "validation mIoU to choose the best model); give split.fractions.val > 0 or more chips"
        )
    scenes, stores = _scene_inputs(split, chips_root, list(config["bands"]))
    chips_in_split = len(train_chips) + len(val_chips)
    train_chips, train_targets = _labelled(
        train_chips,
        task.chip_targets(_index_rows(train_chips, stores), classes.num_classes),
        "train",
        split_path,
    )
    val_chips, val_targets = _labelled(
        val_chips,
        task.chip_targets(_index_rows(val_chips, stores), classes.num_classes),
        "val",
        split_path,
    )
    counts = task.class_counts(_index_rows(train_chips, stores), classes.num_classes)
    class_weights = class_weights_from_counts(counts, training["class_weights"])
    mean, std = band_statistics(train_chips, scenes)

    pad_multiple = int(getattr(task, "pad_multiple", PAD_MULTIPLE))
    on_cuda = trains_on_cuda(accelerator)
    precision = resolve_precision(training["precision"], on_cuda)
    channels_last = resolve_layout(training["layout"], on_cuda, precision)
    L.seed_everything(int(training["seed"]), workers=True, verbose=False)

    seed = int(training["seed"])
    budget = training_budget(training, len(train_chips))
    crop_size = training["crop_size"]
    if crop_size is not None and int(crop_size) % pad_multiple:
        raise InputError(
            f"training.crop_size = {crop_size} is not a multiple of {pad_multiple} "
            "(the network's input sides must be)"
        )
    data = ChipDataModule(
        ChipDataset(
            train_chips,
            scenes,
            mean,
            std,
            AugmentSettings.from_config(training["augment"]),
            train_targets,
            pad_multiple,
            seed=seed,
            crop_size=None if crop_size is None else int(crop_size),
        ),
        ChipDataset(val_chips, scenes, mean, std, None, val_targets, pad_multiple),
        batch_size=int(training["batch_size"]),
        num_workers=resolve_num_workers(training["num_workers"], on_cuda),
        pin_memory=on_cuda,
        seed=seed,
        samples_per_epoch=budget["samples_per_epoch"],
        chip_weights=_chip_weights(training, _index_rows(train_chips, stores), classes.num_classes),
    )
    module = LandCoverModule(
        task,
        network_section(config),
        training,
        len(config["bands"]),
        list(classes.names),
        class_weights,
        channels_last=channels_last,
    )
    if isinstance(module.net, PixelBranchNet):
        module.net.set_band_statistics([float(m) for m in mean], [float(d) for d in std])

    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path, model_path = (
        out_dir / LAST_FILE,
        out_dir / BEST_FILE,
        out_dir / MODEL_FILE,
    )
    state, why = load_training_state(last_path)
    data_digest, data_files = data_fingerprint(
        split_path,
        chips_root,
        scenes,
        classes.to_dict(),
        known=state.get("data_files") if state else None,
    )
    digests = {
        "config_digest": config_digest(config),
        "data_digest": data_digest,
        "data_files": data_files,
    }
    if state is not None and state.get("config_digest") != digests["config_digest"]:
        state, why = None, f"settings changed since {last_path} was written"
    elif state is not None and state.get("data_digest") != data_digest:
        state, why = (
            None,
            (
                f"data changed since {last_path} was written "
                "(split table, a chip store or the class table)"
            ),
        )
    if state is None:
        if last_path.exists():
            log.warning("starting fresh: %s", why)
        else:
            log.info("starting fresh: %s in %s", why, out_dir)
        remove_checkpoints((last_path, best_path, model_path))
    metadata = _scene_metadata(config, classes, task, scenes, stores, train_chips, mean, std)
    metadata["training_data"] = training_data_metadata(data_digest, data_files)
    if task.name == "classification":
        metadata["min_dominant_fraction"] = float(config["classification"]["min_dominant_fraction"])
    history = EpochHistory(out_dir / METRICS_FILE, out_dir / CURVES_FILE, list(classes.names))
    best = BestModelExport(best_path, task.monitor, metadata)
    parts: dict[str, Any] = {"history": history, "best": best}
    callbacks: list[Callback] = [history, best]
    if int(training["early_stopping_patience"]) > 0:
        parts["early_stopping"] = EarlyStopping(
            monitor=task.monitor,
            mode="max",
            patience=int(training["early_stopping_patience"]),
            check_finite=False,
        )
        callbacks.append(parts["early_stopping"])
    epochs_done = 0
    if state is not None:
        module.load_state_dict(state["model"])
        for name, part in parts.items():
            if name in state["callbacks"]:
                part.load_state_dict(state["callbacks"][name])
        epochs_done = int(state["epochs_completed"])
        log.info("resuming from %s after epoch %d", last_path, epochs_done)
    last = LastCheckpoint(
        last_path, float(training["checkpoint_interval_s"]), parts, digests, resume=state
    )
    callbacks.append(last)
    callbacks.append(EpochProgress(int(budget["epochs"])))  # one line per epoch (progress.py)
    if progress:
        callbacks.append(StderrProgressBar())
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=lightning_devices(devices),
        strategy=strategy,
        num_nodes=num_nodes,
        plugins=cluster_plugins() or None,
        precision=precision,  # type: ignore[arg-type]
        max_epochs=budget["epochs"],
        max_steps=budget["max_steps"],
        max_time=budget["max_time"],
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=progress,
        num_sanity_val_steps=0,
        benchmark=on_cuda,
        default_root_dir=str(out_dir),
        log_every_n_steps=1,
        use_distributed_sampler=False,  # ChipDataModule shards (and orders) the chips itself
    )
    finished = state is not None and (epochs_done >= budget["epochs"] or bool(state.get("stopped")))
    log.info(
        "training %s on %d chips, validating on %d (precision %s, %s, %d epochs of %d steps, %s)",
        config["model"]["name"],
        len(train_chips),
        len(val_chips),
        precision,
        "channels-last" if channels_last else "contiguous",
        budget["epochs"],
        budget["steps_per_epoch"],
        "all epochs done"
        if finished
        else f"from epoch {epochs_done + 1}"
        if state is not None
        else "fresh start",
    )
    if not finished:
        with warnings.catch_warnings():
            # Small splits give fewer batches than the logging interval; not worth a warning.
            warnings.filterwarnings(
                "ignore", message=".*(log_every_n_steps|does not have many workers).*"
            )
            trainer.fit(module, datamodule=data)
        if trainer.interrupted:
            raise KeyboardInterrupt(f"training interrupted; run again to resume from {last_path}")
        epochs_done = int(trainer.current_epoch)

    if trainer.is_global_zero:
        if not best_path.is_file():
            log.warning(
                "no finite validation %s in any epoch; model.pt holds the last weights",
                task.monitor,
            )
            export_model(best_path, module, metadata, epochs_done, {})
        publish_checkpoint(best_path, model_path)
        if history.rows:
            history.write()
        if not bool(training["keep_checkpoints"]):
            remove_checkpoints((best_path, last_path))
    last_row = history.rows[-1] if history.rows else {}
    return {
        "epochs_completed": len(history.rows),
        "steps_completed": int(trainer.global_step) if not finished else None,
        "steps_per_epoch": budget["steps_per_epoch"],
        "best_epoch": best.best_epoch,
        f"best_{task.monitor}": best.best,
        "last_val_miou": last_row.get("val_miou", math.nan),
        "train_chips": len(train_chips),
        "val_chips": len(val_chips),
        "chips_left_out": chips_in_split - len(train_chips) - len(val_chips),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "class_weights": None if class_weights is None else [float(w) for w in class_weights],
        "precision": precision,
        "channels_last": channels_last,
        "resumed_from": str(last_path) if state is not None else None,
        "training_data_digest": data_digest,
        "model": str(model_path),
        "metrics": str(out_dir / METRICS_FILE),
        "curves": str(out_dir / CURVES_FILE),
    }
