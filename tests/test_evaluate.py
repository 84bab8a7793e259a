"""Tests of the evaluation: confusion matrices, metrics, windowed sums, split areas, the stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from raster_helpers import write_geotiff, write_like, write_scene_stack
from s2landcover.classes import ClassTable
from s2landcover.config import validate_config
from s2landcover.errors import InputError
from s2landcover.evaluate import (
    accumulate_area_counts,
    area_mask,
    area_metrics,
    chip_windows,
    confusion_counts,
    confusion_matrix,
    evaluate_model,
    metrics_from_confusion,
    select_sample_chips,
)
from s2landcover.io.evaluation_io import iter_label_windows
from s2landcover.io.rasters import Grid, geotiff_profile
from s2landcover.windows import aligned_windows

CONFIG = validate_config({})
CLASSES = ClassTable.from_config(CONFIG["classes"])
K = CLASSES.num_classes
NAMES = list(CLASSES.names)
BANDS = ("B02", "B03", "B04", "B08")
# Reflectance of each class in B02, B03, B04, B08: plausible land-cover spectra.
CLASS_REFLECTANCE = {
    1: (0.03, 0.05, 0.03, 0.30),
    2: (0.05, 0.09, 0.07, 0.35),
    3: (0.08, 0.11, 0.13, 0.28),
    4: (0.12, 0.13, 0.15, 0.20),
    5: (0.14, 0.17, 0.21, 0.25),
    6: (0.04, 0.05, 0.03, 0.01),
}


def random_labels(rng: np.random.Generator, shape: tuple[int, int], nodata_share: float = 0.2):
    """Random reference and prediction rasters in 0..K with some no data in each."""
    reference = rng.integers(1, K + 1, shape).astype(np.uint8)
    prediction = np.where(rng.random(shape) < 0.6, reference, rng.integers(1, K + 1, shape)).astype(
        np.uint8
    )
    reference[rng.random(shape) < nodata_share] = 0
    prediction[rng.random(shape) < nodata_share / 2] = 0
    return reference, prediction


# --- metrics against independent computations ---------------------------------------------------


def test_confusion_matrix_equals_sklearn_and_sums_to_valid_pixels():
    rng = np.random.default_rng(1)
    reference, prediction = random_labels(rng, (97, 131))
    matrix = confusion_matrix(reference, prediction, K)
    valid = (reference > 0) & (prediction > 0)
    expected = sk_confusion_matrix(
        reference[valid], prediction[valid], labels=list(range(1, K + 1))
    )
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.sum() == valid.sum()
    assert matrix.shape == (K, K)


def test_metrics_equal_sklearn_per_class_and_overall():
    rng = np.random.default_rng(2)
    reference, prediction = random_labels(rng, (120, 80))
    valid = (reference > 0) & (prediction > 0)
    y_true, y_pred = reference[valid], prediction[valid]
    labels = list(range(1, K + 1))
    metrics = metrics_from_confusion(confusion_matrix(reference, prediction, K), NAMES)
    iou = [metrics["per_class"][n]["iou"] for n in NAMES]
    f1 = [metrics["per_class"][n]["f1"] for n in NAMES]
    np.testing.assert_allclose(iou, jaccard_score(y_true, y_pred, labels=labels, average=None))
    np.testing.assert_allclose(f1, f1_score(y_true, y_pred, labels=labels, average=None))
    np.testing.assert_allclose(
        [metrics["per_class"][n]["precision"] for n in NAMES],
        precision_score(y_true, y_pred, labels=labels, average=None),
    )
    np.testing.assert_allclose(
        [metrics["per_class"][n]["recall"] for n in NAMES],
        recall_score(y_true, y_pred, labels=labels, average=None),
    )
    assert metrics["miou"] == pytest.approx(jaccard_score(y_true, y_pred, average="macro"))
    assert metrics["overall_accuracy"] == pytest.approx(np.mean(y_true == y_pred))
    assert [metrics["per_class"][n]["support"] for n in NAMES] == [
        int((y_true == c).sum()) for c in labels
    ]
    assert metrics["pixels"] == valid.sum()


def test_metrics_of_absent_class_are_nan_and_left_out_of_means():
    matrix = np.zeros((3, 3), dtype=np.int64)
    matrix[0, 0], matrix[0, 1], matrix[1, 1] = (
        6,
        2,
        4,
    )  # class 3 neither in reference nor prediction
    metrics = metrics_from_confusion(matrix, ["a", "b", "c"])
    assert np.isnan(metrics["per_class"]["c"]["iou"])
    assert metrics["per_class"]["a"]["iou"] == pytest.approx(6 / 8)
    assert metrics["per_class"]["b"]["iou"] == pytest.approx(4 / 6)
    assert metrics["miou"] == pytest.approx((6 / 8 + 4 / 6) / 2)
    assert metrics["per_class"]["b"]["f1"] == pytest.approx(2 * 4 / (2 * 4 + 2))
    assert metrics["overall_accuracy"] == pytest.approx(10 / 12)


def test_perfect_prediction_scores_one():
    reference = np.tile(np.arange(K + 1, dtype=np.uint8), (5, 3))
    metrics = metrics_from_confusion(confusion_matrix(reference, reference, K), NAMES)
    assert metrics["miou"] == 1.0 and metrics["overall_accuracy"] == 1.0
    assert all(metrics["per_class"][n]["f1"] == 1.0 for n in NAMES)


def test_values_above_k_and_no_data_are_not_counted():
    reference = np.array([[1, 2, 0, 255, 3]], dtype=np.uint8)
    prediction = np.array([[1, 0, 2, 1, 200]], dtype=np.uint8)
    full = confusion_counts(reference, prediction, 3)
    assert full[1:, 1:].sum() == 1
    metrics = area_metrics(full, ["a", "b", "c"])
    assert metrics["reference_without_prediction"] == 1
    assert metrics["prediction_without_reference"] == 1


# --- windows and areas ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [7, 16, 33, 64, 500])
def test_windowed_counts_equal_whole_array(size):
    rng = np.random.default_rng(3)
    reference, prediction = random_labels(rng, (101, 77))
    chips = {"val": np.array([[0, 0, 40, 40], [20, 30, 40, 40], [90, 60, 30, 30]])}
    blocks = (
        (w, reference[w.toslices()], prediction[w.toslices()])
        for w in aligned_windows(77, 101, 1, 1, size)
    )
    totals = accumulate_area_counts(blocks, chips, K)
    np.testing.assert_array_equal(totals["whole_scene"], confusion_counts(reference, prediction, K))
    whole_mask = area_mask(Window(0, 0, 77, 101), chips["val"])
    np.testing.assert_array_equal(
        totals["val"], confusion_counts(reference, prediction, K, where=whole_mask)
    )


def test_area_mask_counts_overlapping_chips_once():
    chips = np.array([[0, 0, 10, 10], [5, 5, 10, 10], [5, 5, 10, 10]])  # overlaps and a duplicate
    mask = area_mask(Window(0, 0, 20, 20), chips)
    assert mask.sum() == 100 + 100 - 25
    reference = np.ones((20, 20), dtype=np.uint8)
    assert confusion_matrix(reference, reference, 1, where=mask).sum() == 175
    # a window that cuts the chips: only its part of the union
    part = area_mask(Window(8, 8, 4, 12), chips)
    np.testing.assert_array_equal(part, mask[8:20, 8:12])


def test_area_mask_window_without_chips_is_empty():
    assert not area_mask(Window(100, 100, 10, 10), np.array([[0, 0, 10, 10]])).any()
    assert not area_mask(Window(0, 0, 10, 10), np.zeros((0, 4), dtype=np.int64)).any()


def test_chip_windows_and_sample_selection():
    table = pd.DataFrame(
        {
            "chip_id": ["a", "b", "c", "d"],
            "scene": ["s1", "s1", "s2", "s1"],
            "row_off": [0, 10, 0, 20],
            "col_off": [0, 0, 0, 0],
            "height": [10, 10, 10, 10],
            "width": [10, 10, 10, 10],
            "split": ["val", "val", "val", "train"],
            "px_1": [100, 50, 60, 100],
            "px_2": [0, 50, 40, 0],
        }
    )
    np.testing.assert_array_equal(
        chip_windows(table, "s1", "val"), [[0, 0, 10, 10], [10, 0, 10, 10]]
    )
    chosen, split = select_sample_chips(table, 2, 2)
    assert split == "val"
    assert set(chosen["chip_id"]) == {"b", "c"}  # two classes each, one per scene first


def test_sample_chips_avoid_overlaps_while_others_remain():
    table = pd.DataFrame(
        {
            "scene": ["s"] * 3,
            "row_off": [0, 5, 30],
            "col_off": [0, 5, 0],
            "height": [10] * 3,
            "width": [10] * 3,
            "split": ["val"] * 3,
            "px_1": [10, 10, 10],
            "px_2": [5, 5, 0],
        }
    )
    chosen, _ = select_sample_chips(table, 2, 2)
    assert chosen["row_off"].tolist() == [0, 30]  # (5, 5) overlaps (0, 0)
    chosen, _ = select_sample_chips(table, 3, 2)
    assert len(chosen) == 3  # filled with the overlapping one when nothing else is left
    chosen, _ = select_sample_chips(table, 0, 2)
    assert chosen.empty


# --- the stage on tiny GeoTIFFs ------------------------------------------------------------------


def blob_labels(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth random class regions 1..K (what a land-cover map looks like, not salt-and-pepper)."""
    coarse = rng.integers(1, K + 1, (height // 16 + 2, width // 16 + 2))
    labels = np.kron(coarse, np.ones((16, 16), dtype=np.int64))
    shift_r, shift_c = rng.integers(0, 16, 2)
    return labels[shift_r : shift_r + height, shift_c : shift_c + width].astype(np.uint8)


def write_synthetic_run(
    folder: Path, scene: str = "demo", height: int = 200, width: int = 260, tile: int = 40
):
    """Scene stack, mask, prediction, split table and metrics.csv of a small synthetic run."""
    rng = np.random.default_rng(7)
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 400000, 0, -10, 4600000), width, height)
    labels = blob_labels(rng, height, width)
    mask = labels.copy()
    mask[:, :12] = 0  # a no-data edge
    reflectance = np.stack(
        [np.vectorize(lambda c, b=b: CLASS_REFLECTANCE[c][b])(labels) for b in range(4)]
    )
    reflectance = reflectance + rng.normal(0, 0.01, reflectance.shape)
    stored = np.clip(np.round((reflectance + 0.1) / 1e-4), 1, 65535).astype(np.uint16)
    stored[:, :8, :] = 0  # scene no data (top rows)
    prediction = np.where(rng.random(labels.shape) < 0.85, labels, blob_labels(rng, height, width))
    prediction = prediction.astype(np.uint8)
    prediction[:8, :] = 0
    paths = {"scene": folder / "scenes" / f"{scene}.tif", "mask": folder / "masks" / f"{scene}.tif"}
    paths["prediction"] = folder / "predictions" / f"{scene}.tif"
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    write_scene_stack(paths["scene"], stored, BANDS, **geotiff_profile(grid, 4, "uint16", 0))
    for key, data in (("mask", mask), ("prediction", prediction)):
        write_geotiff(paths[key], data, classes=CLASSES, **geotiff_profile(grid, 1, "uint8", 0))
    rows = []
    for r in range(0, height - tile + 1, tile):
        for c in range(0, width - tile + 1, tile):
            split = ["train", "train", "val", "test", "excluded"][(r // tile + c // tile) % 5]
            counts = {
                f"px_{k}": int((mask[r : r + tile, c : c + tile] == k).sum())
                for k in range(1, K + 1)
            }
            rows.append(
                {"chip_id": f"{scene}_r{r}_c{c}", "scene": scene, "row_off": r, "col_off": c,
                 "height": tile, "width": tile, "split": split, "valid_fraction": 1.0, **counts}
            )  # fmt: skip
    split_path = folder / "splits" / "split.parquet"
    split_path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(split_path)
    model_dir = folder / "models" / "unet"
    model_dir.mkdir(parents=True)
    epochs = np.arange(1, 6)
    curves = {"epoch": epochs, "train_loss": 1.5 / epochs, "val_loss": 1.6 / epochs + 0.1}
    curves["val_miou"] = 0.3 + 0.08 * epochs
    for name in NAMES:
        curves[f"val_iou_{name}"] = np.clip(rng.random() * 0.3 + 0.1 * epochs, 0, 1)
    pd.DataFrame(curves).to_csv(
        model_dir / "metrics.csv", index=False
    )  # no val_accuracy: tolerated
    return {
        **paths,
        "split": split_path,
        "model_dir": model_dir,
        "mask_array": mask,
        "pred_array": prediction,
    }


def run_stage(folder: Path, run: dict, window_size: int = 64) -> dict:
    return evaluate_model(
        {"demo": run["prediction"]},
        {"demo": run["mask"]},
        {"demo": run["scene"]},
        run["split"],
        run["model_dir"],
        folder / "evaluation",
        CLASSES,
        CONFIG["evaluation"],
        window_size=window_size,
    )


def test_evaluate_model_writes_outputs_with_correct_numbers(tmp_path):
    run = write_synthetic_run(tmp_path)
    summary = run_stage(tmp_path, run)
    out = tmp_path / "evaluation"
    for name in ("metrics.json", "report.html", "confusion_matrix.png", "training_curves.png",
                 "samples.png", "overview_demo.png"):  # fmt: skip
        assert (out / name).stat().st_size > 1000, name
    metrics = json.loads((out / "metrics.json").read_text())
    mask, pred = run["mask_array"], run["pred_array"]
    whole = metrics["areas"]["whole_scene"]
    np.testing.assert_array_equal(whole["confusion_matrix"], confusion_matrix(mask, pred, K))
    assert whole["pixels"] == int(((mask > 0) & (pred > 0)).sum())
    table = pd.read_parquet(run["split"])
    val_mask = area_mask(Window(0, 0, 260, 200), chip_windows(table, "demo", "val"))
    np.testing.assert_array_equal(
        metrics["areas"]["val"]["confusion_matrix"], confusion_matrix(mask, pred, K, where=val_mask)
    )
    assert metrics["scenes"]["demo"]["test"] == metrics["areas"]["test"]
    assert summary["val_miou"] == pytest.approx(metrics["areas"]["val"]["miou"])
    assert 0.5 < metrics["areas"]["val"]["overall_accuracy"] < 1
    assert metrics["class_names"] == NAMES
    html = (out / "report.html").read_text()
    assert "includes training areas" in html and html.count("data:image/png;base64,") == 4
    assert all(name in html for name in NAMES)
    assert not list(out.glob(".*tmp*"))  # atomic writes left no temporary behind


def test_evaluate_model_window_size_does_not_change_numbers(tmp_path):
    run = write_synthetic_run(tmp_path)
    first = run_stage(tmp_path, run, window_size=16)
    second = run_stage(tmp_path, run, window_size=4096)
    assert first == second


def test_evaluate_model_rejects_prediction_on_another_grid(tmp_path):
    run = write_synthetic_run(tmp_path)
    other = tmp_path / "other.tif"
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 400000, 0, -10, 4600000), 100, 100)
    write_geotiff(other, np.ones((100, 100), np.uint8), **geotiff_profile(grid, 1, "uint8", 0))
    with pytest.raises(InputError, match="not on the grid of the mask"):
        list(iter_label_windows(other, run["mask"]))


def test_evaluate_model_names_missing_mask(tmp_path):
    run = write_synthetic_run(tmp_path)
    with pytest.raises(InputError, match="no mask for scene"):
        evaluate_model(
            {"demo": run["prediction"]}, {}, {"demo": run["scene"]}, run["split"],
            run["model_dir"], tmp_path / "evaluation", CLASSES, CONFIG["evaluation"],
        )  # fmt: skip


# --- real data ------------------------------------------------------------------------------------

REAL = Path(__file__).parents[1].parent / "shared" / "data" / "real" / "aberystwyth"
ABER_CLASSES = ClassTable(
    names=("Forest", "Grass", "Urban", "Water"),
    colors=("#1b6e2a", "#a6d96a", "#d7301f", "#2171b5"),
    codes=((1,), (2,), (3,), (4,)),
    water=(False, False, False, True),
)


def write_aberystwyth_run(folder: Path, tile: int = 100) -> dict:
    """The real Aberystwyth scene and class map, a perturbed copy as prediction, a chip split."""
    scene = REAL / "aber_s2_10band_10m.tif"
    mask = REAL / "aber_cls_4class.tif"
    with rasterio.open(mask) as src:
        reference = src.read(1)
    rng = np.random.default_rng(5)
    prediction = np.roll(reference, 2, axis=1)  # boundaries off by two pixels
    noisy = rng.random(reference.shape) < 0.05
    prediction[noisy] = rng.integers(1, 5, int(noisy.sum()))
    prediction[reference == 0] = 0
    prediction_path = folder / "aber_pred.tif"
    write_like(prediction_path, prediction.astype(np.uint8), mask, ABER_CLASSES)
    height, width = reference.shape
    rows = [
        {"chip_id": f"aber_r{r}_c{c}", "scene": "aber", "row_off": r, "col_off": c,
         "height": tile, "width": tile, "split": ["train", "val", "test"][(r + c) // tile % 3]}
        for r in range(0, height - tile + 1, tile // 2)  # stride tile / 2: overlapping chips
        for c in range(0, width - tile + 1, tile)
    ]  # fmt: skip
    split_path = folder / "split.parquet"
    pd.DataFrame(rows).to_parquet(split_path)
    return {"scene": scene, "mask": mask, "prediction": prediction_path, "split": split_path,
            "reference_array": reference, "prediction_array": prediction}  # fmt: skip


def test_real_aberystwyth_evaluation(tmp_path):
    if not REAL.exists():
        pytest.skip(f"real test data not found at {REAL}")
    run = write_aberystwyth_run(tmp_path)
    summary = evaluate_model(
        {"aber": run["prediction"]}, {"aber": run["mask"]}, {"aber": run["scene"]}, run["split"],
        tmp_path / "no_model", tmp_path / "evaluation", ABER_CLASSES,
        {"sample_chips": 4, "overview_size": 400},
    )  # fmt: skip
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    reference, prediction = run["reference_array"], run["prediction_array"]
    np.testing.assert_array_equal(
        metrics["areas"]["whole_scene"]["confusion_matrix"],
        confusion_matrix(reference, prediction, 4),
    )
    assert 0.5 < summary["whole_scene_overall_accuracy"] < 0.99
    assert not (tmp_path / "evaluation" / "training_curves.png").exists()  # no metrics.csv: skipped
    assert (tmp_path / "evaluation" / "overview_aber.png").exists()
