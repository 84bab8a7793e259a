"""Chip classification: dominant-class labels, chip raster grid, one-batch training, prediction."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from affine import Affine

from chip_store_helpers import (
    BANDS,
    CLASS_REFLECTANCE,
    CLASSES,
    OFFSET,
    SCALE,
    SCENE_TRANSFORM,
    write_chip_store,
)
from raster_helpers import assert_reflected
from s2landcover.classes import ClassTable
from s2landcover.classify import chip_cells, chip_grid, classify_store, predict_chips
from s2landcover.config import validate_config
from s2landcover.errors import InputError
from s2landcover.io.checkpoints import load_model_checkpoint, save_model_checkpoint
from s2landcover.io.chipstore import ChipStore
from s2landcover.training.tasks import (
    ClassificationTask,
    SegmentationTask,
    build_classification_model,
    dominant_classes,
    task_from_config,
)
from s2landcover.training.train import train_model

CHIP = 32
PER_ROW = 4
ROWS = 3


@pytest.fixture(scope="module")
def chip_data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """12 chips of 32 px: a dominant class over a share of 0.5..0.97, another class, no data."""
    root = tmp_path_factory.mktemp("chips")
    rng = np.random.default_rng(1)
    n = PER_ROW * ROWS
    masks = np.zeros((n, CHIP, CHIP), dtype=np.uint8)
    for i in range(n):
        dominant = i % 3 + 1
        other = (i + 1) % 3 + 1
        masks[i] = dominant
        minority_rows = int(rng.integers(1, 15))  # up to 14 of 32 rows: dominant share >= 0.5
        masks[i, :minority_rows] = other
        masks[i, -2:, :5] = 0  # a little no data
    reflectance = CLASS_REFLECTANCE[np.maximum(masks, 1) - 1].transpose(0, 3, 1, 2)
    reflectance = reflectance + rng.normal(0, 0.01, reflectance.shape)
    images = np.clip((reflectance - OFFSET) / SCALE, 1, 65535).astype(np.uint16)
    images[:, :, -2:, :5] = 0
    write_chip_store(
        root / "size32" / "sceneA", "sceneA", images, masks, len(CLASSES), per_row=PER_ROW
    )
    split = pd.DataFrame(
        {
            "chip_id": [
                f"sceneA_r{(i // PER_ROW) * CHIP}_c{(i % PER_ROW) * CHIP}" for i in range(n)
            ],
            "scene": "sceneA",
            "store_index": np.arange(n),
            "split": ["train"] * 8 + ["val"] * 2 + ["test"] * 2,
        }
    ).iloc[:-1]  # the last chip is "dropped" (not in the split table)
    split_path = root / "split.parquet"
    split.to_parquet(split_path)
    index = pd.read_parquet(root / "size32" / "sceneA" / "index.parquet")
    return {"chips_root": root / "size32", "split": split_path, "masks": masks, "index": index}


def make_config(architecture: str = "small_cnn", min_fraction: float = 0.0) -> dict:
    return validate_config(
        {
            "bands": BANDS,
            "classes": CLASSES,
            "tile_size": CHIP,
            "task": "classification",
            "classification": {"min_dominant_fraction": min_fraction},
            "model": {"name": "tiny", "architecture": architecture, "encoder": "resnet18"},
            "training": {
                "epochs": 1,
                "batch_size": 4,
                "num_workers": 0,
                "checkpoint_interval_s": 0,
                "scheduler": "none",
                "learning_rate": 0.01,
            },
        }
    )


def test_dominant_classes_equal_a_direct_count_on_the_masks(chip_data: dict) -> None:
    positions, shares = dominant_classes(chip_data["index"], len(CLASSES))
    for i, mask in enumerate(chip_data["masks"]):
        counts = np.bincount(mask[mask > 0], minlength=len(CLASSES) + 1)[1:]
        assert positions[i] == counts.argmax()
        assert shares[i] == pytest.approx(counts.max() / counts.sum())


def test_min_dominant_fraction_leaves_out_mixed_chips(chip_data: dict) -> None:
    index = chip_data["index"]
    _, shares = dominant_classes(index, len(CLASSES))
    threshold = float(np.median(shares))
    targets = ClassificationTask(threshold).chip_targets(index, len(CLASSES))
    assert targets is not None
    np.testing.assert_array_equal(targets < 0, shares < threshold)
    assert 0 < (targets < 0).sum() < len(index)
    counts = ClassificationTask(threshold).class_counts(index, len(CLASSES))
    assert counts.sum() == (targets >= 0).sum()
    # A chip without a valid pixel has no target whatever the threshold.
    empty = index.iloc[:1].copy()
    empty[[f"px_{k}" for k in range(1, 4)]] = 0
    assert dominant_classes(empty, len(CLASSES))[0][0] == -1


def test_task_from_config_picks_classification_and_rejects_unet() -> None:
    assert isinstance(task_from_config(validate_config({})), SegmentationTask)
    task = task_from_config(make_config(min_fraction=0.6))
    assert isinstance(task, ClassificationTask) and task.min_dominant_fraction == 0.6
    assert task.monitor == "val_accuracy"
    config = make_config()
    config["model"]["architecture"] = "Unet"
    with pytest.raises(InputError, match="small_cnn"):
        task_from_config(config)
    with pytest.raises(InputError, match="resnet18"):
        build_classification_model("encoder", "no-such-encoder", 4, 3)


@pytest.mark.parametrize("architecture", ["small_cnn", "encoder"])
def test_classifiers_give_one_logit_per_class(architecture: str) -> None:
    model = build_classification_model(architecture, "resnet18", 4, 3).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 4, 64, 64)).shape == (2, 3)


def test_chip_grid_is_the_scene_grid_scaled_by_the_stride() -> None:
    # stride == tile size, sides a multiple: exactly the chip grid
    grid = chip_grid(SCENE_TRANSFORM, "EPSG:32631", 128, 96, 32, 32)
    assert grid.transform == SCENE_TRANSFORM @ Affine.scale(32)
    assert (grid.width, grid.height) == (4, 3)
    for row_off, col_off in [(0, 0), (32, 64), (64, 96)]:
        row, col = chip_cells(np.array([row_off]), 32)[0], chip_cells(np.array([col_off]), 32)[0]
        assert grid.transform @ (col, row) == SCENE_TRANSFORM @ (col_off, row_off)
        assert grid.transform @ (col + 1, row + 1) == SCENE_TRANSFORM @ (col_off + 32, row_off + 32)
    # overlapping windows (stride 16): one pixel per window, pixel size = stride
    grid = chip_grid(SCENE_TRANSFORM, "EPSG:32631", 128, 96, 32, 16)
    assert grid.transform == SCENE_TRANSFORM @ Affine.scale(16)
    assert grid.transform.a == 160.0 and (grid.width, grid.height) == (7, 5)
    # edge shift: 100 px at 30 px gives windows at 0, 30, 60 and 70 -> pixels 0, 1, 2, 3
    grid = chip_grid(SCENE_TRANSFORM, "EPSG:32631", 100, 100, 30, 30, "shift")
    assert grid.width == 4
    np.testing.assert_array_equal(chip_cells(np.array([0, 30, 60, 70]), 30), [0, 1, 2, 3])
    assert chip_grid(SCENE_TRANSFORM, "EPSG:32631", 100, 100, 30, 30, "drop").width == 3


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["small_cnn", "encoder"])
def test_one_batch_training_then_prediction_of_every_chip(
    chip_data: dict, tmp_path: Path, architecture: str
) -> None:
    config = make_config(architecture)
    config["training"]["keep_checkpoints"] = True  # last.ckpt is compared below
    summary = train_model(
        chip_data["split"], chip_data["chips_root"], tmp_path / "model", config, progress=False
    )
    assert summary["epochs_completed"] == 1
    assert (summary["train_chips"], summary["val_chips"]) == (8, 2)
    state, meta = load_model_checkpoint(tmp_path / "model" / "model.pt")
    assert meta["task"] == "classification" and meta["architecture"] == architecture
    metrics = pd.read_csv(tmp_path / "model" / "metrics.csv")
    assert 0.0 <= metrics["val_accuracy"].iloc[0] <= 1.0
    assert (tmp_path / "model" / "curves.png").stat().st_size > 0

    # Reloading model.pt gives the same logits as the trained network (last.ckpt: same epoch).
    reloaded = build_classification_model(architecture, "resnet18", 4, 3)
    reloaded.load_state_dict(state)
    trained = build_classification_model(architecture, "resnet18", 4, 3)
    last = torch.load(tmp_path / "model" / "last.ckpt", map_location="cpu", weights_only=True)
    trained.load_state_dict(
        {k[len("net.") :]: v for k, v in last["model"].items() if k.startswith("net.")}
    )
    batch = torch.randn(3, 4, CHIP, CHIP, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(batch), trained.eval()(batch))

    out = tmp_path / "chips_out"
    result = predict_chips(
        tmp_path / "model" / "model.pt", chip_data["chips_root"], chip_data["split"], out
    )
    table = pd.read_parquet(out / "chips.parquet")
    assert len(table) == PER_ROW * ROWS  # every chip, the dropped one included
    assert set(table["split"]) == {"train", "val", "test", "dropped"}
    assert table["predicted_class"].between(1, 3).all()
    with rasterio.open(out / "sceneA.tif") as src:
        assert src.transform == SCENE_TRANSFORM @ Affine.scale(CHIP)
        assert (src.width, src.height) == (PER_ROW, ROWS) and src.dtypes[0] == "uint8"
        assert src.colormap(1)[1][:3] == (0x1B, 0x6E, 0x2A)
        labels = src.read(1)
    np.testing.assert_array_equal(
        labels[table["row_off"] // CHIP, table["col_off"] // CHIP], table["predicted_class"]
    )
    layer = gpd.read_file(out / "chips.gpkg", layer="chips")
    assert {"predicted_class", "predicted_name", "confidence", "reference_class", "split"} <= set(
        layer.columns
    )
    assert len(layer) == PER_ROW * ROWS
    report = json.loads((out / "metrics.json").read_text())
    val = report["splits"]["val"]
    assert val["chips"] == 2 and np.asarray(val["confusion_matrix"]).sum() == 2
    # baseline: the most frequent dominant class of the 8 training chips (classes 1, 2, 3 cycle)
    reference = table[table["split"] == "val"]["reference_class"]
    assert val["baseline_accuracy"] == pytest.approx((reference == 1).mean())
    assert result["accuracy"]["val"] == val["accuracy"]
    assert (out / "confusion_matrix.png").stat().st_size > 0


@pytest.mark.slow
def test_min_dominant_fraction_shrinks_the_training_set(chip_data: dict, tmp_path: Path) -> None:
    _, shares = dominant_classes(chip_data["index"], len(CLASSES))
    threshold = float(np.sort(shares[:8])[2])  # leaves out the 2 most mixed training chips...
    expected_val = int((shares[8:10] >= threshold).sum())
    if expected_val == 0:
        pytest.skip("fixture has no val chip above the threshold")
    summary = train_model(
        chip_data["split"],
        chip_data["chips_root"],
        tmp_path / "model",
        make_config(min_fraction=threshold),
        progress=False,
    )
    assert summary["train_chips"] == int((shares[:8] >= threshold).sum()) == 6
    assert summary["val_chips"] == expected_val
    assert summary["chips_left_out"] == 10 - 6 - expected_val
    with pytest.raises(InputError, match="min_dominant_fraction"):
        train_model(
            chip_data["split"],
            chip_data["chips_root"],
            tmp_path / "model2",
            make_config(min_fraction=1.0),
            progress=False,
        )


def classifier_checkpoint(path: Path, weights_classes: int, task: str = "classification") -> Path:
    """A small_cnn checkpoint whose weights score ``weights_classes`` classes; the metadata names
    the 3 classes of the chip fixture."""
    state = build_classification_model("small_cnn", "resnet18", 4, weights_classes).state_dict()
    metadata = {
        "task": task,
        "architecture": "small_cnn",
        "encoder": "resnet18",
        "bands": BANDS,
        "scales": [SCALE] * 4,
        "offsets": [OFFSET] * 4,
        "mean": [0.1] * 4,
        "std": [0.1] * 4,
        "classes": ClassTable.from_config(CLASSES).to_dict(),
        "tile_size": CHIP,
        "resolution": 10.0,
    }
    save_model_checkpoint(path, state, metadata)
    return path


def test_classify_refuses_weights_that_do_not_fit_naming_the_file(
    chip_data: dict, tmp_path: Path
) -> None:
    """The loader of whole-scene prediction: a weight mismatch is an InputError, no traceback."""
    checkpoint = classifier_checkpoint(tmp_path / "five_classes.pt", weights_classes=5)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"five_classes\.pt: weights do not fit small_cnn"):
        predict_chips(checkpoint, chip_data["chips_root"], chip_data["split"], out, device="cpu")
    segmentation = classifier_checkpoint(tmp_path / "seg.pt", 3, task="segmentation")
    with pytest.raises(InputError, match=r"seg\.pt is a 'segmentation' model; chip classif"):
        predict_chips(segmentation, chip_data["chips_root"], chip_data["split"], out)
    assert not out.exists()  # refused before anything is written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_classify_refuses_an_absent_cuda_device(chip_data: dict, tmp_path: Path) -> None:
    checkpoint = classifier_checkpoint(tmp_path / "model.pt", weights_classes=3)
    with pytest.raises(InputError, match="CUDA is not available"):
        predict_chips(
            checkpoint, chip_data["chips_root"], chip_data["split"], tmp_path / "o", device="cuda"
        )


# ------------------------------------------------ what the network receives (classify_store)

MEAN = CLASS_REFLECTANCE.mean(axis=0).tolist()
STD = (CLASS_REFLECTANCE.std(axis=0) + 0.02).tolist()


class InputRecordingClassifier(torch.nn.Module):
    """Chip logits from the band means of the chip; keeps a float32 copy of every input batch."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)
        self.inputs: list[np.ndarray] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().float().cpu().numpy().copy())
        return self.linear(x.mean(dim=(2, 3)))


def chip_images(count: int, size: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(stored uint16 (N, 4, T, T) at SCALE/OFFSET with a no-data corner, masks (N, T, T))."""
    rng = np.random.default_rng(seed)
    masks = rng.integers(1, 4, (count, size, size)).astype(np.uint8)
    reflectance = CLASS_REFLECTANCE[masks - 1].transpose(0, 3, 1, 2)
    reflectance = reflectance + rng.normal(0, 0.01, reflectance.shape)
    stored = np.clip((reflectance - OFFSET) / SCALE, 1, 65535).astype(np.uint16)
    stored[:, :, :3, :4] = 0
    masks[:, :3, :4] = 0
    return stored, masks


def by_name_input(stored: np.ndarray) -> np.ndarray:
    """Network input of chips stored at SCALE/OFFSET in the model's band order (no data -> 0)."""
    reflectance = stored.astype(np.float64) * SCALE + OFFSET
    image = (reflectance - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
    image[np.broadcast_to(np.all(stored == 0, axis=1, keepdims=True), image.shape)] = 0
    return image.astype(np.float32)


def model_meta() -> dict:
    """The metadata of a model trained on a scene at SCALE/OFFSET for every band."""
    return {
        "bands": BANDS,
        "scales": [SCALE] * 4,
        "offsets": [OFFSET] * 4,
        "mean": MEAN,
        "std": STD,
    }


def test_chip_input_uses_the_stores_own_scale_and_offset_per_band(tmp_path: Path) -> None:
    """A chip store whose bands each have their own scale and offset (none equal to the model's
    training scene): the network receives the reflectance of each band by its own scale/offset."""
    stored, masks = chip_images(6, 32)
    k = np.array([2, 3, 5, 1])[None, :, None, None]
    d = np.array([100, 7, 0, 250])[None, :, None, None]
    nodata = np.all(stored == 0, axis=1, keepdims=True)
    recoded = np.where(nodata, 0, stored.astype(np.int64) * k + d).astype(np.uint16)
    scales = [SCALE / int(kv) for kv in k.ravel()]
    offsets = [
        OFFSET - int(dv) * SCALE / int(kv) for kv, dv in zip(k.ravel(), d.ravel(), strict=True)
    ]
    store_dir = tmp_path / "sceneB"
    write_chip_store(store_dir, "sceneB", recoded, masks, 3, scales=scales, offsets=offsets)
    model = InputRecordingClassifier().eval()
    predicted, _ = classify_store(model, ChipStore(store_dir), model_meta(), 1, batch_size=4)
    inputs = np.concatenate(model.inputs)
    np.testing.assert_allclose(inputs, by_name_input(stored), rtol=1e-5, atol=1e-4)
    assert predicted.min() >= 1


def test_chip_store_with_the_bands_in_another_order_is_refused(tmp_path: Path) -> None:
    stored, masks = chip_images(2, 32)
    order = [2, 0, 3, 1]
    names = [BANDS[i] for i in order]
    write_chip_store(tmp_path / "sceneC", "sceneC", stored[:, order], masks, 3, bands=names)
    model = InputRecordingClassifier().eval()
    with pytest.raises(InputError, match=r"bands \['B04', 'B02', 'B08', 'B03'\]"):
        classify_store(model, ChipStore(tmp_path / "sceneC"), model_meta(), 1)
    assert model.inputs == []


def test_chips_are_padded_by_reflection_to_the_encoder_multiple(tmp_path: Path) -> None:
    """20 px chips for an smp encoder (sides a multiple of 32): the 12 padded rows and columns
    mirror the chip (zero padding would feed the network no-data pixels)."""
    stored, masks = chip_images(3, 20)
    write_chip_store(tmp_path / "sceneD", "sceneD", stored, masks, 3)
    model = InputRecordingClassifier().eval()
    classify_store(model, ChipStore(tmp_path / "sceneD"), model_meta(), 32)
    inputs = np.concatenate(model.inputs)
    assert inputs.shape == (3, 4, 32, 32)
    assert_reflected(inputs, by_name_input(stored))
