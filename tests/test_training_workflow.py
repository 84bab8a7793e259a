"""The workflow after an upstream change: a changed split trains afresh (issue 15, case 1).

Before, changing ``split.seed`` re-ran ``train_model``, which found the old ``last.ckpt`` (its
digest covered the settings only), "resumed" with every epoch done and returned the old model byte
for byte; evaluation then scored it on chips it had trained on. Here the tiny workflow runs with
``training.keep_checkpoints: true`` (so a ``last.ckpt`` is there, as after a killed run), then with
another split seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from workflow_helpers import snakemake

TINY_CONFIG = {
    "scenes": [{"name": "demo", "date": "2024-06-15", "source": {"type": "demo"}}],
    "demo": {"size": 256, "mask_factor": 10, "seed": 3},
    "tile_size": 64,
    "split": {"method": "random", "seed": 1},
    "model": {"name": "tiny", "architecture": "Unet", "encoder": "resnet18"},
    "training": {"epochs": 1, "batch_size": 4, "num_workers": 0, "keep_checkpoints": True},
    "prediction": {"batch_size": 4},
    "evaluation": {"sample_chips": 2, "overview_size": 128},
}


def run(workdir: Path, split_seed: int) -> None:
    config = json.loads(json.dumps(TINY_CONFIG))
    config["split"]["seed"] = split_seed
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--cores", "2")
    logs = "\n".join(
        f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(workdir.rglob("results/logs/**/*.log"))
    )
    assert result.returncode == 0, result.stderr[-5000:] + logs


@pytest.mark.workflow
def test_another_split_seed_trains_a_new_model_from_scratch(tmp_path: Path) -> None:
    run(tmp_path, split_seed=1)
    model_dir = tmp_path / "results/models/size64/tiny"
    split_path = tmp_path / "results/splits/size64/split.parquet"
    first_split = pd.read_parquet(split_path)["split"].tolist()
    first_model = (model_dir / "model.pt").read_bytes()
    assert (model_dir / "last.ckpt").is_file()

    run(tmp_path, split_seed=2)
    assert pd.read_parquet(split_path)["split"].tolist() != first_split
    log = (tmp_path / "results/logs/train_model/size64/tiny.log").read_text()
    assert "starting fresh: data changed" in log
    assert (model_dir / "model.pt").read_bytes() != first_model
    metrics = json.loads((tmp_path / "results/evaluation/size64/tiny/metrics.json").read_text())
    assert metrics["training_data"]["status"] == "match"
