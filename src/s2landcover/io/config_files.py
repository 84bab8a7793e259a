"""Configuration files: the YAML a user writes and the schema shipped inside the package.

Only the reading is here; parsing, validation and every error message about content are
:mod:`s2landcover.config`'s.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def read_config_text(path: str | Path) -> str:
    """The text (UTF-8) of a configuration file."""
    return Path(path).read_text(encoding="utf-8")


def read_packaged_schema(name: str) -> str:
    """The text of a schema shipped in the package (``s2landcover/schemas/<name>``)."""
    return resources.files("s2landcover").joinpath("schemas", name).read_text(encoding="utf-8")


__all__ = ["read_config_text", "read_packaged_schema"]
