"""End-to-end: the small replica of the founding case (config/examples/catalonia_replica*.yaml) at
tiny sizes through Snakemake: two dates of one area, the 12 Catalonia classes, a map 10 times
finer than the scenes; trained on one date and validated on the other with a composite map; and
the stacked variant (both dates as one input with dated band names)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import rasterio
import torch
import yaml

from workflow_helpers import ROOT, snakemake

# Tiny sizes: a 200 px (2 km) area with its 2,000 px map, 4 bands, 64 px chips, one epoch.
TINY = {
    "demo": {"size": 200, "mask_factor": 10, "seed": 5},
    "bands": ["B02", "B03", "B04", "B08"],
    "tile_size": 64,
    "training": {"epochs": 1, "batch_size": 4, "num_workers": 0},
    "evaluation": {"sample_chips": 2, "overview_size": 128},
}


def replica(workdir: Path, example: str, **overrides: object) -> dict:
    """Write ``workdir/config.yaml``: the example config with the tiny sizes (and overrides)."""
    config = yaml.safe_load((ROOT / "config/examples" / example).read_text())
    config.update(json.loads(json.dumps(TINY)))
    config["model"] = {**config["model"], "encoder": "resnet18"}
    config["prediction"] = {**config.get("prediction", {}), "batch_size": 4}
    config.update(overrides)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return config


def run(workdir: Path, *targets: str):
    result = snakemake(workdir, "--cores", "2", *targets)
    logs = "\n".join(
        f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted(workdir.glob("results/logs/**/*.log"))
    )
    assert result.returncode == 0, result.stderr[-4000:] + logs[-6000:]
    return result


def planned_jobs(workdir: Path) -> set[str]:
    """Rule names a dry run would execute."""
    result = snakemake(workdir, "-n")
    assert result.returncode == 0, result.stderr + result.stdout
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return set()
    table = text.split("Job stats:", 1)[1]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+\s*$", table, re.M)} - {"total"}


@pytest.fixture(scope="module")
def by_scene(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("replica")
    replica(workdir, "catalonia_replica.yaml")
    run(workdir)
    return workdir


@pytest.fixture(scope="module")
def stacked(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("replica_stacked")
    replica(workdir, "catalonia_replica_stacked.yaml")
    run(workdir)
    return workdir


@pytest.mark.workflow
def test_replica_trains_on_april_validates_on_august_and_composites_both_dates(by_scene):
    results = by_scene / "results"
    split = pd.read_parquet(results / "splits/size64/split.parquet")
    kept = split[split["split"].isin(["train", "val"])]
    assert set(kept.loc[kept["split"] == "train", "scene"]) == {"area_april"}
    assert set(kept.loc[kept["split"] == "val", "scene"]) == {"area_august"}
    # The map is 10 x finer than the scenes.
    with rasterio.open(results / "demo/landcover_1m.tif") as fine:
        with rasterio.open(results / "scenes/area_april.tif") as scene:
            assert fine.width == 10 * scene.width and fine.res[0] * 10 == scene.res[0]
    composite = results / "composites/size64/unet-resnet34/area.tif"
    source = results / "composites/size64/unet-resnet34/area_source.tif"
    with rasterio.open(composite) as comp, rasterio.open(source) as src:
        with rasterio.open(results / "predictions/size64/unet-resnet34/area_april.tif") as pred:
            assert (comp.crs, comp.transform, comp.shape) == (pred.crs, pred.transform, pred.shape)
        names = json.loads(comp.tags(1)["CLASS_NAMES"])
        assert len(names) == 13 and names[12] == "Watercourses and water bodies"
        assert json.loads(src.tags()["SOURCE_DATES"]) == ["2024-04-15", "2024-08-20"]
        sources = set(src.read(1).ravel().tolist())
        assert sources <= {0, 1, 255} and sources & {0, 1}
    metrics = json.loads((results / "evaluation/size64/unet-resnet34/metrics.json").read_text())
    assert metrics


@pytest.mark.workflow
def test_stacked_replica_trains_one_model_on_dated_bands(stacked):
    results = stacked / "results"
    with rasterio.open(results / "scenes/area.tif") as src:
        assert src.descriptions[0] == "2024-04-15:B02" and src.descriptions[4] == "2024-08-20:B02"
        assert src.count == 8
    # The members are ingested (and screened) for the stack, not tiled on their own.
    assert (results / "scenes/area_april.tif").exists()
    assert (results / "validity/area.tif").exists()
    assert sorted(p.name for p in (results / "chips/size64").iterdir() if p.is_dir()) == ["area"]
    model = torch.load(results / "models/size64/unet-resnet34-stacked/model.pt", weights_only=True)
    assert model["metadata"]["bands"][-1] == "2024-08-20:B08"
    assert (results / "predictions/size64/unet-resnet34-stacked/area.tif").exists()
    assert (results / "evaluation/size64/unet-resnet34-stacked/report.html").exists()


@pytest.mark.workflow
def test_allowing_partial_inputs_reruns_the_stack_validity_and_after_only(stacked):
    config = yaml.safe_load((stacked / "config.yaml").read_text())
    config["stacks"][0]["allow_partial"] = True
    (stacked / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        planned = planned_jobs(stacked)
    finally:
        config["stacks"][0]["allow_partial"] = False
        (stacked / "config.yaml").write_text(yaml.safe_dump(config))
    assert "stack_validity" in planned and "tile_scene" in planned
    assert not planned & {"ingest_scene", "stack_scene", "scene_validity", "downsample_mask"}
