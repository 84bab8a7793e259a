"""End-to-end: the Snakemake workflow on a tiny config, its re-run behaviour, and its lint."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import rasterio
import yaml

from workflow_helpers import ROOT, snakemake

ALL_STAGES = {
    "make_demo_landcover",
    "make_demo_scene",
    "ingest_scene",
    "downsample_mask",
    "tile_scene",
    "filter_chips",
    "split_chips",
    "train_model",
    "predict_scene",
    "evaluate_model",
    "train_pixel_baseline",  # evaluation.pixel_baseline (default true): the report's baseline
    "predict_pixel_baseline",
}

TINY_CONFIG = {
    "scenes": [{"name": "demo", "date": "2024-06-15", "source": {"type": "demo"}}],
    "demo": {"size": 256, "mask_factor": 10, "seed": 3},
    "tile_size": 64,
    "model": {"name": "tiny", "architecture": "Unet", "encoder": "resnet18"},
    "training": {"epochs": 1, "batch_size": 4, "num_workers": 0},
    "prediction": {"batch_size": 4},
    "evaluation": {"sample_chips": 2, "overview_size": 128},
}


def planned_jobs(workdir: Path, *args: str) -> set[str]:
    """Rule names a dry run would execute (from Snakemake's job-stats table)."""
    result = snakemake(workdir, "-n", "--cores", "1", *args)
    assert result.returncode == 0, result.stderr + result.stdout
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return set()
    table = text.split("Job stats:", 1)[1]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+\s*$", table, re.M)} - {"total"}


def write_config(workdir: Path, **overrides: object) -> None:
    config = json.loads(json.dumps(TINY_CONFIG))
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """The whole workflow run once on the tiny config."""
    workdir = tmp_path_factory.mktemp("workflow")
    write_config(workdir)
    result = snakemake(workdir, "--cores", "2")
    logs = (
        "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}"
            for p in sorted((workdir / "results/logs").rglob("*.log"))
        )
        if (workdir / "results/logs").exists()
        else ""
    )
    assert result.returncode == 0, result.stderr[-5000:] + logs
    return workdir


def test_dry_run_on_fresh_checkout_lists_every_stage(tmp_path):
    write_config(tmp_path)
    assert planned_jobs(tmp_path) == ALL_STAGES | {"all"}


def test_classification_task_plans_chip_labels_instead_of_scene_prediction(tmp_path):
    write_config(
        tmp_path,
        task="classification",
        model={"name": "chips-cnn", "architecture": "small_cnn", "encoder": "resnet18"},
    )
    jobs = planned_jobs(tmp_path)
    assert "predict_chips" in jobs and "train_model" in jobs
    assert not jobs & {"predict_scene", "evaluate_model"}


def test_lint_is_clean():
    result = snakemake(ROOT, "--lint", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


@pytest.mark.workflow
def test_full_run_writes_prediction_on_the_scene_grid(finished_run):
    scene = finished_run / "results/scenes/demo.tif"
    prediction = finished_run / "results/predictions/size64/tiny/demo.tif"
    with rasterio.open(scene) as s, rasterio.open(prediction) as p:
        assert (p.crs, p.transform, p.width, p.height) == (s.crs, s.transform, s.width, s.height)
        assert p.dtypes[0] == "uint8"
        assert p.colormap(1)[6][:3] == (0x21, 0x71, 0xB5)  # Water's colour from the class table
    report = finished_run / "results/evaluation/size64/tiny"
    assert (report / "report.html").stat().st_size > 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics  # the report's numbers are checked in test_evaluate
    assert metrics["baselines"]["pixel"]["areas"]["val"]["pixels"] > 0  # evaluation.pixel_baseline


@pytest.mark.workflow
def test_tile_size_change_reruns_tiling_and_downstream_only(finished_run):
    assert planned_jobs(finished_run) == set()
    write_config(finished_run, tile_size=96)
    try:
        jobs = planned_jobs(finished_run)
    finally:
        write_config(finished_run)
    assert {
        "tile_scene",
        "filter_chips",
        "split_chips",
        "train_model",
        "predict_scene",
        "evaluate_model",
    } <= jobs
    assert not jobs & {"make_demo_landcover", "make_demo_scene", "ingest_scene", "downsample_mask"}


@pytest.mark.workflow
def test_filter_threshold_change_reruns_filter_and_downstream_only(finished_run):
    write_config(finished_run, filter={"max_nodata_fraction": 0.3})
    try:
        jobs = planned_jobs(finished_run)
    finally:
        write_config(finished_run)
    assert {"filter_chips", "split_chips", "train_model", "predict_scene", "evaluate_model"} <= jobs
    assert not jobs & {"tile_scene", "ingest_scene", "downsample_mask", "make_demo_scene"}


@pytest.mark.workflow
def test_dask_scheduler_reaches_the_mask_job_and_reruns_nothing(finished_run):
    """Where windows run is a resource, not a param: switching to a cluster recomputes nothing."""
    write_config(finished_run, compute={"dask_scheduler": "tcp://scheduler.example:8786"})
    try:
        assert planned_jobs(finished_run) == set()
        result = snakemake(
            finished_run, "-n", "-p", "--cores", "1", "--forcerun", "downsample_mask"
        )
    finally:
        write_config(finished_run)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "--dask-scheduler tcp://scheduler.example:8786" in result.stdout + result.stderr


def test_slurm_profile_resolves_every_rules_resources(tmp_path):
    """The SLURM profile parses; each job gets partition, memory, runtime (GPUs where needed)."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    write_config(tmp_path)
    result = snakemake(tmp_path, "-n", "--workflow-profile", str(ROOT / "workflow/profiles/slurm"))
    assert result.returncode == 0, result.stderr + result.stdout
    text = result.stdout + result.stderr
    jobs = re.findall(r"^(?:localrule|rule) (\w+):\n(.*?)\n\n", text, re.M | re.S)
    resources = {
        name: re.search(r"resources: (.*)", body).group(1) for name, body in jobs if name != "all"
    }
    assert set(resources) == ALL_STAGES
    for name, line in resources.items():
        assert "slurm_partition=" in line and "mem_mb=" in line and "runtime=" in line, (name, line)
    for name in ("train_model", "predict_scene"):
        assert "gpu=1" in resources[name] and "slurm_partition=gpu" in resources[name]

    # training.devices: 4 -> the training job asks for four GPUs (prediction still one)
    write_config(tmp_path, training={"devices": 4})
    result = snakemake(tmp_path, "-n", "--workflow-profile", str(ROOT / "workflow/profiles/slurm"))
    assert result.returncode == 0, result.stderr + result.stdout
    text = result.stdout + result.stderr
    train = re.search(r"^(?:localrule|rule) train_model:\n.*?resources: (.*?)\n", text, re.M | re.S)
    assert re.search(r"\bgpu=4\b", train.group(1)), train.group(1)
