"""Configuration validation: defaults, and a clear message for each kind of user mistake."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from s2landcover.config import (
    RUNTIME_KEYS,
    ConfigError,
    config_from_json,
    load_config,
    section_json,
    validate_config,
)
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
        "stacks[].name",
        "stacks[].scenes",
        "composites[].name",
        "composites[].scenes",
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
        ({"prediction": {"batch_size": "big"}}, "prediction.batch_size = 'big': expected an"),
        ({"prediction": {"batch_size": 0}}, "prediction.batch_size = 0 is out of range"),
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
        (
            {"scenes": [{"name": "a", "role": "map", "source": {"type": "demo"}}]},
            "no scene has role 'train' or 'both'",
        ),
        (
            {
                "scenes": [
                    {"name": "a", "source": {"type": "demo"}},
                    {"name": "b", "role": "map", "source": {"type": "demo"}},
                ],
                "split": {"method": "scene", "scenes": {"train": ["a"], "val": ["b"]}},
            },
            "split.scenes names scene(s) ['b'] whose role is 'map'",
        ),
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


# --- what each workflow rule gives its command (issue 17: validate once, pass resolved values) ---

RULE_FILES = sorted((ROOT / "workflow/rules").glob("*.smk"))
# Rules whose command reads no config: the workflow gives it resolved values as arguments
# (workflow/rules/dates.smk; tested in tests/test_workflow_dates.py).
NO_CONFIG_RULES = {"stack_scene", "stack_validity", "composite_map"}


def _shell_commands() -> dict[str, str]:
    """rule name -> its shell command (the string literals after ``shell:``, joined)."""
    commands = {}
    for path in RULE_FILES:
        for match in re.finditer(
            r"^rule (\w+):\n(.*?)(?=^rule |\Z)", path.read_text(), re.M | re.S
        ):
            body = match.group(2).split("shell:", 1)
            if len(body) == 2:
                commands[match.group(1)] = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', body[1]))
    return commands


def shipped_configs() -> list[tuple[str, dict]]:
    """Every config the repository ships (config.yaml, config/*.yaml, config/examples/*.yaml;
    class-table fragments left out), validated as the workflow validates it at start, plus the
    variants that broke before: a by-scene split, and a non-default tile_size with chips.stride."""
    configs = []
    for path in [ROOT / "config.yaml", *sorted((ROOT / "config").rglob("*.yaml"))]:
        data = yaml.safe_load(path.read_text())
        if set(data) != {"classes"}:
            configs.append((path.relative_to(ROOT).as_posix(), data))
    seed = dict(yaml.safe_load((ROOT / "config/examples/catalonia_seed.yaml").read_text()))
    names = [s["name"] for s in seed["scenes"]]
    configs.append(
        (
            "catalonia_seed + split by scene",
            {
                **seed,
                "split": {"method": "scene", "scenes": {"train": names[:1], "val": names[1:]}},
            },
        )
    )
    configs.append(("tile_size 512 + stride 400", {"tile_size": 512, "chips": {"stride": 400}}))
    return [(name, validate_config(data, source=name)) for name, data in configs]


def _job_argv(command: str, config: dict, scene: str) -> list[str]:
    """The argument list the rule's shell command gives ``s2lc`` for ``scene``: each
    ``{params.<section>:q}`` becomes that section's JSON as common.smk makes it (one scene of the
    scene table, tile_size from the path), other placeholders plain values."""
    command = re.split(r" 2>", command)[0]  # the log redirection (and a tee to the terminal)

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name.startswith("params."):
            section = name.removeprefix("params.").removeprefix("provenance_")
            if section == "scenes":
                entry = next(s for s in config["scenes"] if s["name"] == scene)
                entry = {k: v for k, v in entry.items() if k != "role"}
                return shlex.quote(section_json("scenes", [entry]))
            if section in config:
                return shlex.quote(section_json(section, config[section]))
            if section in ("product", "scl", "validity_arg", "baseline_arg"):
                return ""  # optional flags made by common.smk (--source-path, --scl, --validity)
        return shlex.quote(
            {
                "wildcards.scene": scene,
                "wildcards.tile": str(config["tile_size"]),
                "wildcards.year": "2021",
                "threads": "1",
                "resources.num_workers": str(config["training"]["num_workers"]),
                "resources.checkpoint_interval_s": "60",
                "resources.dask_scheduler": "local",
                "resources.accelerator": config["training"]["accelerator"],
                "resources.strategy": config["training"]["strategy"],
            }.get(name, f"path/{name}.x")
        )

    return shlex.split(re.sub(r"\{([\w.]+)(?::q)?\}", value, command))[1:]


def test_every_rule_passes_the_sections_its_command_reads():
    """Every rule's command, with the params the workflow gives it, loads its config and enters
    its stage (the stage's work function replaced by a recorder) for every shipped config: no
    section missing, no cross-section check on a partial config, runtime keys not in params."""
    import s2landcover.chips
    import s2landcover.classify
    import s2landcover.demo
    import s2landcover.download
    import s2landcover.evaluate
    import s2landcover.ingest
    import s2landcover.masks
    import s2landcover.predict
    import s2landcover.split
    import s2landcover.training.train as train_module
    import s2landcover.validity
    from s2landcover import cli
    from s2landcover.classes import ClassTable
    from s2landcover.training.tasks import task_from_config

    def training_entry(split, chips_root, out_dir, config, **kwargs):
        # What train_model reads from the config before touching data.
        task_from_config(config)
        ClassTable.from_config(config["classes"])
        train_module.config_digest(config)
        calls.append(config["training"]["num_workers"])

    calls: list = []
    recorder = lambda *args, **kwargs: calls.append(args)  # noqa: E731
    patches = [
        (s2landcover.demo, "make_demo_landcover"),
        (s2landcover.demo, "make_demo_scene"),
        (s2landcover.download, "download_scene"),
        (s2landcover.download, "download_worldcover_for_scenes"),
        (s2landcover.ingest, "ingest_scene"),
        (s2landcover.masks, "downsample_mask"),
        (s2landcover.chips, "tile_scene"),
        (s2landcover.chips, "filter_chips"),
        (s2landcover.split, "split_chips"),
        (s2landcover.predict, "predict_scene"),
        (s2landcover.classify, "predict_chips"),
        (s2landcover.evaluate, "evaluate_model"),
        (s2landcover.validity, "write_validity"),
    ]
    commands = _shell_commands()
    assert {
        "ingest_scene",
        "scene_validity",
        "tile_scene",
        "split_chips",
        "train_model",
        "predict_scene",
    } <= set(commands)
    with pytest.MonkeyPatch.context() as mp:
        for module, name in patches:
            mp.setattr(module, name, recorder)
        mp.setattr(train_module, "train_model", training_entry)
        # torch's process settings: the CLI's, from the rule's {threads} (here "1").
        torch_threads: dict = {}
        mp.setattr(
            cli, "process_settings", lambda threads, **_: torch_threads.setdefault(rule, threads)
        )
        for config_name, config in shipped_configs():
            for rule, command in commands.items():
                if rule in NO_CONFIG_RULES:
                    assert "--config" not in command, rule
                    continue
                assert "--config-json" in command, rule
                scene = config["scenes"][0]["name"]
                argv = _job_argv(command, config, scene)
                args = cli.build_parser().parse_args(argv)
                loaded = cli._config_of(args)
                for section, value in loaded.items():
                    assert section in config, (rule, section)
                    if section == "scenes":
                        assert [s["name"] for s in value] == [scene]
                    elif section in RUNTIME_KEYS:
                        for key, expected in value.items():
                            if key not in RUNTIME_KEYS[section]:
                                assert expected == config[section][key], (config_name, rule, key)
                    elif section == "tile_size":
                        assert value == config["tile_size"]
                    else:
                        assert value == config[section], (config_name, rule, section)
                try:
                    cli._HANDLERS[args.command](args, loaded)
                except KeyError as error:  # a section the command reads but was not given
                    pytest.fail(f"{config_name}: rule {rule}: {error}")
    assert calls
    assert {"train_model", "train_pixel_baseline", "predict_scene"} <= set(torch_threads)
    assert set(torch_threads.values()) == {1}, torch_threads


def test_config_json_validates_sections_alone():
    """A job's sections are checked each on its own: no defaults for sections not given (reading
    one is an error, not a silent default), no check that needs another section."""
    # split by scene names scenes this job does not see; stride above the default tile size
    loaded = config_from_json(
        [
            '{"split": {"method": "scene", "scenes": {"train": ["april"], "val": ["august"]}}}',
            '{"chips": {"stride": 400}}',
        ]
    )
    assert loaded["split"]["seed"] == 42  # defaults below a given section are filled in
    assert set(loaded) == {"split", "chips"}
    with pytest.raises(KeyError, match="'scenes' was not passed"):
        loaded["scenes"]
    with pytest.raises(ConfigError, match="must sum to 1"):  # a one-section check still runs
        config_from_json('{"split": {"fractions": {"train": 0.5, "val": 0.2}}}')
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_json('{"tile_sise": 3}')
    # the whole config is still checked across sections
    with pytest.raises(ConfigError, match=r"split\.scenes names unknown scene"):
        validate_config({"split": {"method": "scene", "scenes": {"train": ["april"]}}})


def test_runtime_keys_are_not_in_the_section_params():
    """training.num_workers (and the other runtime-only keys) never reach a rerun-triggering
    param: the section JSON leaves them out."""
    config = validate_config({"training": {"num_workers": 7}})
    text = section_json("training", config["training"])
    assert json.loads(text)["training"]["epochs"] == config["training"]["epochs"]
    for key in RUNTIME_KEYS["training"]:
        assert key not in json.loads(text)["training"]


# --- s2lc as a user meets it (issue 18) ---


def test_version_is_printed():
    result = subprocess.run(
        [sys.executable, "-m", "s2landcover.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    from s2landcover import __version__

    assert result.returncode == 0
    assert result.stdout.strip() == f"s2lc {__version__}"


def test_every_option_has_help_and_no_help_shows_raw_rest():
    from s2landcover import cli

    parser = cli.build_parser()
    texts = [parser.format_help()]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == set(cli._HANDLERS)
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"s2lc {name} {action.option_strings}: no help text"
        text = sub.format_help()
        assert f"example:\n  s2lc {name} " in text, name
        texts.append(text)
    for text in texts:
        assert "``" not in text and "::" not in text and ":class:" not in text, text


def test_commands_that_need_no_settings_run_without_a_config_file(tmp_path, monkeypatch):
    """predict (and the other commands whose settings all have defaults) work in a folder
    without config.yaml; a command that needs one says so, naming the folder."""
    from s2landcover import cli

    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(
        ["predict", "--checkpoint", "m.pt", "--scene", "s.tif", "--out", "o.tif"]
    )
    assert cli._config_of(args)["prediction"] == validate_config({})["prediction"]
    args = cli.build_parser().parse_args(["ingest", "--scene", "a", "--out", "a.tif"])
    with pytest.raises(ConfigError, match=r"no --config given and there is no config\.yaml in"):
        cli._config_of(args)
    # ./config.yaml is read when present, whatever the command
    (tmp_path / "config.yaml").write_text("prediction: {tta: true}\n")
    args = cli.build_parser().parse_args(
        ["predict", "--checkpoint", "m.pt", "--scene", "s.tif", "--out", "o.tif"]
    )
    assert cli._config_of(args)["prediction"]["tta"] is True


def test_config_readme_names_every_section_and_catalog_file_parses():
    """config/README.md (the Snakemake workflow catalog's configuration page) names every
    top-level key of the schema; .snakemake-workflow-catalog.yml has the catalog's usage keys."""
    readme = (ROOT / "config/README.md").read_text()
    for key in load_config.__globals__["load_schema"]()["properties"]:
        assert f"`{key}`" in readme, key
    catalog = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())
    assert set(catalog["usage"]) >= {"mandatory-flags", "software-stack-deployment"}
    assert catalog["usage"]["software-stack-deployment"]["conda"] is True
