"""Training under change, faults and hostile files (issue 15, cases 1, 3, 6, 9; issue 18).

- a changed split or chip store starts training afresh, and evaluation refuses a stale model;
- a last.ckpt carrying a pickled payload never runs it;
- a killed and resumed training equals the uninterrupted one bit for bit;
- zeroed bytes inside model.pt's weights fail the load with a clear error;
- only model.pt, metrics.csv and curves.png stay after success unless asked otherwise.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chip_store_helpers import BANDS, CLASS_REFLECTANCE, CLASSES, OFFSET, SCALE, write_chip_store
from s2landcover.classes import ClassTable
from s2landcover.config import validate_config
from s2landcover.errors import InputError
from s2landcover.io.checkpoints import load_model_checkpoint, save_model_checkpoint
from s2landcover.training.data import ChipDataModule, ChipDataset, EpochSampler, SceneInput
from s2landcover.training.digests import check_model_training_data
from s2landcover.training.module import LandCoverModule
from s2landcover.training.state import capture_rng, load_training_state, restore_rng
from s2landcover.training.train import train_model

CHIP = 32
N_CHIPS = 8


@pytest.fixture
def chip_data(tmp_path: Path) -> dict:
    """8 chips of 32 x 32 px, 4 bands, 3 classes; 6 train, 2 val (a fresh copy per test)."""
    rng = np.random.default_rng(0)
    masks = np.kron(
        rng.integers(1, len(CLASSES) + 1, size=(N_CHIPS, 4, 4)),
        np.ones((CHIP // 4, CHIP // 4), dtype=np.int64),
    ).astype(np.uint8)
    reflectance = CLASS_REFLECTANCE[masks - 1].transpose(0, 3, 1, 2) + rng.normal(
        0, 0.01, (N_CHIPS, 4, CHIP, CHIP)
    )
    images = np.clip((reflectance - OFFSET) / SCALE, 1, 65535).astype(np.uint16)
    chips_root = tmp_path / "chips" / f"size{CHIP}"
    write_chip_store(chips_root / "sceneA", "sceneA", images, masks, len(CLASSES))
    split_path = tmp_path / "split.parquet"
    write_split(split_path, ["train"] * 6 + ["val"] * 2)
    return {"chips_root": chips_root, "split": split_path}


def write_split(path: Path, splits: list[str]) -> None:
    pd.DataFrame(
        {
            "chip_id": [f"c{i}" for i in range(N_CHIPS)],
            "scene": "sceneA",
            "store_index": np.arange(N_CHIPS),
            "split": splits,
        }
    ).to_parquet(path)


def make_config(epochs: int = 1, **training: object) -> dict:
    return validate_config(
        {
            "bands": BANDS,
            "classes": CLASSES,
            "tile_size": CHIP,
            "model": {"name": "tiny", "architecture": "Unet", "encoder": "resnet18"},
            "training": {
                "epochs": epochs,
                "batch_size": 2,
                "num_workers": 0,
                "checkpoint_interval_s": 0,
                "learning_rate": 0.01,
                "augment": {"flips": True, "rotate90": True, "brightness_contrast": 0.1},
                **training,
            },
        }
    )


def train(data: dict, out_dir: Path, config: dict) -> dict:
    return train_model(data["split"], data["chips_root"], out_dir, config, progress=False)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model_checkpoint(path)[0]


# --- 15.6: reproducible resume -------------------------------------------------------------------


@pytest.mark.slow
def test_killed_and_resumed_training_equals_the_uninterrupted_run_bit_for_bit(
    chip_data: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three epochs uninterrupted vs killed in the middle of epoch 3 and run again: the same
    weights, the same metrics.csv bytes, and the same global random state at each epoch start."""
    config = make_config(epochs=3, scheduler="onecycle")
    rng_at_start: dict[str, list] = {"whole": [], "resumed": []}
    run = {"name": "whole"}
    original_step = LandCoverModule.training_step

    def record_start(self) -> None:  # type: ignore[no-untyped-def]
        rng_at_start[run["name"]].append(
            (
                self.current_epoch,
                torch.get_rng_state().clone(),
                np.random.get_state()[1].copy(),  # noqa: NPY002
                random.getstate(),
            )
        )

    monkeypatch.setattr(LandCoverModule, "on_train_epoch_start", record_start, raising=False)
    whole = tmp_path / "whole"
    train(chip_data, whole, config)

    killed = tmp_path / "killed"

    def die_in_epoch_3(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        if self.current_epoch == 2 and batch_idx == 1:
            raise RuntimeError("simulated kill")
        return original_step(self, batch, batch_idx)

    run["name"] = "killed"
    rng_at_start["killed"] = []
    monkeypatch.setattr(LandCoverModule, "training_step", die_in_epoch_3)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(chip_data, killed, config)
    assert (killed / "last.ckpt").is_file() and not (killed / "model.pt").exists()
    state, _ = load_training_state(killed / "last.ckpt")
    assert state is not None and state["epochs_completed"] == 2
    # What Snakemake does to a failed job: its declared outputs go, last.ckpt and best.pt stay.
    for name in ("metrics.csv", "curves.png"):
        (killed / name).unlink()

    monkeypatch.setattr(LandCoverModule, "training_step", original_step)
    run["name"] = "resumed"
    summary = train(chip_data, killed, config)
    assert summary["resumed_from"] is not None and summary["epochs_completed"] == 3
    assert [epoch for epoch, *_ in rng_at_start["resumed"]] == [2]  # only epoch 3 ran again

    a, b = weights(whole / "model.pt"), weights(killed / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / "metrics.csv").read_bytes() == (killed / "metrics.csv").read_bytes()
    assert len(pd.read_csv(whole / "metrics.csv")) == 3
    _, torch_a, numpy_a, python_a = rng_at_start["whole"][2]
    _, torch_b, numpy_b, python_b = rng_at_start["resumed"][0]
    assert torch.equal(torch_a, torch_b) and np.array_equal(numpy_a, numpy_b)
    assert python_a == python_b


def test_random_state_round_trips_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)  # noqa: NPY002
    torch.manual_seed(3)
    state = capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.random(), torch.rand(1))  # noqa: NPY002
    random.seed(9)
    np.random.seed(9)  # noqa: NPY002
    torch.manual_seed(9)
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.random()) == expected[:2]  # noqa: NPY002
    assert torch.equal(torch.rand(1), expected[2])


def test_epoch_batches_do_not_depend_on_loader_workers(chip_data: dict) -> None:
    """Order and augmentation are keyed by (seed, epoch, chip): 0 or 2 worker processes, fresh
    or not, give the same batches, so a restart with new worker seeds changes nothing."""
    from s2landcover.training.data import AugmentSettings

    split = pd.read_parquet(chip_data["split"])
    train_chips = split[split["split"] == "train"].reset_index(drop=True)
    chip_dir = str(chip_data["chips_root"] / "sceneA")
    scenes = {"sceneA": SceneInput(chip_dir, (SCALE,) * 4, (OFFSET,) * 4, 0.0)}
    augment = AugmentSettings(True, True, 0.1)
    dataset = ChipDataset(train_chips, scenes, [0.1] * 4, [0.1] * 4, augment, seed=7)

    def epoch_batches(workers: int, epoch: int) -> list[torch.Tensor]:
        module = ChipDataModule(dataset, dataset, batch_size=2, num_workers=workers, seed=7)
        loader = module.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [image for image, _ in loader]

    serial = epoch_batches(0, 1)
    parallel = epoch_batches(2, 1)
    assert all(torch.equal(x, y) for x, y in zip(serial, parallel, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(serial, epoch_batches(0, 2), strict=True))
    # Two processes of a DDP run share every chip exactly once (padded to equal lengths).
    ranks = [list(EpochSampler(5, 7, True, rank, 2)) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    assert {position for _, position in ranks[0] + ranks[1]} == set(range(5))


# --- 15.3: nothing unpickled from last.ckpt -------------------------------------------------------


class Payload:
    """Unpickling this creates the marker file (what a hostile last.ckpt would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))


@pytest.mark.slow
def test_a_pickled_payload_in_last_ckpt_does_not_run(
    chip_data: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out_dir = tmp_path / "model"
    out_dir.mkdir()
    marker = tmp_path / "payload-ran"
    torch.save(
        {"format": "s2landcover-training-state", "version": 1, "epochs_completed": 1,
         "hook": Payload(marker)},
        out_dir / "last.ckpt",
    )  # fmt: skip
    state, why = load_training_state(out_dir / "last.ckpt")
    assert state is None and "cannot be loaded safely" in why
    with caplog.at_level(logging.WARNING, logger="s2landcover.training.train"):
        summary = train(chip_data, out_dir, make_config())
    assert not marker.exists()
    assert summary["resumed_from"] is None and summary["epochs_completed"] == 1
    assert "starting fresh" in caplog.text and "cannot be loaded safely" in caplog.text
    load_model_checkpoint(out_dir / "model.pt")


def test_a_damaged_last_ckpt_is_not_resumed_from(tmp_path: Path) -> None:
    from s2landcover.training.state import save_training_state

    weight = torch.arange(4096, dtype=torch.float32) + 1.0
    state = {
        "format": "s2landcover-training-state", "version": 1, "model": {"w": weight},
        "optimizers": [{"state": {0: {"exp_avg": weight * 2}}, "param_groups": []}],
    }  # fmt: skip
    path = tmp_path / "last.ckpt"
    save_training_state(path, state)
    loaded, _ = load_training_state(path)
    assert loaded is not None and torch.equal(loaded["model"]["w"], weight)
    data = bytearray(path.read_bytes())
    start = bytes(data).find((weight * 2).numpy().tobytes()) + 8000
    data[start : start + 64] = bytes(64)
    path.write_bytes(bytes(data))
    loaded, why = load_training_state(path)
    assert loaded is None and "corrupt" in why


# --- 15.1: nothing stale after an upstream change -------------------------------------------------


@pytest.mark.slow
def test_changed_data_starts_training_afresh_and_evaluation_refuses_the_stale_model(
    chip_data: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out_dir = tmp_path / "model"
    config = make_config(keep_checkpoints=True)
    first = train(chip_data, out_dir, config)
    stale = tmp_path / "stale.pt"
    shutil.copyfile(out_dir / "model.pt", stale)
    assert check_model_training_data(stale, chip_data["split"])["status"] == "match"

    # Same settings and data, all epochs done: nothing to do, the same model.
    again = train(chip_data, out_dir, config)
    assert again["resumed_from"] is not None
    assert (out_dir / "model.pt").read_bytes() == stale.read_bytes()

    # Another split (as from another split.seed): two training chips become validation chips.
    write_split(chip_data["split"], ["val", "val"] + ["train"] * 6)
    with caplog.at_level(logging.WARNING, logger="s2landcover.training.train"):
        second = train(chip_data, out_dir, config)
    assert "starting fresh: data changed" in caplog.text
    assert second["resumed_from"] is None
    assert second["training_data_digest"] != first["training_data_digest"]
    old, new = weights(stale), weights(out_dir / "model.pt")
    assert any(not torch.equal(old[k], new[k]) for k in old)
    with pytest.raises(InputError, match=r"stale\.pt was trained on another split table"):
        check_model_training_data(stale, chip_data["split"])
    assert check_model_training_data(out_dir / "model.pt", chip_data["split"])["status"] == "match"

    # A chip store changed in place (same size, new pixels): fresh again.
    images_path = chip_data["chips_root"] / "sceneA" / "images.npy"
    images = np.load(images_path, mmap_mode="r+")
    images[3, :, :4, :4] += 100
    images.flush()
    del images
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="s2landcover.training.train"):
        third = train(chip_data, out_dir, config)
    assert "starting fresh: data changed" in caplog.text
    assert third["training_data_digest"] != second["training_data_digest"]


def test_evaluation_refuses_a_model_trained_on_another_split(tmp_path: Path) -> None:
    from test_evaluate import CLASSES as EVAL_CLASSES
    from test_evaluate import run_stage, write_synthetic_run

    run = write_synthetic_run(tmp_path)
    metadata = {
        "task": "segmentation", "architecture": "Unet", "encoder": "resnet18", "bands": BANDS,
        "scales": [SCALE] * 4, "offsets": [OFFSET] * 4, "mean": [0.1] * 4, "std": [0.1] * 4,
        "classes": EVAL_CLASSES.to_dict(), "tile_size": CHIP, "resolution": 10.0,
        "training_data": {"digest": "0" * 16, "split_sha256": "f" * 64, "classes_sha256": None},
    }  # fmt: skip
    save_model_checkpoint(run["model_dir"] / "model.pt", {"w": torch.zeros(3)}, metadata)
    with pytest.raises(InputError, match="trained on another split table"):
        run_stage(tmp_path, run)
    assert not (tmp_path / "evaluation" / "metrics.json").exists()

    from s2landcover.training.digests import classes_sha256, file_sha256

    metadata["training_data"] = {
        "digest": "0" * 16,
        "split_sha256": file_sha256(run["split"]),
        "classes_sha256": classes_sha256(EVAL_CLASSES.to_dict()),
    }
    save_model_checkpoint(run["model_dir"] / "model.pt", {"w": torch.zeros(3)}, metadata)
    run_stage(tmp_path, run)
    import json

    recorded = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert recorded["training_data"]["status"] == "match"


# --- 15.9: bit rot in model.pt ---------------------------------------------------------------


def test_zeroed_bytes_inside_the_weights_fail_the_load_naming_the_file(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    state = {"conv.weight": torch.randn(64, 32, 3, 3, generator=generator) + 5.0}
    metadata = {
        "task": "segmentation", "architecture": "Unet", "encoder": "resnet18", "bands": BANDS,
        "scales": [SCALE] * 4, "offsets": [OFFSET] * 4, "mean": [0.1] * 4, "std": [0.1] * 4,
        "classes": ClassTable.from_config(CLASSES).to_dict(), "tile_size": CHIP,
        "resolution": 10.0,
    }  # fmt: skip
    path = tmp_path / "model.pt"
    save_model_checkpoint(path, state, metadata)
    load_model_checkpoint(path)  # intact: loads
    data = bytearray(path.read_bytes())
    start = bytes(data).find(state["conv.weight"].numpy().tobytes())
    assert start > 0
    middle = start + state["conv.weight"].numel() * 2
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"model\.pt is corrupt: its weights do not match"):
        load_model_checkpoint(path)


# --- 18: no leftovers ------------------------------------------------------------------------


@pytest.mark.slow
def test_only_the_model_metrics_and_curves_stay_after_success(
    chip_data: dict, tmp_path: Path
) -> None:
    out_dir = tmp_path / "model"
    train(chip_data, out_dir, make_config())
    assert sorted(p.name for p in out_dir.iterdir()) == ["curves.png", "metrics.csv", "model.pt"]
    kept = tmp_path / "kept"
    train(chip_data, kept, make_config(keep_checkpoints=True))
    assert {"best.pt", "last.ckpt"} <= {p.name for p in kept.iterdir()}
