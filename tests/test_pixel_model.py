"""The pixel classifier (model.architecture pixel_gbm) and the baselines of the report."""

from __future__ import annotations

import json
import pickletools
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from rio_cogeo.cogeo import cog_validate
from scipy.ndimage import gaussian_filter

from chip_store_helpers import BANDS, CLASS_REFLECTANCE, CLASSES, OFFSET, SCALE, write_chip_store
from raster_helpers import write_like
from s2landcover import pixel_model as pm
from s2landcover.cli import main as cli_main
from s2landcover.config import validate_config
from s2landcover.errors import InputError
from s2landcover.io.checkpoints import load_model_checkpoint, save_model_checkpoint
from s2landcover.predict import confidence_path, predict_scene

TILE = 32
K = len(CLASSES)
NAMES = [c["name"] for c in CLASSES]


def blob_classes(rng: np.random.Generator, height: int, width: int, classes: int = K) -> np.ndarray:
    noise = [rng.normal(size=(height, width)) for _ in range(classes)]
    fields = np.stack([gaussian_filter(n, 4) for n in noise])
    return (fields.argmax(axis=0) + 1).astype(np.uint8)


def stored_of(rng: np.random.Generator, classes: np.ndarray) -> np.ndarray:
    """uint16 stored values (4, H, W) of ``classes`` (1..K) with a little noise."""
    reflectance = CLASS_REFLECTANCE[classes - 1].transpose(2, 0, 1)
    reflectance = reflectance + rng.normal(0, 0.01, reflectance.shape)
    return np.clip((reflectance - OFFSET) / SCALE, 1, 65535).astype(np.uint16)


def config(**pixel: object) -> dict:
    cfg = validate_config(
        {
            "bands": BANDS,
            "classes": CLASSES,
            "tile_size": TILE,
            "model": {"name": "pixel", "architecture": "pixel_gbm", "pixel": pixel},
        }
    )
    return cfg


def write_chips(
    folder: Path, splits: list[str], missing_in_train: int | None = None, seed: int = 0
) -> Path:
    """A chip store of ``len(splits)`` chips (4 to a row) and its split.parquet; returns the
    split path. ``missing_in_train``: that class is replaced by class 1 in the training chips."""
    rng = np.random.default_rng(seed)
    masks = np.stack([blob_classes(rng, TILE, TILE) for _ in splits])
    for i, split in enumerate(splits):
        if split == "train" and missing_in_train is not None:
            masks[i][masks[i] == missing_in_train] = 1
    images = np.stack([stored_of(rng, m) for m in masks])
    masks[0, :3, :] = 0  # a few unlabelled pixels
    images[1, :, :3, :] = 0  # a few labelled pixels without image data
    write_chip_store(folder / "chips" / "demo", "demo", images, masks, K)
    table = pd.read_parquet(folder / "chips" / "demo" / "index.parquet")
    table["split"] = splits
    split_path = folder / "split.parquet"
    table.to_parquet(split_path)
    return split_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pixel")
    split = write_chips(folder, ["train"] * 6 + ["val"] * 2)
    summary = pm.train_pixel_model(
        split, folder / "chips", folder / "model", config(samples=3000, iterations=20), threads=1
    )
    assert summary["training_pixels"] > 1000 and summary["rounds"] >= 1
    return folder


# --- features and sampling -------------------------------------------------------------------


def test_features_are_reflectance_then_the_indices_whose_bands_exist():
    assert pm.feature_names(["B03", "B04", "B08"]) == ["B03", "B04", "B08", "NDVI", "NDWI"]
    assert pm.feature_names(["B02", "B03", "B04", "B08", "B11"])[-3:] == ["NDVI", "NDWI", "NDBI"]
    reflectance = np.array([[0.1, 0.0], [0.3, 0.0]], np.float32)  # B04, B08 of two pixels
    features = pm.pixel_features(reflectance, ["B04", "B08"])
    np.testing.assert_allclose(features[0], [0.1, 0.3, 0.5], rtol=1e-6)  # NDVI (0.3 - 0.1) / 0.4
    assert features[1, 2] == 0  # zero denominator


def test_balanced_quotas_give_rare_classes_all_they_have_and_share_the_rest():
    np.testing.assert_allclose(pm.class_quotas([1000, 1000, 10], 300, "balanced"), [145, 145, 10])
    np.testing.assert_allclose(pm.class_quotas([1000, 0, 500], 300, "proportional"), [200, 0, 100])
    np.testing.assert_allclose(pm.class_quotas([10, 20], 300, "balanced"), [10, 20])


def test_sampling_uses_training_chips_only_and_never_class_0(tmp_path):
    split = write_chips(tmp_path, ["train"] * 4 + ["val"] * 4, missing_in_train=3)
    table = pd.read_parquet(split)
    x, y = pm.sample_pixels(
        table[table["split"] == "train"], tmp_path / "chips", BANDS, K, 1000, "balanced", 1
    )
    assert len(x) == len(y) and 0 < len(y) <= 1200 and x.shape[1] == 6
    assert set(np.unique(y)) == {1, 2}  # class 3 is only in val chips; 0 never drawn
    assert x[:, :4].min() > OFFSET + 0.005  # no pixel without image data (stored 0 -> OFFSET)
    _, y2 = pm.sample_pixels(
        table[table["split"] == "train"], tmp_path / "chips", BANDS, K, 1000, "balanced", 1
    )
    np.testing.assert_array_equal(y, y2)  # deterministic for a seed


def test_training_reads_only_the_training_chips(tmp_path):
    split = write_chips(tmp_path, ["train"] * 3 + ["val"] * 2 + ["test"] * 2, missing_in_train=3)
    pm.train_pixel_model(
        split, tmp_path / "chips", tmp_path / "m", config(samples=500, iterations=3), threads=1
    )
    _, metadata = load_model_checkpoint(tmp_path / "m" / "model.pt")
    assert metadata["training_pixels"]["Water"] == 0  # only in the val and test chips
    assert metadata["training_pixels"]["Forest"] > 0


# --- the model file --------------------------------------------------------------------------


def test_model_file_loads_without_unpickling_and_holds_the_trees_as_text(trained):
    path = trained / "model" / "model.pt"
    payload = torch.load(path, map_location="cpu", weights_only=True)  # no code is unpickled
    metadata = payload["metadata"]
    assert metadata["architecture"] == "pixel_gbm" and payload["state_dict"] == {}
    assert metadata["booster"].startswith("tree\n")  # LightGBM's plain-text model format
    assert metadata["bands"] == BANDS and metadata["scales"] == [SCALE] * 4
    assert metadata["classes"]["names"] == NAMES
    with zipfile.ZipFile(path) as archive:  # torch's zip: data.pkl holds only plain values,
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    opcodes = {op.name for op, _, _ in pickletools.genops(pickled)}
    assert not opcodes & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ"}  # no object
    for name in ("metrics.csv", "curves.png"):
        assert (trained / "model" / name).stat().st_size > 0
    table = pd.read_csv(trained / "model" / "metrics.csv")
    assert table["val_miou"].max() > 0.9


def test_a_unet_checkpoint_or_broken_trees_are_input_errors(trained, tmp_path):
    _, metadata = load_model_checkpoint(trained / "model" / "model.pt")
    unet = tmp_path / "unet.pt"
    save_model_checkpoint(unet, {}, {**metadata, "architecture": "Unet"})
    with pytest.raises(InputError, match="not a pixel model"):
        pm.load_pixel_model(unet)
    broken = tmp_path / "broken.pt"
    save_model_checkpoint(broken, {}, {**metadata, "booster": "not a model"})
    with pytest.raises(InputError, match="LightGBM model text"):
        pm.load_pixel_model(broken)


def test_predict_maps_the_scene_as_a_cog_with_class_names_and_nodata(
    trained, tmp_path, scene_stack
):
    rng = np.random.default_rng(7)
    truth = blob_classes(rng, 150, 170)
    stored = stored_of(rng, truth)
    stored[:, 100:, :20] = 0  # no data
    scene = scene_stack("scene.tif", stored, BANDS, block=64, compress=None)
    out = tmp_path / "pred" / "scene.tif"
    cfg = validate_config({})["prediction"] | {"confidence": True}
    summary = predict_scene(trained / "model" / "model.pt", scene, out, cfg, progress=False)
    assert summary["model"] == "pixel"  # predict dispatched on what the model file says
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.width, dst.height) == (
            src.crs, src.transform, src.width, src.height,
        )  # fmt: skip
        assert dst.dtypes[0] == "uint8" and dst.nodata == 0
        assert json.loads(dst.tags(1)["CLASS_NAMES"]) == ["no data", *NAMES]
        assert dst.colormap(1)[1] == (0x1B, 0x6E, 0x2A, 255)
        labels = dst.read(1)
    assert cog_validate(str(out))[0]
    nodata = (stored == 0).all(axis=0)
    assert (labels[nodata] == 0).all() and (labels[~nodata] > 0).all()
    assert (labels[~nodata] == truth[~nodata]).mean() > 0.95
    with rasterio.open(confidence_path(out)) as conf:
        confidence = conf.read(1)
    assert (confidence[nodata] == 0).all() and confidence[~nodata].min() > 0
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "scene.qml",
        "scene.tif",
        "scene.tif.aux.xml",
        "scene_confidence.qml",
        "scene_confidence.tif",
    ]  # fmt: skip  (QGIS styles beside the maps, nothing temporary)


def test_cli_train_dispatches_on_the_architecture(trained, tmp_path):
    cfg = config(samples=500, iterations=3)
    cfg["model"]["architecture"] = "Unet"  # the workflow's baseline overrides it
    status = cli_main(
        [
            "train", "--config-json", json.dumps(cfg), "--split", str(trained / "split.parquet"),
            "--chips-root", str(trained / "chips"), "--out-dir", str(tmp_path / "baseline"),
            "--architecture", "pixel_gbm",
        ]
    )  # fmt: skip
    assert status == 0
    assert pm.checkpoint_is_pixel_model(tmp_path / "baseline" / "model.pt")


# --- the pixel classifier as the model of a workflow run ------------------------------------


@pytest.mark.workflow
def test_workflow_with_the_pixel_model_maps_the_scene_and_reports(tmp_path):
    import yaml

    from test_workflow import TINY_CONFIG
    from workflow_helpers import snakemake

    config = json.loads(json.dumps(TINY_CONFIG))
    config["model"] = {"name": "gbm", "architecture": "pixel_gbm", "pixel": {"iterations": 20}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--cores", "2")
    logs = "\n".join(p.read_text()[-2000:] for p in (tmp_path / "results").rglob("*.log"))
    assert result.returncode == 0, result.stderr[-3000:] + logs
    results = tmp_path / "results"
    assert not (results / "baselines").exists()  # the model is the pixel classifier itself
    with (
        rasterio.open(results / "scenes" / "demo.tif") as scene,
        rasterio.open(results / "predictions" / "size64" / "gbm" / "demo.tif") as pred,
    ):
        assert (pred.crs, pred.transform, pred.shape) == (scene.crs, scene.transform, scene.shape)
    metrics = json.loads((results / "evaluation/size64/gbm/metrics.json").read_text())
    majority = metrics["baselines"]["majority"]["areas"]["val"]["miou"]
    assert metrics["areas"]["val"]["miou"] > majority
    assert "not run" in metrics["baselines"]["pixel"]["description"]


# --- baselines in the evaluation and the report ----------------------------------------------


def test_majority_baseline_of_a_hand_made_confusion():
    from s2landcover.evaluate import majority_confusion, metrics_from_confusion

    matrix = np.array([[50, 10, 0], [5, 30, 5], [0, 0, 0]])  # class C absent from the area
    baseline = majority_confusion(matrix, majority=2)
    np.testing.assert_array_equal(baseline, [[0, 60, 0], [0, 40, 0], [0, 0, 0]])
    scores = metrics_from_confusion(baseline, ["A", "B", "C"])
    assert scores["overall_accuracy"] == pytest.approx(0.4)  # 40 of 100 pixels are B
    assert scores["per_class"]["A"]["iou"] == 0 and scores["per_class"]["B"]["iou"] == 0.4
    assert np.isnan(scores["per_class"]["C"]["iou"])  # neither present nor predicted
    assert scores["miou"] == pytest.approx(0.2)  # mean over A and B


def test_rare_class_warning_when_a_class_is_absent_or_rare_in_training():
    from s2landcover.evaluate import rare_class_warnings

    supports = {"val": np.array([10, 10, 5, 0]), "test": np.array([1, 1, 7, 0])}
    warnings = rare_class_warnings(np.array([5000, 4000, 0, 0]), supports, ["A", "B", "C", "D"])
    assert len(warnings) == 1  # D is absent everywhere: nothing to warn about
    assert "class C is absent from the training chips" in warnings[0]
    assert "validation chips 5 px" in warnings[0] and "test chips 7 px" in warnings[0]
    rare = rare_class_warnings(np.array([9850, 50, 200, 0]), supports, ["A", "B", "C", "D"])
    assert len(rare) == 1 and "class B is rare in the training chips (0.50 %" in rare[0]
    assert rare_class_warnings(np.array([50, 50, 50, 50]), supports, list("ABCD")) == []


def test_report_shows_the_model_beside_both_baselines(tmp_path, caplog):
    from s2landcover.evaluate import evaluate_model
    from test_evaluate import CLASSES as EVAL_CLASSES
    from test_evaluate import CONFIG, write_synthetic_run

    run = write_synthetic_run(tmp_path)
    table = pd.read_parquet(run["split"])
    table.loc[table["split"] == "test", "split"] = "excluded"  # no test chips
    last = EVAL_CLASSES.names[-1]
    table.loc[table["split"] == "train", f"px_{EVAL_CLASSES.num_classes}"] = 0  # absent in training
    table.to_parquet(run["split"])
    baseline = tmp_path / "baselines" / "demo.tif"
    baseline.parent.mkdir()
    with rasterio.open(run["mask"]) as src:
        reference = src.read(1)
    write_like(baseline, reference, run["mask"], EVAL_CLASSES)  # a perfect pixel baseline
    summary = evaluate_model(
        {"demo": run["prediction"]}, {"demo": run["mask"]}, {"demo": run["scene"]}, run["split"],
        run["model_dir"], tmp_path / "evaluation", EVAL_CLASSES,
        CONFIG["evaluation"], window_size=64, baseline_predictions={"demo": baseline},
    )  # fmt: skip
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    base = metrics["baselines"]
    assert base["pixel"]["areas"]["val"]["miou"] == 1.0 == summary["val_pixel_miou"]
    counts = table[table["split"] == "train"][[f"px_{k}" for k in range(1, 7)]].sum().to_numpy()
    majority = int(np.argmax(counts)) + 1
    assert base["majority"]["index"] == majority
    val = np.asarray(metrics["areas"]["val"]["confusion_matrix"])
    accuracy = val.sum(axis=1)[majority - 1] / val.sum()
    assert base["majority"]["areas"]["val"]["overall_accuracy"] == pytest.approx(accuracy)
    assert summary["val_majority_miou"] == base["majority"]["areas"]["val"]["miou"]
    assert "no test chips" in metrics["areas"]["test"]["empty_reason"]
    assert len(metrics["warnings"]) == 1 and f"class {last} is absent" in metrics["warnings"][0]
    assert f"class {last} is absent" in caplog.text
    html = (tmp_path / "evaluation" / "report.html").read_text()
    assert "pixel baseline mIoU" in html and "majority class mIoU" in html
    key_table = html.split("<h2>Key numbers</h2>", 1)[1].split("</table>", 1)[0]
    val_row = next(row for row in key_table.split("<tr>") if "Validation area" in row)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", val_row)
    assert cells[1] == f"{metrics['areas']['val']['miou']:.3f}"
    assert cells[5:9] == [
        "1.000", "1.000",  # the perfect pixel baseline
        f"{base['majority']['areas']['val']['miou']:.3f}",
        f"{base['majority']['areas']['val']['overall_accuracy']:.3f}",
    ]  # fmt: skip
    assert "no pixels: the split has no test chips" in html
    assert f"Warning: class {last} is absent" in html
    assert html.count("pixel baseline IoU") == 2  # per-class tables of val and whole scene
    assert "id='baselines.png'" in html and (tmp_path / "evaluation" / "baselines.png").is_file()


def test_baseline_figure_draws_a_bar_per_series_and_group():
    from s2landcover.plots import baseline_comparison_figure

    series = {
        "validation chips": {
            "model": {"A": 0.5, "B": 0.7, "mIoU": 0.6},
            "pixel": {"A": 0.9, "B": 0.8, "mIoU": 0.85},
            "majority": {"A": 0.0, "B": 0.4, "mIoU": 0.2},
        }
    }
    figure = baseline_comparison_figure(series, ["A", "B"])
    bars = figure.axes[0].patches
    assert len(bars) == 9  # 3 series x (2 classes + mIoU)
    assert sorted(round(b.get_height(), 2) for b in bars)[-1] == 0.9
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels == ["model", "pixel baseline", "majority class"]


def test_per_class_table_marks_classes_absent_from_the_area():
    from s2landcover.evaluate import area_metrics, mark_absent_classes
    from s2landcover.report import per_class_table

    counts = np.zeros((4, 4), dtype=np.int64)
    counts[1, 1], counts[2, 1] = 30, 5  # reference A and B, nothing of C
    area = mark_absent_classes(area_metrics(counts, ["A", "B", "C"]))
    assert area["absent_classes"] == ["C"]
    html = per_class_table(area, ["#000000"] * 3)
    assert html.count("(absent from this area)") == 1 and "3 C <span" in html


def test_predict_writes_not_observed_where_the_validity_raster_says_cloud(
    trained, tmp_path, scene_stack
):
    """The pixel model's map follows the U-Net's contract for clouds: 255 "Not observed" where
    the scene's validity raster is cloud/shadow/cirrus, confidence 0 there, no data stays 0."""
    from s2landcover.classes import NOT_OBSERVED
    from s2landcover.validity import CLEAR, CLOUD, SHADOW

    rng = np.random.default_rng(8)
    stored = stored_of(rng, blob_classes(rng, 120, 130))
    stored[:, :10, :10] = 0
    scene = scene_stack("scene.tif", stored, BANDS, block=64, compress=None)
    validity = np.full(stored.shape[1:], CLEAR, dtype=np.uint8)
    validity[40:70, 50:90] = CLOUD
    validity[80:90, 10:30] = SHADOW
    write_like(tmp_path / "validity.tif", validity, scene, nodata=None)
    out = tmp_path / "pred.tif"
    cfg = validate_config({})["prediction"] | {"confidence": True}
    predict_scene(
        trained / "model" / "model.pt", scene, out, cfg, progress=False,
        validity_path=tmp_path / "validity.tif",
    )  # fmt: skip
    with rasterio.open(out) as dst, rasterio.open(confidence_path(out)) as conf:
        labels, confidence = dst.read(1), conf.read(1)
        assert dst.colormap(1)[NOT_OBSERVED][3] == 255  # a named, coloured value
    hidden = validity != CLEAR
    assert (labels[hidden] == NOT_OBSERVED).all() and (confidence[hidden] == 0).all()
    assert (labels[~hidden & (stored != 0).any(axis=0)] <= len(NAMES)).all()
    assert (labels[:10, :10] == 0).all()


def test_dated_bands_of_a_stack_get_indices_per_date_and_names_lightgbm_accepts():
    bands = ["2024-04-15:B03", "2024-04-15:B04", "2024-04-15:B08", "2024-08-20:B04",
             "2024-08-20:B08"]  # fmt: skip
    names = pm.feature_names(bands)
    assert names == [*bands, "2024-04-15:NDVI", "2024-04-15:NDWI", "2024-08-20:NDVI"]
    reflectance = np.array([[0.05], [0.04], [0.30], [0.10], [0.20]], dtype=np.float32)
    features = pm.pixel_features(reflectance, bands)
    np.testing.assert_allclose(features[0, 5:], [0.26 / 0.34, -0.25 / 0.35, 0.1 / 0.3], rtol=1e-5)
    safe = pm.lightgbm_feature_names(names)
    assert len(set(safe)) == len(safe) and not any(c in n for n in safe for c in ':",[]{}')
