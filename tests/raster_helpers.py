"""Raster helpers shared by the tests: small GeoTIFFs and scene stacks per the contracts, and a
check of reflection padding. The fixtures built on them (writing into ``tmp_path``) are in
conftest.py; helper modules and module-scoped fixtures call these functions directly.

Defaults: UTM 31N (EPSG:32631), 10 m pixels from (500000, 4600000), nodata 0, 16 px tiles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

from s2landcover.classes import ClassTable
from s2landcover.io.rasters import write_class_metadata

CRS = "EPSG:32631"
ORIGIN = (500000.0, 4600000.0)
BANDS = ["B02", "B03", "B04", "B08"]
SCALE, OFFSET = 1e-4, -0.1  # L2A baseline >= 04.00: reflectance = stored * 1e-4 - 0.1


def grid_transform(resolution: float = 10.0, origin: tuple[float, float] = ORIGIN) -> Affine:
    """North-up transform of ``resolution`` m square pixels, upper-left corner at ``origin``."""
    return Affine(resolution, 0.0, origin[0], 0.0, -resolution, origin[1])


def write_geotiff(
    path: Path,
    data: np.ndarray,
    transform: Affine | None = None,
    crs: Any = CRS,
    *,
    nodata: float | None = 0,
    block: int | None = 16,
    compress: str | None = None,
    names: Sequence[str] | None = None,
    scales: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
    classes: ClassTable | None = None,
    tags: Mapping[str, str] | None = None,
    **profile: Any,
) -> Path:
    """Write ``data`` ((C, H, W) or (H, W)) as a GeoTIFF; returns ``path`` (parents created).

    ``block`` None: striped, else ``block`` px tiles; ``names``: band descriptions; ``scales`` /
    ``offsets``: GDAL scale/offset per band; ``classes``: the class metadata of the pipeline's
    class rasters (colour table, names); ``tags``: dataset tags; ``profile``: other creation
    options (override the above, e.g. ``driver``).
    """
    data = data if data.ndim == 3 else data[None]
    count, height, width = data.shape
    options: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": str(data.dtype),
        "crs": crs,
        "transform": transform if transform is not None else grid_transform(),
        "nodata": nodata,
    }
    if block is not None:
        options.update(tiled=True, blockxsize=block, blockysize=block)
    if compress is not None:
        options["compress"] = compress
    options.update(profile)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **options) as dst:
        dst.write(data)
        if names is not None:
            dst.descriptions = tuple(names)
        if scales is not None:
            dst.scales = tuple(scales)
        if offsets is not None:
            dst.offsets = tuple(offsets)
        if classes is not None:
            write_class_metadata(dst, classes)
        if tags:
            dst.update_tags(**tags)
    return path


def write_scene_stack(
    path: Path,
    stored: np.ndarray,
    names: Sequence[str] = BANDS,
    *,
    resolution: float = 10.0,
    origin: tuple[float, float] = ORIGIN,
    transform: Affine | None = None,
    crs: Any = CRS,
    scales: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
    block: int | None = 16,
    compress: str | None = "deflate",
    tags: Mapping[str, str] | None = None,
    **profile: Any,
) -> Path:
    """A scene stack per the contract: ``stored`` (C, H, W) uint16, nodata 0, band names as
    descriptions, scale/offset per band (default :data:`SCALE` / :data:`OFFSET` for all);
    ``profile``: other creation options (e.g. the pipeline's own ``geotiff_profile``)."""
    count = stored.shape[0]
    options = {
        "transform": transform if transform is not None else grid_transform(resolution, origin),
        "crs": crs,
        "nodata": 0,
        "block": block,
        "compress": compress,
        **profile,
    }
    return write_geotiff(
        path,
        stored,
        names=list(names),
        scales=list(scales or [SCALE] * count),
        offsets=list(offsets or [OFFSET] * count),
        tags=tags,
        **options,
    )


def write_like(
    path: Path,
    data: np.ndarray,
    template: Path,
    classes: ClassTable | None = None,
    **changes: Any,
) -> Path:
    """Write ``data`` with the profile of the raster ``template`` (grid, tiling, compression),
    updated by ``changes`` (e.g. ``count``, ``dtype``, ``nodata``); optional class metadata."""
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(template) as src:
        profile = src.profile | {"count": data.shape[0], "dtype": str(data.dtype)} | changes
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if classes is not None:
            write_class_metadata(dst, classes)
    return path


def assert_reflected(padded: np.ndarray, image: np.ndarray) -> None:
    """``padded`` (..., H', W') is ``image`` (..., H, W) padded at the bottom/right by reflection
    (about the edge pixel or about the edge, both reflections; zeros or edge copies fail)."""
    height, width = image.shape[-2:]
    pads = [(0, 0)] * (image.ndim - 2) + [
        (0, padded.shape[-2] - height),
        (0, padded.shape[-1] - width),
    ]
    assert padded.shape[-2] > height or padded.shape[-1] > width, "nothing was padded"
    errors = {
        mode: float(np.abs(padded - np.pad(image, pads, mode=mode)).max())
        for mode in ("symmetric", "reflect")
    }
    assert min(errors.values()) < 1e-4, f"padding is no reflection: max differences {errors}"
