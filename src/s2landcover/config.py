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
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from s2landcover.errors import InputError

SCHEMA_RESOURCE = "config.schema.yaml"


class ConfigError(InputError):
    """A user mistake in the configuration: the message says which key and what is allowed."""


def load_schema() -> dict[str, Any]:
    """Return the configuration JSON schema shipped with the package."""
    text = resources.files("s2landcover").joinpath("schemas", SCHEMA_RESOURCE).read_text()
    return yaml.safe_load(text)


def _key_path(path: Any) -> str:
    parts = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "(top level)"


def _extend_with_defaults(validator_class: type) -> type:
    """A validator that fills in ``default`` values while it validates (jsonschema's recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # type: ignore[no-untyped-def]
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


def _check_semantics(config: dict[str, Any]) -> None:
    """Checks that a JSON schema cannot express."""
    fractions = config["split"]["fractions"]
    total = fractions["train"] + fractions["val"] + fractions["test"]
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(
            f"split.fractions must sum to 1, got train {fractions['train']}"
            f" + val {fractions['val']}"
            f" + test {fractions['test']} = {total:g}"
        )
    if config["split"]["method"] != "scene" and fractions["train"] <= 0:
        raise ConfigError("split.fractions.train must be above 0 (no chip would be trained on)")

    classes = config["classes"]
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
    overlap = sorted(set(config["mask"]["nodata_codes"]) & set(seen))
    if overlap:
        raise ConfigError(f"mask.nodata_codes {overlap} are also class codes in the class table")

    scene_names = [s["name"] for s in config["scenes"]]
    duplicates = sorted({n for n in scene_names if scene_names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"scenes: duplicate scene name(s) {duplicates}")
    if config["split"]["method"] == "scene":
        named = config["split"]["scenes"]
        unknown = sorted(set(named["train"] + named["val"] + named["test"]) - set(scene_names))
        if unknown:
            raise ConfigError(
                f"split.scenes names unknown scene(s) {unknown}; scenes are {scene_names}"
            )
        if not named["train"]:
            raise ConfigError("split.method is 'scene' but split.scenes.train is empty")

    stride = config["chips"]["stride"]
    if stride is not None and stride > config["tile_size"]:
        raise ConfigError(
            f"chips.stride = {stride} is larger than tile_size = {config['tile_size']}; "
            "a stride above the tile size would leave gaps between chips"
        )
    window = config["prediction"]["window"]
    if window is not None and window % 32:
        raise ConfigError(
            f"prediction.window = {window} must be a multiple of 32 (U-Net downsampling)"
        )


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
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return validate_config(data, source=str(path))


def config_from_json(text: str) -> dict[str, Any]:
    """Validate a (partial) configuration passed as JSON text, as the workflow rules do."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"--config-json is not valid JSON: {error}") from None
    return validate_config(data, source="--config-json")


def config_subset(config: Mapping[str, Any], keys: list[str]) -> str:
    """JSON text of the named top-level sections, for a rule's ``params``.

    Passing only the sections a stage reads means that changing any other section does not re-run
    that stage (Snakemake re-runs a rule when its params change).
    """
    return json.dumps({key: config[key] for key in keys}, sort_keys=True)
