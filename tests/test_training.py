"""Training: losses, class weights, data pipeline, one-batch runs, checkpoint reload and resume."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from chip_store_helpers import (
    BANDS,
    CLASSES,
    OFFSET,
    SCALE,
    class_block_chips,
    write_chip_store,
    write_split,
)
from s2landcover.config import validate_config
from s2landcover.errors import InputError
from s2landcover.io.checkpoints import load_model_checkpoint
from s2landcover.models import build_segmentation_model
from s2landcover.training import train as train_module
from s2landcover.training.data import AugmentSettings, augment_pair, pad_pair, padded_size
from s2landcover.training.losses import (
    IGNORE_INDEX,
    CombinedLoss,
    class_weights_from_counts,
    cross_entropy_loss,
    dice_loss,
    focal_loss,
)
from s2landcover.training.module import LandCoverModule, epoch_metrics
from s2landcover.training.tasks import SegmentationTask
from s2landcover.training.train import cluster_plugins, train_model

CHIP = 64


@pytest.fixture(scope="module")
def chip_data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """8 chips of 64 x 64 px, 4 bands, 3 classes; chip 0 has a no-data strip; 6 train, 2 val."""
    root = tmp_path_factory.mktemp("chips")
    n = 8
    images, masks = class_block_chips(n, CHIP, seed=0)
    images[0, :, :, :8] = 0  # image no data ...
    masks[0, :, :8] = 0  # ... and mask no data
    write_chip_store(root / "size64" / "sceneA", "sceneA", images, masks, len(CLASSES))
    split_path = root / "split.parquet"
    write_split(split_path, "sceneA", 6, 2)
    return {"chips_root": root / "size64", "split": split_path, "images": images, "masks": masks}


def make_config(architecture: str = "Unet", epochs: int = 1, **training: object) -> dict:
    return validate_config(
        {
            "bands": BANDS,
            "classes": CLASSES,
            "tile_size": CHIP,
            "model": {"name": "tiny", "architecture": architecture, "encoder": "resnet18"},
            "training": {
                "epochs": epochs,
                "batch_size": 4,
                "num_workers": 0,
                "checkpoint_interval_s": 0,
                "scheduler": "plateau",
                "learning_rate": 0.01,
                **training,
            },
        }
    )


# --- losses and weights -------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [None, torch.tensor([1.0, 2.0, 0.5])])
def test_losses_all_nodata_batch_give_zero_loss_and_zero_gradient(
    weights: torch.Tensor | None,
) -> None:
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.full((2, 8, 8), IGNORE_INDEX)
    losses = {
        "ce": cross_entropy_loss(logits, target, weights),
        "focal": focal_loss(logits, target, 2.0, weights),
        "dice": dice_loss(logits, target),
        "sum": CombinedLoss({"cross_entropy": 1, "dice": 1, "focal": 1}, weights)(logits, target),
    }
    for name, loss in losses.items():
        assert torch.isfinite(loss), name
        assert float(loss.detach()) == 0.0, name
        (gradient,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(gradient).all() and float(gradient.abs().max()) == 0.0, name


def test_cross_entropy_ignores_nodata_pixels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (1, 4, 4))
    target[0, 0, :] = IGNORE_INDEX
    loss = cross_entropy_loss(logits, target)
    valid = target != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits.movedim(1, -1)[valid], target[valid])
    assert torch.allclose(loss, expected)
    (gradient,) = torch.autograd.grad(loss, logits)
    assert float(gradient[0, :, 0, :].abs().max()) == 0.0  # no-data pixels get no gradient
    weights = torch.tensor([1.0, 3.0, 0.2])
    weighted = cross_entropy_loss(logits, target, weights)
    expected_weighted = torch.nn.functional.cross_entropy(
        logits.movedim(1, -1)[valid], target[valid], weight=weights
    )
    assert torch.allclose(weighted, expected_weighted)


def test_class_weights_follow_the_stated_formulas() -> None:
    counts = np.array([1000.0, 100.0, 0.0, 10.0])
    present = counts > 0
    frequency = counts[present] / counts[present].sum()
    for method, power in (("inverse_frequency", 1.0), ("inverse_sqrt_frequency", 0.5)):
        expected = 1 / frequency**power
        expected /= expected.mean()
        weights = class_weights_from_counts(counts, method)
        assert np.allclose(weights[present], expected, rtol=1e-6)
        assert weights[2] == pytest.approx(expected.max())  # absent class: the largest weight
    assert class_weights_from_counts(counts, "none") is None
    with pytest.raises(InputError, match="inverse_frequency"):
        class_weights_from_counts(counts, "inverse")


def test_epoch_metrics_match_direct_counts() -> None:
    confusion = np.array([[50, 5, 0], [10, 30, 0], [0, 0, 0]])
    metrics = epoch_metrics(confusion, ["a", "b", "c"])
    assert metrics["iou_a"] == pytest.approx(50 / (55 + 60 - 50))
    assert metrics["f1_b"] == pytest.approx(2 * 30 / (40 + 35))
    assert metrics["precision_a"] == pytest.approx(50 / 60)
    assert metrics["recall_b"] == pytest.approx(30 / 40)
    assert np.isnan(metrics["iou_c"])  # absent from reference and prediction: left out of mIoU
    assert metrics["miou"] == pytest.approx((metrics["iou_a"] + metrics["iou_b"]) / 2)
    assert metrics["accuracy"] == pytest.approx(80 / 95)


# --- data ---------------------------------------------------------------------------------------


def test_augmentation_transforms_image_and_mask_identically() -> None:
    mask = torch.arange(6 * 6).reshape(6, 6)
    image = torch.stack([mask.float(), -mask.float()])
    settings = AugmentSettings(flips=True, rotate90=True, brightness_contrast=0.0)
    seen = set()
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        out_image, out_mask = augment_pair(image, mask, settings, generator)
        assert torch.equal(out_image[0], out_mask.float())
        assert torch.equal(out_image[1], -out_mask.float())
        seen.add(tuple(out_mask.flatten().tolist()))
    assert len(seen) == 8  # all 8 symmetries of the square occur


def test_padding_reflects_image_and_ignores_padded_target() -> None:
    assert padded_size(300) == 320 and padded_size(64) == 64
    image = torch.arange(2 * 300 * 300, dtype=torch.float32).reshape(2, 300, 300)
    target = torch.zeros(300, 300, dtype=torch.int64)
    padded_image, padded_target = pad_pair(image, target)
    assert padded_image.shape == (2, 320, 320) and padded_target.shape == (320, 320)
    assert torch.equal(padded_image[:, :300, :300], image)
    assert torch.equal(padded_image[:, 300, :300], image[:, 298, :])  # reflection about the edge
    assert (padded_target[300:] == IGNORE_INDEX).all() and (
        padded_target[:, 300:] == IGNORE_INDEX
    ).all()
    assert (padded_target[:300, :300] == 0).all()


def test_unknown_architecture_or_encoder_lists_valid_names() -> None:
    task = SegmentationTask()
    model = validate_config({})["model"]
    with pytest.raises(InputError, match="UnetPlusPlus"):
        task.build_model({**model, "architecture": "UNetX", "encoder": "resnet18"}, 4, 3)
    with pytest.raises(InputError, match="resnet34"):
        task.build_model({**model, "architecture": "Unet", "encoder": "resnet9000"}, 4, 3)


def test_no_validation_chips_is_an_input_error(chip_data: dict, tmp_path: Path) -> None:
    split = pd.read_parquet(chip_data["split"]).assign(split="train")
    split_path = tmp_path / "split.parquet"
    split.to_parquet(split_path)
    with pytest.raises(InputError, match="no chip with split == 'val'"):
        train_model(
            split_path, chip_data["chips_root"], tmp_path / "model", make_config(), progress=False
        )


# --- training runs ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["Unet", "UnetPlusPlus"])
def test_one_epoch_training_writes_model_folder(
    chip_data: dict, tmp_path: Path, architecture: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = torch.randn(2, 4, CHIP, CHIP, generator=torch.Generator().manual_seed(1))
    exported = {}
    original_export = train_module.export_model

    def export_and_record(path, module, metadata, epoch, scores):  # type: ignore[no-untyped-def]
        module.net.eval()
        with torch.no_grad():
            exported["logits"] = module.net(probe).clone()
        module.net.train()
        original_export(path, module, metadata, epoch, scores)

    monkeypatch.setattr(train_module, "export_model", export_and_record)
    out_dir = tmp_path / "model"
    summary = train_model(
        chip_data["split"],
        chip_data["chips_root"],
        out_dir,
        # float32 contiguous: the exact comparison of logits below (auto is bf16 on some CPUs)
        make_config(architecture, precision="float32", layout="contiguous"),
        progress=False,
    )
    assert (
        summary["epochs_completed"] == 1
        and summary["train_chips"] == 6
        and summary["val_chips"] == 2
    )
    for name in ("model.pt", "metrics.csv", "curves.png"):
        assert (out_dir / name).stat().st_size > 0, name
    assert not (out_dir / "last.ckpt").exists()  # removed after success (keep_checkpoints: false)

    metrics = pd.read_csv(out_dir / "metrics.csv")
    assert list(metrics["epoch"]) == [1]
    for column in (
        "train_loss",
        "val_loss",
        "val_miou",
        "val_accuracy",
        "val_iou_Bare soil",
        "val_f1_Water",
        "val_precision_Forest",
        "val_recall_Water",
        "lr",
    ):
        assert column in metrics.columns
    assert np.isfinite(
        metrics.loc[0, ["train_loss", "val_loss", "val_miou", "lr"]].astype(float)
    ).all()

    # model.pt loads without unpickling and predicts exactly what the in-memory network did.
    state, metadata = load_model_checkpoint(out_dir / "model.pt")
    assert metadata["architecture"] == architecture and metadata["bands"] == BANDS
    assert metadata["scales"] == [SCALE] * 4 and metadata["offsets"] == [OFFSET] * 4
    assert metadata["tile_size"] == CHIP and metadata["resolution"] == pytest.approx(10.0)
    assert metadata["classes"]["names"] == ["Forest", "Bare soil", "Water"]
    train_images = chip_data["images"][:6].astype(np.float64)
    valid = train_images != 0
    reflectance = train_images * SCALE + OFFSET
    expected_mean = [reflectance[:, b][valid[:, b]].mean() for b in range(4)]
    expected_std = [reflectance[:, b][valid[:, b]].std() for b in range(4)]
    assert np.allclose(metadata["mean"], expected_mean, rtol=1e-4)
    assert np.allclose(metadata["std"], expected_std, rtol=1e-3)
    model = build_segmentation_model(metadata["architecture"], metadata["encoder"], 4, 3)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(probe), exported["logits"], atol=1e-5)


@pytest.mark.slow
def test_resume_after_kill_continues_at_the_next_epoch_with_the_same_optimiser_state(
    chip_data: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(epochs=3, scheduler="onecycle", keep_checkpoints=True)
    out_dir = tmp_path / "model"
    original_save = train_module.LastCheckpoint.on_train_epoch_start

    def save_then_die(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        original_save(self, trainer, pl_module)
        if trainer.current_epoch == 2:  # killed right after the state of epoch 2 was saved
            raise RuntimeError("simulated kill")

    monkeypatch.setattr(train_module.LastCheckpoint, "on_train_epoch_start", save_then_die)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_model(chip_data["split"], chip_data["chips_root"], out_dir, config, progress=False)
    monkeypatch.setattr(train_module.LastCheckpoint, "on_train_epoch_start", original_save)
    saved = torch.load(out_dir / "last.ckpt", map_location="cpu", weights_only=True)
    first_rows = pd.read_csv(out_dir / "metrics.csv")
    assert list(first_rows["epoch"]) == [1, 2]

    starts = []

    def record_start(self) -> None:  # type: ignore[no-untyped-def]
        optimizer = self.trainer.optimizers[0]
        starts.append(
            (
                self.current_epoch,
                copy.deepcopy(optimizer.state_dict()),
                copy.deepcopy(self.trainer.lr_scheduler_configs[0].scheduler.state_dict()),
            )
        )

    monkeypatch.setattr(LandCoverModule, "on_train_epoch_start", record_start, raising=False)
    summary = train_model(
        chip_data["split"], chip_data["chips_root"], out_dir, config, progress=False
    )
    assert summary["resumed_from"] is not None
    assert [epoch for epoch, _, _ in starts] == [2]  # only the third epoch ran
    resumed_optimizer, resumed_scheduler = starts[0][1], starts[0][2]
    saved_optimizer = saved["optimizers"][0]
    assert resumed_optimizer["param_groups"][0]["lr"] == pytest.approx(
        saved_optimizer["param_groups"][0]["lr"]
    )
    assert resumed_scheduler["last_epoch"] == saved["schedulers"][0]["last_epoch"]
    for key, value in saved_optimizer["state"].items():
        assert torch.equal(resumed_optimizer["state"][key]["exp_avg"], value["exp_avg"])
        assert torch.equal(resumed_optimizer["state"][key]["step"], value["step"])
    rows = pd.read_csv(out_dir / "metrics.csv")
    assert list(rows["epoch"]) == [1, 2, 3]
    assert np.allclose(rows["train_loss"][:2], first_rows["train_loss"])
    assert summary["epochs_completed"] == 3
    load_model_checkpoint(out_dir / "model.pt")

    # All epochs done: a third call trains nothing.
    starts.clear()
    again = train_model(
        chip_data["split"], chip_data["chips_root"], out_dir, config, progress=False
    )
    assert starts == [] and again["epochs_completed"] == 3


def test_last_checkpoint_is_throttled_but_always_saved_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    saved = []
    monkeypatch.setattr(
        train_module, "collect_training_state", lambda trainer, *_: {"epoch": trainer.current_epoch}
    )
    monkeypatch.setattr(
        train_module, "save_training_state", lambda path, state: saved.append(state["epoch"])
    )
    trainer = SimpleNamespace(current_epoch=0, is_global_zero=True)
    callback = train_module.LastCheckpoint(tmp_path / "last.ckpt", interval_s=3600)
    for epoch in range(4):  # the state between epochs is taken as the next one starts
        trainer.current_epoch = epoch
        callback.on_train_epoch_start(trainer, None)  # type: ignore[arg-type]
    callback.on_train_end(trainer, None)  # type: ignore[arg-type]
    assert saved == [1, 3]  # the first save, then only the final state within the hour


def test_training_crop_is_the_same_window_of_image_and_target_and_a_multiple_of_32() -> None:
    from s2landcover.training.data import random_crop_pair

    image = torch.arange(2 * 300 * 300, dtype=torch.float32).reshape(2, 300, 300)
    target = torch.arange(300 * 300).reshape(300, 300)
    generator = torch.Generator().manual_seed(0)
    offsets = set()
    for _ in range(5):
        cropped, cropped_target = random_crop_pair(image, target, 32, generator)
        assert cropped.shape == (2, 288, 288) and cropped_target.shape == (288, 288)
        top, left = divmod(int(cropped_target[0, 0]), 300)
        assert torch.equal(cropped, image[:, top : top + 288, left : left + 288])
        offsets.add((top, left))
    assert len(offsets) > 1  # the offset is random: content may sit anywhere in the window
    small = torch.zeros(1, 20, 40)
    assert random_crop_pair(small, None, 32)[0].shape == (1, 32, 64)  # too small: padded instead


# --- several devices ---------------------------------------------------------------------------


def test_cluster_plugins_launch_own_processes_unless_srun_started_one_per_device() -> None:
    assert cluster_plugins({}) == []  # outside SLURM: Lightning's default environment
    assert cluster_plugins({"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "4"}) == []
    (plugin,) = cluster_plugins({"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1"})
    assert type(plugin).__name__ == "LightningEnvironment"


@pytest.mark.slow
def test_two_device_ddp_inside_a_one_task_slurm_job(chip_data: dict, tmp_path: Path) -> None:
    """`training.devices: 2` as a Snakemake SLURM job runs it (one task): Lightning starts a
    second process, the two train on halves of the chips (gloo on CPU here, NCCL on GPUs), and
    rank 0 alone writes the model folder."""
    config = make_config(accelerator="cpu", devices=2, strategy="ddp")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(json.loads(json.dumps(config))))
    env = dict(os.environ)
    env.update(
        SLURM_NTASKS="1",
        SLURM_NTASKS_PER_NODE="1",
        SLURM_JOB_NAME="smk-train_model",
        SLURM_JOB_ID="4242",
        SLURM_NNODES="1",
        OMP_NUM_THREADS="1",
    )
    out_dir = tmp_path / "model"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "s2lc"),
            "train",
            "--config",
            str(config_path),
            "--split",
            str(chip_data["split"]),
            "--chips-root",
            str(chip_data["chips_root"]),
            "--out-dir",
            str(out_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "world_size: 2" in result.stderr or "distributed_backend=gloo" in result.stderr, (
        result.stderr[-4000:]
    )
    summaries = [
        json.loads(line.split("train summary: ", 1)[1])
        for line in result.stderr.splitlines()
        if "train summary: " in line
    ]
    assert summaries and all(s["epochs_completed"] == 1 for s in summaries)
    for name in ("model.pt", "metrics.csv", "curves.png"):
        assert (out_dir / name).stat().st_size > 0, name
    assert list(pd.read_csv(out_dir / "metrics.csv")["epoch"]) == [1]
