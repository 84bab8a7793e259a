"""JSON, text and byte files: one atomic writer each, one argument order, one NaN policy.

Every writer takes what to write first and where second (``write_json(data, path)``, like
``json.dump``, ``torch.save`` and :func:`s2landcover.io.chipstore.write_table`), writes under the
output's temporary name and renames it when complete (:func:`s2landcover.io.atomic.atomic_path`),
and returns the path written. A path given first is a ``TypeError`` (an old call with the
arguments reversed), never a file named after the data.

JSON: indented by 2, UTF-8, one trailing newline, keys as strings, in the mapping's order. NumPy
scalars and arrays become numbers and lists, paths strings. NaN and infinities are not JSON;
``nan="null"`` (the default) writes them as ``null`` (a metric that is undefined, such as the IoU
of a class absent from both rasters), ``nan="error"`` refuses them with a ``ValueError`` naming the
file and the key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from s2landcover.errors import InputError
from s2landcover.io.atomic import atomic_path

NAN_POLICIES = ("null", "error")


def _check_order(first: Any, name: str) -> None:
    if isinstance(first, Path):
        raise TypeError(f"{name}(data, path): got a path ({first}) as the data")


def write_string(text: str, path: str | Path) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    _check_order(text, "write_string")
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(data: bytes, path: str | Path) -> Path:
    """Write ``data`` (e.g. a PNG figure) to ``path`` atomically."""
    _check_order(data, "write_bytes")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def json_text(data: Any, nan: str = "null", where: str = "JSON") -> str:
    """``data`` as the text :func:`write_json` writes (``where`` names the output in errors)."""
    if nan not in NAN_POLICIES:
        raise ValueError(f"nan must be one of {NAN_POLICIES}, got {nan!r}")
    return json.dumps(_plain(data, nan, where, "$"), indent=2, allow_nan=False) + "\n"


def write_json(data: Any, path: str | Path, *, nan: str = "null") -> Path:
    """Write ``data`` (mappings, lists, numbers, strings, NumPy values) as JSON atomically.

    ``nan``: ``"null"`` writes NaN and infinities as ``null``; ``"error"`` raises ``ValueError``.
    Values of other types raise ``TypeError``; nothing is written then.
    """
    _check_order(data, "write_json")
    return write_string(json_text(data, nan, str(path)), path)


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from a file (:class:`InputError` when missing, unreadable or not an object)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read JSON file {path}: {error}") from None
    if not isinstance(data, dict):
        raise InputError(f"JSON file {path} must hold an object, found {type(data).__name__}")
    return data


def _plain(value: Any, nan: str, where: str, key: str) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v, nan, where, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, nan, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), nan, where, key)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        if math.isfinite(value):
            return value
        if nan == "null":
            return None
        raise ValueError(f"{where}: {key} is {value}, which JSON cannot hold")
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int):
        return value
    raise TypeError(f"{where}: {key} is a {type(value).__name__}, not JSON serialisable")


__all__ = [
    "NAN_POLICIES",
    "json_text",
    "read_json",
    "write_bytes",
    "write_json",
    "write_string",
]
