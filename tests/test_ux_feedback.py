"""Terminal feedback and report provenance: progress lines with ETA, the per-epoch line, single
Lightning log lines, the run summary, the provenance block, the key-numbers table, legible loss
curves."""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from s2landcover.classes import ClassTable
from s2landcover.config import validate_config
from s2landcover.plots import training_curves_figure
from s2landcover.progress import ProgressLog, format_duration, progress_line
from s2landcover.provenance import collect_provenance, config_digest, stage_times
from s2landcover.report import provenance_section
from s2landcover.run_summary import headline_metrics, run_summary

CLASSES = ClassTable.from_config(validate_config({})["classes"])
NAMES = list(CLASSES.names)


# --- progress lines ------------------------------------------------------------------------------


def test_progress_line_gives_share_and_eta_from_the_mean_pace():
    assert progress_line("mask demo.tif", 25, 100, "windows", 10.0) == (
        "mask demo.tif: 25/100 windows (25 %), 10 s, ETA 30 s"
    )
    assert progress_line("tiling demo", 100, 100, "chips", 200.0).endswith("3 min, done")
    assert progress_line("x", 0, 10, "chips", 1.0).endswith("ETA unknown")
    assert format_duration(3 * 3600) == "3.0 h"


def test_progress_log_writes_a_line_per_interval_and_the_last(caplog):
    caplog.set_level(logging.INFO, logger="s2landcover.progress")
    bar = ProgressLog("tiling demo", 5, "chips", interval_s=3600)
    for _ in range(5):
        bar.advance()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["tiling demo: 5/5 chips (100 %), 0 s, done"]  # only the last: interval 1 h
    caplog.clear()
    bar = ProgressLog("mask m.tif", 3, "windows", interval_s=0.0)
    for _ in range(3):
        bar.advance()
    assert [r.getMessage().split(":")[1].split(" (")[0] for r in caplog.records] == [
        " 1/3 windows",
        " 2/3 windows",
        " 3/3 windows",
    ]
    assert "ETA" in caplog.records[0].getMessage()


def test_tiling_logs_progress_with_eta(tmp_path, caplog):
    """tile_scene itself calls ProgressLog (its last line names the scene and says done)."""
    from s2landcover.chips import tile_scene
    from test_chips import write_raster

    caplog.set_level(logging.INFO, logger="s2landcover.progress")
    rng = np.random.default_rng(1)
    scene = write_raster(tmp_path / "scene.tif", rng.integers(1, 4000, (3, 64, 48), np.uint16))
    mask = write_raster(tmp_path / "mask.tif", rng.integers(1, 6, (64, 48), np.uint8))
    config = validate_config({})
    tile_scene(scene, mask, "demo", tmp_path / "chips", 16, config["chips"], CLASSES)
    lines = [r.getMessage() for r in caplog.records if r.name == "s2landcover.progress"]
    assert lines and lines[-1] == lines[-1].split(":")[0] + ": 12/12 chips (100 %), 0 s, done"
    assert lines[-1].startswith("tiling demo")


# --- training: the line per epoch, Lightning's lines once ----------------------------------------


def test_epoch_line_reports_epoch_losses_miou_time_and_eta():
    from s2landcover.training.progress import epoch_line

    line = epoch_line(3, 10, {"train_loss": 0.5, "val_loss": 0.75, "val_miou": 0.4123}, 12.0, 10.0)
    assert line == (
        "epoch 3/10, train loss 0.5000, val loss 0.7500, val mIoU 0.412, 12.0 s/epoch, ETA 70 s"
    )
    assert epoch_line(10, 10, {"val_miou": math.nan}, 1.0, 1.0).endswith("1.0 s/epoch, done")


def test_epoch_progress_callback_logs_one_line_per_epoch(caplog, monkeypatch):
    from s2landcover.training import progress

    caplog.set_level(logging.INFO, logger="s2landcover.training")
    clock = iter([100.0, 110.0, 110.0, 130.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    callback = progress.EpochProgress(4)
    for epoch, miou in ((0, 0.2), (1, 0.3)):
        trainer = SimpleNamespace(
            current_epoch=epoch,
            callback_metrics={"train_loss": 1.0, "val_miou": miou},
            is_global_zero=True,
        )
        callback.on_train_epoch_start(trainer, None)
        callback.on_train_epoch_end(trainer, None)
    lines = [r.getMessage() for r in caplog.records if r.name == "s2landcover.training"]
    assert lines == [
        "epoch 1/4, train loss 1.0000, val mIoU 0.200, 10.0 s/epoch, ETA 30 s",
        "epoch 2/4, train loss 1.0000, val mIoU 0.300, 20.0 s/epoch, ETA 30 s",  # mean 15 s x 2
    ]


def test_lightning_lines_reach_stderr_once():
    """Lightning adds its own stderr handler when imported before the root logger has one; with
    the s2lc root handler its lines would print twice."""
    from s2landcover.training.progress import single_lightning_output

    root_out, own_out = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    root_handler = logging.StreamHandler(root_out)
    lightning_logger = logging.getLogger("lightning.pytorch")
    saved = (list(lightning_logger.handlers), lightning_logger.propagate, lightning_logger.level)
    root.addHandler(root_handler)
    lightning_logger.addHandler(logging.StreamHandler(own_out))
    lightning_logger.setLevel(logging.INFO)
    try:
        single_lightning_output()
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: False")
    finally:
        root.removeHandler(root_handler)
        lightning_logger.handlers[:] = saved[0]
        lightning_logger.propagate, lightning_logger.level = saved[1], saved[2]
    assert (root_out.getvalue() + own_out.getvalue()).count("GPU available") == 1


# --- the run summary ------------------------------------------------------------------------------


def test_run_summary_lists_maps_report_and_headline_metrics(tmp_path):
    report = Path("results/evaluation/size64/tiny/report.html")
    (tmp_path / report.parent).mkdir(parents=True)
    metrics = {
        "areas": {"val": {"miou": 0.41234}, "test": {"miou": None}},
        "baselines": {"pixel": {"areas": {"val": {"miou": 0.35}, "test": {"miou": 0.3}}}},
    }
    (tmp_path / report.with_name("metrics.json")).write_text(json.dumps(metrics))
    prediction = Path("results/predictions/size64/tiny/demo.tif")
    (tmp_path / prediction.parent).mkdir(parents=True)
    (tmp_path / prediction.with_suffix(".qml")).write_text("<qgis/>")
    text = run_summary([prediction, report], tmp_path)
    assert f"map  demo: {prediction} (+ .qml style for QGIS)" in text
    assert f"report: {report}" in text
    assert "validation 0.412 (pixel baseline 0.350), test n/a (pixel baseline 0.300)" in text
    assert headline_metrics({"areas": {"val": {"miou": 0.5}}}) == "mIoU  validation 0.500, test n/a"


# --- provenance, key numbers, loss curves --------------------------------------------------------


def test_provenance_records_config_versions_commit_bands_epochs_dates_and_times(tmp_path):
    from test_evaluate import write_synthetic_run

    run = write_synthetic_run(tmp_path)
    import rasterio

    with rasterio.open(run["scene"], "r+") as dst:
        dst.update_tags(DATE="2024-06-15")
    bench = tmp_path / "benchmarks" / "train_model" / "size64"
    bench.mkdir(parents=True)
    (bench / "tiny.tsv").write_text("s\th:m:s\tmax_rss\n42.5\t0:00:42\t100\n")
    (bench.parent.parent / "make_demo_landcover.tsv").write_text("s\th:m:s\n1.25\t0:00:01\n")
    config = {"training": {"epochs": 7}, "bands": ["B02", "B03"]}
    record = collect_provenance(
        config, run["model_dir"], {"demo": run["scene"]}, tmp_path / "benchmarks"
    )
    assert record["config_sha256"] == config_digest(config) != config_digest({"training": {}})
    assert record["config"] == config
    assert {"s2landcover", "torch", "GDAL", "lightgbm", "rasterio"} <= {
        name.split(" ")[0] for name in record["packages"]
    }
    assert record["git_commit"] == "unknown" or len(record["git_commit"].split()[0]) == 40
    assert record["bands"] == ["B02", "B03"]  # no model.pt: the config's
    assert record["model"]["epochs_trained"] == 5 and record["epochs_configured"] == 7
    assert record["scene_dates"] == {"demo": "2024-06-15"}
    assert record["stage_times"] == [
        {"stage": "make_demo_landcover", "job": "", "seconds": 1.25},
        {"stage": "train_model", "job": "size64/tiny", "seconds": 42.5},
    ]
    html = provenance_section(record)
    for text in ("2024-06-15", "5 of 7 configured", record["config_sha256"], "42.5", "B02, B03"):
        assert text in html, text
    assert "&quot;epochs&quot;: 7" in html  # the config itself


def test_stage_times_without_benchmarks_is_empty(tmp_path):
    assert stage_times(tmp_path / "absent") == []


def test_evaluate_writes_key_numbers_and_provenance(tmp_path):
    from test_evaluate import run_stage, write_synthetic_run

    run = write_synthetic_run(tmp_path)
    run_stage(tmp_path, run)
    out = tmp_path / "evaluation"
    metrics = json.loads((out / "metrics.json").read_text())
    table = pd.read_csv(out / "key_numbers.tsv", sep="\t")
    assert list(table["area"]) == ["val", "test", "whole_scene"]
    assert table.loc[0, "miou"] == pytest.approx(metrics["areas"]["val"]["miou"], abs=1e-4)
    assert f"iou_{NAMES[0]}" in table.columns and "majority_baseline_miou" in table.columns
    assert "provenance" in metrics and metrics["provenance"]["scene_dates"] == {"demo": "unknown"}
    assert "id='provenance'" in (out / "report.html").read_text()


def test_loss_curves_use_a_log_scale_so_a_spike_does_not_flatten_them():
    table = pd.DataFrame(
        {
            "epoch": [1, 2, 3, 4],
            "train_loss": [1.0, 0.8, 0.6, 0.5],
            "val_loss": [1.1, 515, 0.7, 0.6],
        }
    )
    figure = training_curves_figure(table, NAMES, CLASSES.colors)
    assert figure.axes[0].get_yscale() == "log"
    table["train_loss"] = [-0.2, -0.3, -0.4, -0.5]  # a loss that can be negative: clipped instead
    figure = training_curves_figure(table, NAMES, CLASSES.colors)
    low, high = figure.axes[0].get_ylim()
    assert figure.axes[0].get_yscale() == "linear" and high < 515 and low < -0.5
    assert np.isfinite([low, high]).all()
