"""Configuration validation: defaults, and a clear message for each kind of user mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from s2landcover.config import ConfigError, load_config, validate_config
from workflow_helpers import snakemake

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_fill_every_section():
    config = validate_config({})
    assert config["tile_size"] == 300
    assert config["bands"] == ["B02", "B03", "B04", "B08"]
    assert config["split"]["fractions"] == {"train": 0.8, "val": 0.2, "test": 0.0}
    assert config["mask"]["resampling"] == "nearest"
    assert len(config["classes"]) >= 2


def test_repository_configs_are_valid():
    load_config(ROOT / "config.yaml")
    for path in sorted((ROOT / "config").rglob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if set(data) == {"classes"}:  # class-table fragments
            validate_config(data, source=str(path))
        else:
            load_config(path)


def test_every_schema_key_has_type_description_default():

    def walk(schema: dict, where: str) -> None:
        for name, sub in schema.get("properties", {}).items():
            key = f"{where}.{name}" if where else name
            assert "description" in sub, f"{key} has no description"
            assert "type" in sub or "enum" in sub, f"{key} has no type"
            if key not in required_without_default:
                assert "default" in sub, f"{key} has no default"
            walk(sub, key)
        if "items" in schema and isinstance(schema["items"], dict):
            walk(schema["items"], where + "[]")

    required_without_default = {
        "scenes[].name",
        "scenes[].source",
        "scenes[].source.type",
        "classes[].index",
        "classes[].name",
        "classes[].codes",
    }
    walk(load_config.__globals__["load_schema"](), "")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"tile_sise": 300}, "unknown key(s) 'tile_sise'"),
        ({"filter": {"max_nodata": 0.2}}, "unknown key(s) 'max_nodata' in filter"),
        ({"tile_size": "300"}, "tile_size = '300' has the wrong type"),
        ({"tile_size": 0}, "tile_size = 0 is out of range"),
        ({"split": {"fractions": {"train": 0.7, "val": 0.2}}}, "split.fractions must sum to 1"),
        (
            {
                "classes": [
                    {"index": 1, "name": "A", "codes": [1, 2]},
                    {"index": 2, "name": "B", "codes": [2]},
                ]
            },
            "source code 2 is listed for both 'A' and 'B'",
        ),
        ({"classes": [{"index": 2, "name": "A", "codes": [1]}]}, "indices must be 1..1"),
        ({"mask": {"resampling": "bilinear"}}, "mask.resampling = 'bilinear' is not allowed"),
        ({"chips": {"stride": 400}}, "chips.stride = 400 is larger than tile_size"),
    ],
)
def test_config_errors_name_the_key(override, expected):
    with pytest.raises(ConfigError) as error:
        validate_config(override)
    assert expected in str(error.value)


def _write_config(tmp_path: Path, override: dict) -> Path:
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    base.update(override)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"tile_size": 0}, "tile_size = 0 is out of range"),
        ({"split": {"fractions": {"train": 0.5, "val": 0.2, "test": 0.2}}}, "must sum to 1"),
        (
            {
                "classes": [
                    {"index": 1, "name": "A", "codes": [5]},
                    {"index": 2, "name": "B", "codes": [5]},
                ]
            },
            "source code 5 is listed for both",
        ),
        ({"unknown_section": 1}, "unknown key(s) 'unknown_section'"),
    ],
)
def test_snakemake_stops_with_message_and_writes_nothing(tmp_path, override, expected):
    """The workflow refuses a bad config at start-up: one message, no traceback, no outputs."""
    config = _write_config(tmp_path, override)
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = snakemake(workdir, "--configfile", str(config), "--cores", "1", timeout=120)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workdir / "results").exists()


def test_cli_reports_config_error_without_traceback(tmp_path):
    config = _write_config(tmp_path, {"tile_size": 0})
    result = subprocess.run(
        [sys.executable, "-m", "s2landcover.cli", "validate-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "tile_size = 0 is out of range" in result.stderr
    assert "Traceback" not in result.stderr
