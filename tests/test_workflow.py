"""End-to-end: the Snakemake workflow on a tiny config, its re-run behaviour, and its lint."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import rasterio
import rasterio.windows
import yaml

from workflow_helpers import ROOT, snakemake

ALL_STAGES = {
    "make_demo_landcover",
    "make_demo_scene",
    "ingest_scene",
    "scene_validity",
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
    (workdir / "snakemake_terminal.txt").write_text(result.stdout + result.stderr)  # as shown
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
    # Clouds: the demo product's SCL screened the scene; its cloud fraction is in metrics.json.
    assert metrics["clouds"]["scenes"]["demo"]["source"] == "scl"
    assert (finished_run / "results/validity/demo.tif").exists()
    assert metrics["baselines"]["pixel"]["areas"]["val"]["pixels"] > 0  # evaluation.pixel_baseline


REPORTED = [  # evaluate_model's outputs flagged with report() (workflow/rules/evaluation.smk)
    "report.html",
    "key_numbers.tsv",
    "confusion_matrix.png",
    "baselines.png",
    "training_curves.png",
    "samples.png",
    "overview_demo.png",
]


@pytest.mark.workflow
def test_report_zip_holds_the_flagged_outputs(finished_run, tmp_path):
    """`snakemake --report report.zip` on a finished run: the zip holds every flagged output."""
    import zipfile

    zip_path = tmp_path / "report.zip"
    result = snakemake(finished_run, "--report", str(zip_path), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    names = zipfile.ZipFile(zip_path).namelist()
    for name in REPORTED:
        assert any(n.endswith(f"/{name}") for n in names), (name, names)
    catalog = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())
    assert catalog["usage"]["report"] is True


@pytest.mark.workflow
def test_qgis_styles_are_declared_outputs(finished_run):
    """The .qml styles beside the scene, the mask and the prediction are outputs of their jobs
    (the run would have failed were one not written): --summary lists them."""
    result = snakemake(finished_run, "--summary", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for style in (
        "results/scenes/demo.qml",
        "results/masks/demo.qml",
        "results/predictions/size64/tiny/demo.qml",
    ):
        assert style in result.stdout, style
        assert (finished_run / style).is_file()


@pytest.mark.workflow
def test_run_prints_epochs_and_a_closing_summary(finished_run):
    """The terminal shows a line per epoch as training runs and, at the end, each map, the report
    and its headline metrics; the training log holds Lightning's lines once, no progress bars."""
    terminal = (finished_run / "snakemake_terminal.txt").read_text()
    assert re.search(
        r"epoch 1/1, train loss [\d.]+, .*val mIoU [\d.]+, .*[\d.]+ s/epoch, done", terminal
    )
    summary = terminal[terminal.index("s2-landcover: run finished.") :]
    assert "map  demo: results/predictions/size64/tiny/demo.tif" in summary
    assert "report: results/evaluation/size64/tiny/report.html" in summary
    metrics = json.loads((finished_run / "results/evaluation/size64/tiny/metrics.json").read_text())
    val = metrics["areas"]["val"]["miou"]
    assert f"validation {val:.3f} (pixel baseline " in summary
    log = (finished_run / "results/logs/train_model/size64/tiny.log").read_text()
    assert log.count("GPU available") == 1 and "epoch 1/1" in log and "\r" not in log
    mask_log = (finished_run / "results/logs/downsample_mask/demo.log").read_text()
    assert re.search(r"mask demo.tif: \d+/\d+ windows \(100 %\), .*done", mask_log)
    html = (finished_run / "results/evaluation/size64/tiny/report.html").read_text()
    provenance = html[html.index("id='provenance'") :]
    assert "2024-06-15" in provenance and "1 of 1 configured" in provenance
    assert "train_model" in provenance  # time per stage, from the benchmark files


@pytest.mark.workflow
def test_validity_source_none_drops_the_validity_raster(finished_run):
    write_config(finished_run, validity={"source": "none"})
    try:
        jobs = planned_jobs(finished_run)
    finally:
        write_config(finished_run)
    assert "scene_validity" not in jobs
    assert {"tile_scene", "predict_scene", "evaluate_model"} <= jobs


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


# --- user files with spaces and parentheses; what re-runs when they change (issues 15, 17, 18) ---

BANDS = ["B02", "B03", "B04", "B08"]


def _make_user_files(folder: Path) -> tuple[Path, Path]:
    """A multiband GeoTIFF scene and a 1 m land-cover map, as a user would bring them, made from
    the demo (a .SAFE ingested into a stack: band names, scale and offset in the file)."""
    from s2landcover.config import validate_config
    from s2landcover.demo import make_demo_landcover, make_demo_scene
    from s2landcover.ingest import ingest_scene

    config = validate_config({"demo": TINY_CONFIG["demo"]})
    folder.mkdir(parents=True)
    mask = folder / "land cover (1 m).tif"
    make_demo_landcover(mask, config["demo"])
    safe = folder / "S2 demo.SAFE"
    make_demo_scene(safe, mask, config["demo"], "a", "2024-06-15", BANDS)
    scene = folder / "scene a (april).tif"
    ingest_scene({"type": "safe", "path": str(safe)}, BANDS, scene, config["ingest"])
    shutil.rmtree(safe)
    return scene, mask


def _spaced_config(workdir: Path, scene: Path, mask: Path, **overrides: object) -> None:
    config = json.loads(json.dumps(TINY_CONFIG))
    config.pop("demo")
    config["scenes"] = [
        {
            "name": "a",
            "date": "2024-04-15",
            # relative to the working directory, with spaces and parentheses
            "source": {
                "type": "geotiff",
                "path": str(scene.relative_to(workdir)),
                "band_order": BANDS,
            },
        }
    ]
    config["mask"] = {"source": str(mask)}  # absolute, with spaces and parentheses
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        elif key == "extra_scenes":
            config["scenes"] += value
        else:
            config[key] = value
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def spaced_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The whole workflow on a user's GeoTIFF scene and map, in a working directory whose path,
    like the scene's and the map's, holds spaces and parentheses (every path quoted in rules)."""
    workdir = tmp_path_factory.mktemp("spaced") / "work dir (1)"
    scene, mask = _make_user_files(workdir / "my data (raw)")
    _spaced_config(workdir, scene, mask)
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:] + result.stdout[-3000:]
    return workdir, scene, mask


@pytest.mark.workflow
def test_paths_with_spaces_and_parentheses_run_end_to_end(spaced_run):
    workdir = spaced_run[0]
    assert (workdir / "results/predictions/size64/tiny/a.tif").stat().st_size > 0
    assert (workdir / "results/evaluation/size64/tiny/report.html").stat().st_size > 0
    assert planned_jobs(workdir) == set()


@pytest.mark.workflow
def test_runtime_only_training_keys_plan_no_job(spaced_run):
    """training.num_workers (and accelerator, strategy, checkpoint_interval_s) are resources of
    train_model, not params: changing them re-runs nothing."""
    workdir, scene, mask = spaced_run
    _spaced_config(
        workdir,
        scene,
        mask,
        training={"num_workers": 1, "accelerator": "cpu", "checkpoint_interval_s": 5},
    )
    try:
        assert planned_jobs(workdir) == set()
        # a key that changes what is learnt still re-trains, and the reason names the section
        _spaced_config(workdir, scene, mask, training={"learning_rate": 0.001})
        result = snakemake(workdir, "-n", "--cores", "1")
    finally:
        _spaced_config(workdir, scene, mask)
    text = result.stdout + result.stderr
    reason = re.search(r"Params have changed since last execution: (.*)", text).group(1)
    assert '{"training":' in reason and '"classes"' not in reason and len(reason) < 1500


@pytest.mark.workflow
def test_replacing_a_scene_file_in_place_replans_ingest_and_after(spaced_run):
    workdir, scene, _ = spaced_run
    stat, original = scene.stat(), scene.read_bytes()
    replacement = scene.with_name("replacement.tif")
    shutil.copyfile(scene, replacement)
    with rasterio.open(replacement, "r+") as dataset:  # a corrected scene: other pixel values
        window = rasterio.windows.Window(0, 0, 8, 8)
        dataset.write(dataset.read(1, window=window) + 1, 1, window=window)
    os.replace(replacement, scene)  # in place of the old one, newer than every product
    try:
        jobs = planned_jobs(workdir)
    finally:
        scene.write_bytes(original)
        os.utime(scene, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert jobs >= {
        "ingest_scene",
        "downsample_mask",
        "tile_scene",
        "filter_chips",
        "split_chips",
        "train_model",
        "predict_scene",
        "evaluate_model",
    }
    assert planned_jobs(workdir) == set()


@pytest.mark.workflow
def test_adding_a_map_only_scene_plans_its_ingest_and_prediction_only(spaced_run):
    """A `role: map` scene (no mask needed) is ingested, screened for clouds and mapped with the
    trained model; nothing is tiled, trained or evaluated again."""
    workdir, scene, mask = spaced_run
    other = scene.with_name("scene b (august).tif")
    shutil.copyfile(scene, other)
    extra = {
        "name": "b",
        "role": "map",
        "source": {"type": "geotiff", "path": str(other), "band_order": BANDS},
    }
    _spaced_config(workdir, scene, mask, extra_scenes=[extra])
    try:
        result = snakemake(workdir, "-n", "--cores", "1")
    finally:
        _spaced_config(workdir, scene, mask)
    assert result.returncode == 0, result.stderr + result.stdout
    text = result.stdout + result.stderr
    table = text.split("Job stats:", 1)[1]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.M))
    assert counts == {
        "ingest_scene": "1", "scene_validity": "1", "predict_scene": "1", "all": "1", "total": "4"
    }  # fmt: skip
    assert "results/predictions/size64/tiny/b.tif" in text


@pytest.mark.workflow
def test_summary_dag_and_dry_run_need_no_cores(spaced_run):
    """No rule's threads depend on --cores: --summary, --dag, --report and -n work without it,
    with and without the default profile."""
    workdir = spaced_run[0]
    result = snakemake(workdir, "--summary")
    assert result.returncode == 0, result.stderr
    assert "results/predictions/size64/tiny/a.tif" in result.stdout
    for args in (["--dag"], ["-n"], ["--report", "report.zip"]):
        result = snakemake(workdir, *args, "--workflow-profile", "none")
        assert result.returncode == 0, result.stderr
    assert (workdir / "report.zip").stat().st_size > 0


def test_default_profile_is_loaded_and_a_failed_jobs_message_reaches_the_terminal(tmp_path):
    """profiles/default is where Snakemake looks; with it, plain `snakemake --cores 1` prints the
    failed job's own error (here: ingest naming the broken scene file)."""
    (tmp_path / "broken scene.tif").write_text("not a raster")
    config = json.loads(json.dumps(TINY_CONFIG))
    config["scenes"] = [
        {
            "name": "bad",
            "source": {"type": "geotiff", "path": "broken scene.tif", "band_order": BANDS},
        }
    ]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--cores", "1", "results/scenes/bad.tif", timeout=300)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "workflow specific profile" in text and "profiles/default" in text
    log = (tmp_path / "results/logs/ingest_scene/bad.log").read_text()
    message = next(line for line in log.splitlines() if "s2lc ingest: error:" in line)
    assert "broken scene.tif" in message
    assert message in text


@pytest.mark.workflow
def test_split_by_scene_and_a_stride_run_through_the_workflow(tmp_path):
    """Two demo scenes split by scene (train on one, validate on the other), with a non-default
    tile size and chips.stride: tiling, filtering and splitting run (each job got its sections
    whole, nothing re-checked across sections on a partial config)."""
    write_config(
        tmp_path,
        scenes=[
            {"name": "april", "date": "2024-04-15", "source": {"type": "demo"}},
            {"name": "august", "date": "2024-08-15", "source": {"type": "demo"}},
        ],
        tile_size=96,
        chips={"stride": 80},
        split={"method": "scene", "scenes": {"train": ["april"], "val": ["august"]}},
    )
    result = snakemake(tmp_path, "--cores", "2", "results/splits/size96/split.parquet")
    assert result.returncode == 0, result.stderr[-5000:] + result.stdout[-3000:]
    import pandas as pd

    split = pd.read_parquet(tmp_path / "results/splits/size96/split.parquet")
    kept = split[split["split"].isin(["train", "val"])]
    assert set(kept.loc[kept["split"] == "train", "scene"]) == {"april"}
    assert set(kept.loc[kept["split"] == "val", "scene"]) == {"august"}
    assert (split["row_off"] % 80 == 0).any() and sorted(set(split["row_off"]))[1] == 80


@pytest.mark.workflow
def test_predict_runs_from_any_folder_without_a_config(spaced_run, tmp_path):
    """The README's standalone predict, run where there is no config.yaml."""
    import subprocess
    import sys

    workdir = spaced_run[0]
    out = tmp_path / "my map.tif"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "s2landcover.cli",
            "predict",
            "--checkpoint",
            str(workdir / "results/models/size64/tiny/model.pt"),
            "--scene",
            str(workdir / "results/scenes/a.tif"),
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with rasterio.open(out) as p, rasterio.open(workdir / "results/scenes/a.tif") as s:
        assert (p.crs, p.transform, p.shape) == (s.crs, s.transform, s.shape)


def test_files_of_a_vrt_mask_are_inputs_of_the_mask_job(tmp_path):
    """A land-cover map given as a VRT mosaic: the tiles it reads are inputs of downsample_mask
    too (a replaced tile re-runs the mask), found through relative and absolute paths."""
    tiles = tmp_path / "national map (2024)"
    tiles.mkdir()
    for name in ("tile (1).tif", "tile 2.tif"):
        (tiles / name).write_bytes(b"a raster")
    sources = "".join(
        f"<SimpleSource><SourceFilename relativeToVRT='{rel}'>{path}</SourceFilename>"
        "<SourceBand>1</SourceBand></SimpleSource>"
        for rel, path in (("1", "tile (1).tif"), ("0", tiles / "tile 2.tif"))
    )
    (tiles / "mosaic.vrt").write_text(
        "<VRTDataset rasterXSize='10' rasterYSize='10'><VRTRasterBand dataType='Byte' band='1'>"
        f"{sources}</VRTRasterBand></VRTDataset>"
    )
    write_config(tmp_path, mask={"source": str(tiles / "mosaic.vrt")})
    result = snakemake(tmp_path, "-n", "--cores", "1", "results/masks/demo.tif")
    assert result.returncode == 0, result.stderr + result.stdout
    text = result.stdout + result.stderr
    job = re.search(r"rule downsample_mask:\n(.*?)\n\n", text, re.S).group(1)
    inputs = re.search(r"input: (.*)", job).group(1)
    assert str(tiles / "tile (1).tif") in inputs and str(tiles / "tile 2.tif") in inputs
