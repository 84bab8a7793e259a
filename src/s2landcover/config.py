"""Loading and validating the pipeline configuration.

The JSON schema (``schemas/config.schema.yaml``, draft 2020-12) states every key with its type,
description and default; :func:`validate_config` fills the defaults in and adds the checks a schema
cannot express (fractions that sum to 1, unique class codes, consecutive class indices). Every
error is a :class:`ConfigError` whose message names the key and what is allowed, so the command
line and the workflow can print it without a traceback.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from s2landcover.errors import InputError
from s2landcover.io.config_files import read_config_text, read_packaged_schema

SCHEMA_RESOURCE = "config.schema.yaml"


class ConfigError(InputError):
    """A user mistake in the configuration: the message says which key and what is allowed."""


def load_schema() -> dict[str, Any]:
    """Return the configuration JSON schema shipped with the package."""
    text = read_packaged_schema(SCHEMA_RESOURCE)
    return yaml.safe_load(text)


def _key_path(path: Any) -> str:
    parts = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "(top level)"


def _extend_with_defaults(validator_class: Any) -> Any:
    """A validator that fills in ``default`` values while it validates (jsonschema's recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(
        validator: Any, properties: dict[str, Any], instance: Any, schema: dict[str, Any]
    ) -> Iterator[Any]:
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultFillingValidator = _extend_with_defaults(jsonschema.Draft202012Validator)


def _describe(error: jsonschema.ValidationError, schema: dict[str, Any]) -> str:
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = (
            sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        )
        return (
            f"unknown key(s) {', '.join(map(repr, extra))} in {where}; "
            f"allowed keys: {', '.join(allowed)}"
        )
    description = error.schema.get("description", "") if isinstance(error.schema, dict) else ""
    hint = f" ({description.strip()})" if description else ""
    if error.validator == "enum":
        return f"{where} = {error.instance!r} is not allowed; choose one of {error.validator_value}"
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        return f"{where} = {error.instance!r} is out of range: {error.message}{hint}"
    if error.validator == "type":
        expected = error.validator_value
        return f"{where} = {error.instance!r} has the wrong type: expected {expected}{hint}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    return f"{where}: {error.message}{hint}"


def _check_split(split: Mapping[str, Any]) -> None:
    fractions = split["fractions"]
    total = fractions["train"] + fractions["val"] + fractions["test"]
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(
            f"split.fractions must sum to 1, got train {fractions['train']}"
            f" + val {fractions['val']}"
            f" + test {fractions['test']} = {total:g}"
        )
    if split["method"] != "scene" and fractions["train"] <= 0:
        raise ConfigError("split.fractions.train must be above 0 (no chip would be trained on)")


def _check_classes(classes: list[dict[str, Any]]) -> None:
    indices = [c["index"] for c in classes]
    if sorted(indices) != list(range(1, len(classes) + 1)):
        raise ConfigError(
            f"classes: indices must be 1..{len(classes)} with none missing or repeated, "
            f"got {indices}"
        )
    seen: dict[int, str] = {}
    for entry in classes:
        for code in entry["codes"]:
            if code in seen:
                raise ConfigError(
                    f"classes: source code {code} is listed for both {seen[code]!r} and "
                    f"{entry['name']!r}; each code may map to one class only"
                )
            seen[code] = entry["name"]
    names = [c["name"] for c in classes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"classes: duplicate class name(s) {duplicates}")


def _check_scenes(scenes: list[dict[str, Any]]) -> None:
    scene_names = [s["name"] for s in scenes]
    duplicates = sorted({n for n in scene_names if scene_names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"scenes: duplicate scene name(s) {duplicates}")


def _check_prediction(prediction: Mapping[str, Any]) -> None:
    window = prediction["window"]
    if isinstance(window, str) and window != "auto":
        raise ConfigError(f"prediction.window = {window!r}: expected an integer, null or 'auto'")
    if isinstance(window, int) and (window % 32 or window < 32):
        raise ConfigError(
            f"prediction.window = {window} must be a multiple of 32 (U-Net downsampling), >= 32"
        )
    batch_size = prediction["batch_size"]
    if isinstance(batch_size, str) and batch_size != "auto":
        raise ConfigError(f"prediction.batch_size = {batch_size!r}: expected an integer or 'auto'")


# Checks of one section alone: they run on the whole config at workflow start and again on each
# section a job is given (see config_from_json).
_SECTION_CHECKS: dict[str, Callable[[Any], None]] = {
    "split": _check_split,
    "classes": _check_classes,
    "scenes": _check_scenes,
    "prediction": _check_prediction,
}


def check_stride(stride: int | None, tile_size: int) -> None:
    """Refuse a chip stride above the tile size (it would leave gaps between chips)."""
    if stride is not None and stride > tile_size:
        raise ConfigError(
            f"chips.stride = {stride} is larger than tile_size = {tile_size}; "
            "a stride above the tile size would leave gaps between chips"
        )


def _check_cross_sections(config: dict[str, Any]) -> None:
    """Checks that relate sections: they need the whole config, so they run at workflow start."""
    seen = {code for entry in config["classes"] for code in entry["codes"]}
    overlap = sorted(set(config["mask"]["nodata_codes"]) & seen)
    if overlap:
        raise ConfigError(f"mask.nodata_codes {overlap} are also class codes in the class table")

    scene_names = [s["name"] for s in input_entries(config)]
    if config["split"]["method"] == "scene":
        named = config["split"]["scenes"]
        unknown = sorted(set(named["train"] + named["val"] + named["test"]) - set(scene_names))
        if unknown:
            raise ConfigError(
                f"split.scenes names unknown scene(s) {unknown}; scenes are {scene_names}"
            )
        if not named["train"]:
            raise ConfigError("split.method is 'scene' but split.scenes.train is empty")
        not_trained = sorted(
            s["name"]
            for s in input_entries(config)
            if s["name"] in named["train"] + named["val"] + named["test"]
            and s["role"] in ("map", "none")
        )
        if not_trained:
            raise ConfigError(
                f"split.scenes names scene(s) {not_trained} whose role is 'map' (mapped only, "
                "never tiled); give them role 'both' or 'train', or leave them out of split.scenes"
            )
    mapped_only = [s["name"] for s in input_entries(config) if s["role"] == "map"]
    if config["task"] == "classification" and mapped_only:
        raise ConfigError(
            f"scenes {mapped_only} have role 'map', but task 'classification' labels the chips of "
            "trained-on scenes only; give them role 'both' or use task 'segmentation'"
        )
    if not any(s["role"] in ("train", "both") for s in input_entries(config)):
        raise ConfigError(
            "scenes: no scene has role 'train' or 'both' (nor any stack); one must be trained on"
        )

    check_stride(config["chips"]["stride"], config["tile_size"])
    _check_dates(config)


# --- several dates: stacks and composites (docs/dates.md) ----------------------------------------

DATE_SEPARATOR = ":"


def dated_band_names(dates: Sequence[str], bands: Sequence[str]) -> list[str]:
    """Band names of a stack of dated scenes: every band of the first date, then of the next
    (``["2024-04-15:B04", "2024-04-15:B08", "2024-08-15:B04", ...]``)."""
    return [f"{date}{DATE_SEPARATOR}{band}" for date in dates for band in bands]


def input_entries(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The inputs the downstream stages iterate over: every scene, then every stack (a stack has a
    name, a role and member ``scenes``; a scene a ``source``)."""
    return [*config["scenes"], *config["stacks"]]


def input_bands(config: Mapping[str, Any], name: str) -> list[str]:
    """The band names of the input (scene or stack) ``name``: the config's bands for a scene, the
    dated bands of its members' dates for a stack."""
    for stack in config["stacks"]:
        if stack["name"] == name:
            dates = {s["name"]: s.get("date", "") for s in config["scenes"]}
            return dated_band_names([dates[m] for m in stack["scenes"]], config["bands"])
    return list(config["bands"])


def model_bands(config: Mapping[str, Any]) -> list[str]:
    """The bands the model is trained on: those of the trained-on inputs (all the same, checked at
    start by :func:`validate_config`)."""
    trained = [e["name"] for e in input_entries(config) if e["role"] in ("train", "both")]
    return input_bands(config, trained[0]) if trained else list(config["bands"])


def _default_member_roles(config: dict[str, Any]) -> None:
    """A scene listed in ``stacks[].scenes`` without a role of its own gets role ``none`` (ingested
    for the stack, not used on its own). Runs before the schema fills ``role: both``."""
    stacks, scenes = config.get("stacks"), config.get("scenes")
    if not isinstance(stacks, list) or not isinstance(scenes, list):
        return
    members = {
        m
        for s in stacks
        if isinstance(s, dict)
        for m in (s.get("scenes") or [])
        if isinstance(m, str)
    }
    for scene in scenes:
        if isinstance(scene, dict) and scene.get("name") in members and "role" not in scene:
            scene["role"] = "none"


def _area_key(source: Mapping[str, Any]) -> tuple[str, str] | None:
    """What can be told of a scene's area before ingest: the demo area, or a STAC MGRS tile; None
    for files (their footprints are compared when stacking / compositing)."""
    if source["type"] == "demo":
        return ("demo", "")
    if source["type"] == "stac" and source.get("mgrs_tile"):
        tile = str(source["mgrs_tile"]).upper().removeprefix("MGRS-").removeprefix("T")
        return ("MGRS tile", tile)
    return None


def _check_same_area(what: str, members: Sequence[str], sources: Mapping[str, Any]) -> None:
    keys = {m: _area_key(sources[m]) for m in members}
    known = {k for k in keys.values() if k is not None}
    if len(known) > 1 or (known and None in keys.values() and ("demo", "") in known):
        described = ", ".join(
            f"{m}: {k[0] + ' ' + k[1] if k else 'a file'}" for m, k in keys.items()
        )
        raise ConfigError(
            f"{what} lists scenes of different areas ({described}); its scenes must cover one area"
        )


def _check_dates(config: dict[str, Any]) -> None:
    """Stacks and composites against the scene table (whole config, at workflow start)."""
    scenes = {s["name"]: s for s in config["scenes"]}
    stacks = {s["name"]: s for s in config["stacks"]}
    names = [s["name"] for s in config["stacks"]]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"stacks: duplicate stack name(s) {repeated}")
    clash = sorted(set(stacks) & set(scenes))
    if clash:
        raise ConfigError(
            f"stacks: name(s) {clash} are also scene names; a stack is used like a scene "
            "(results/scenes/{name}.tif), so its name must differ"
        )
    in_stack = set()
    for stack in stacks.values():
        where = f"stacks[{names.index(stack['name'])}] ({stack['name']})"
        unknown = [m for m in stack["scenes"] if m not in scenes]
        if unknown:
            raise ConfigError(f"{where}: unknown scene(s) {unknown}; scenes are {list(scenes)}")
        dates = [scenes[m]["date"] for m in stack["scenes"]]
        if not all(dates) or len(set(dates)) != len(dates):
            raise ConfigError(
                f"{where}: every member scene needs its own date (scenes[].date, YYYY-MM-DD): "
                f"the band names say the date; got {dict(zip(stack['scenes'], dates, strict=True))}"
            )
        _check_same_area(where, stack["scenes"], {m: scenes[m]["source"] for m in scenes})
        in_stack.update(stack["scenes"])
    unused = sorted(n for n, s in scenes.items() if s["role"] == "none" and n not in in_stack)
    if unused:
        raise ConfigError(
            f"scenes {unused} have role 'none' (a stack member only) but are in no stack; "
            "give them role 'both', 'train' or 'map', or list them in stacks[].scenes"
        )
    dated = [b for b in config["bands"] if DATE_SEPARATOR in b]
    if dated:
        raise ConfigError(
            f"bands {dated}: give plain band names (B04); stacks make the dated names themselves"
        )
    # One model: every trained-on and mapped input has the bands it is trained on.
    used = [e for e in input_entries(config) if e["role"] != "none"]
    bands = {e["name"]: input_bands(config, e["name"]) for e in used}
    reference = model_bands(config)
    different = sorted(n for n, b in bands.items() if b != reference)
    if different:
        raise ConfigError(
            f"inputs {different} do not have the bands the model is trained on ({reference[:4]}"
            f"{'...' if len(reference) > 4 else ''}): one model takes one band list, and a stack's "
            "band names carry its dates; train and map either plain scenes or stacks of the same "
            "dates (give the others role 'none', or put them in their own config)"
        )
    if config["stacks"] and config["task"] == "classification":
        raise ConfigError("stacks are for task 'segmentation' (classification reads scene chips)")
    if config["stacks"] and config["ingest"]["include_scl"]:
        raise ConfigError(
            "stacks: ingest.include_scl is not supported with stacks (the stack has no SCL band); "
            "clouds of stacks come from the validity rasters (validity.source)"
        )
    # Composites: mapped inputs of one area.
    mapped = {e["name"]: e for e in used if e["role"] in ("map", "both")}
    composites = config["composites"]
    cnames = [c["name"] for c in composites]
    repeated = sorted({n for n in cnames if cnames.count(n) > 1})
    if repeated:
        raise ConfigError(f"composites: duplicate composite name(s) {repeated}")
    for i, composite in enumerate(composites):
        where = f"composites[{i}] ({composite['name']})"
        unmapped = [m for m in composite["scenes"] if m not in mapped]
        if unmapped:
            raise ConfigError(
                f"{where}: {unmapped} are not mapped inputs; a composite takes scenes or stacks "
                f"with role 'map' or 'both': {sorted(mapped)}"
            )
        sources = {
            m: (scenes[m]["source"] if m in scenes else scenes[stacks[m]["scenes"][0]]["source"])
            for m in composite["scenes"]
        }
        _check_same_area(where, composite["scenes"], sources)
        if not config["prediction"]["confidence"]:
            raise ConfigError(
                f"{where}: a composite ranks the dates by the prediction's confidence; set "
                "prediction.confidence: true"
            )


def _check_semantics(config: dict[str, Any]) -> None:
    """Checks that a JSON schema cannot express."""
    for name, check in _SECTION_CHECKS.items():
        check(config[name])
    _check_cross_sections(config)


def validate_config(config: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate a configuration mapping and return a copy with every default filled in.

    Args:
        config: the configuration as read from YAML (possibly partial).
        source: where it came from, used in error messages (a file name).

    Raises:
        ConfigError: naming the offending key and what is allowed.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"{source}: the configuration must be a mapping of keys, got {config!r}")
    filled = copy.deepcopy(dict(config))
    _default_member_roles(filled)
    schema = load_schema()
    validator = _DefaultFillingValidator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        raise ConfigError(f"{source}: " + _describe(errors[0], schema))
    try:
        _check_semantics(filled)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return filled


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML configuration file and validate it (see :func:`validate_config`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    try:
        data = yaml.safe_load(read_config_text(path)) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return validate_config(data, source=str(path))


class SectionConfig(dict):
    """The config sections a command was given (by the workflow): a missing one is a bug, not a
    default, so reading it raises instead of silently using the schema's default."""

    def __missing__(self, key: str) -> Any:
        raise KeyError(
            f"config section {key!r} was not passed to this command (given: {sorted(self)}); "
            "the workflow rule must pass every section its command reads"
        )


def validate_sections(data: Mapping[str, Any], source: str = "config") -> SectionConfig:
    """Validate the top-level sections present in ``data``, each on its own, with defaults filled
    in below them; sections not given stay absent, and checks that relate two sections do not run
    (the workflow ran them on the whole config at start; a partial config cannot answer them).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the configuration must be a mapping of keys, got {data!r}")
    filled = copy.deepcopy(dict(data))
    schema = load_schema()
    properties = schema["properties"]
    partial = {
        **{k: v for k, v in schema.items() if k not in ("properties", "default")},
        "properties": {k: properties[k] for k in filled if k in properties},
    }
    validator = _DefaultFillingValidator(partial)
    errors = sorted(validator.iter_errors(filled), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        raise ConfigError(f"{source}: " + _describe(errors[0], schema))
    try:
        for name, check in _SECTION_CHECKS.items():
            if name in filled:
                check(filled[name])
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return SectionConfig(filled)


def config_from_json(texts: str | Sequence[str]) -> SectionConfig:
    """The config sections a workflow rule passes (``--config-json``): one or more JSON objects,
    each usually holding one section (see :func:`section_json`), merged and validated per section
    (:func:`validate_sections`)."""
    if isinstance(texts, str):
        texts = [texts]
    merged: dict[str, Any] = {}
    for text in texts:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"--config-json is not valid JSON: {error}: {text[:80]!r}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"--config-json: expected a JSON object of sections, got {text!r}")
        repeated = sorted(set(data) & set(merged))
        if repeated:
            raise ConfigError(f"--config-json: section(s) {repeated} given twice")
        merged.update(data)
    return validate_sections(merged, source="--config-json")


# Keys that change how or where a job runs but not what it computes. The workflow passes them as
# Snakemake resources (which are no rerun trigger), not as params, so changing them re-runs nothing.
RUNTIME_KEYS: dict[str, tuple[str, ...]] = {
    "training": ("num_workers", "accelerator", "strategy", "checkpoint_interval_s"),
    "compute": ("dask_scheduler",),
}


def section_json(name: str, value: Any) -> str:
    """One config section as compact JSON ``{"name": value}``: one Snakemake param per section,
    so that a "params changed" rerun reason shows only the sections that changed, by name."""
    if name in RUNTIME_KEYS and isinstance(value, Mapping):
        value = {k: v for k, v in value.items() if k not in RUNTIME_KEYS[name]}
    return json.dumps({name: value}, sort_keys=True, separators=(",", ":"))


def config_subset(config: Mapping[str, Any], keys: list[str]) -> str:
    """JSON text of the named top-level sections (one JSON object), as ``--config-json`` takes.

    Runtime-only keys (:data:`RUNTIME_KEYS`) are left out.
    """
    return json.dumps(
        {
            key: (
                {k: v for k, v in config[key].items() if k not in RUNTIME_KEYS[key]}
                if key in RUNTIME_KEYS and isinstance(config[key], Mapping)
                else config[key]
            )
            for key in keys
        },
        sort_keys=True,
    )
