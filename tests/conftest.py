"""Shared raster fixtures: factories that write small GeoTIFFs and scene stacks into the test's
``tmp_path`` (the functions behind them, for module-scoped fixtures and helper modules, are in
raster_helpers.py); every end-to-end Snakemake test (marker ``workflow``) is marked ``slow`` too.

``make test`` (and CI, .ci/run) runs every test, slow ones included; ``pytest -m "not slow"`` is
the quick loop while editing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raster_helpers import write_geotiff, write_scene_stack


@pytest.fixture
def geotiff(tmp_path: Path) -> Callable[..., Path]:
    """``geotiff(name, data, transform=None, crs=..., **options)``: :func:`write_geotiff` of
    ``data`` to ``tmp_path / name``."""

    def write(name: str, data: np.ndarray, *args: Any, **kwargs: Any) -> Path:
        return write_geotiff(tmp_path / name, data, *args, **kwargs)

    return write


@pytest.fixture
def scene_stack(tmp_path: Path) -> Callable[..., Path]:
    """``scene_stack(name, stored, names=BANDS, **options)``: :func:`write_scene_stack` of the
    uint16 ``stored`` (C, H, W) to ``tmp_path / name`` (band names, scale/offset, nodata 0)."""

    def write(name: str, stored: np.ndarray, *args: Any, **kwargs: Any) -> Path:
        return write_scene_stack(tmp_path / name, stored, *args, **kwargs)

    return write


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every ``workflow`` test (a Snakemake run end to end) ``slow`` as well."""
    for item in items:
        if item.get_closest_marker("workflow") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
