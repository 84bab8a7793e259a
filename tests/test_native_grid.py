"""A source on a grid that is not exactly 10 m stays on it from ingest to the map (issue 16).

Ingest keeps a 9.995 m x 9.997 m GeoTIFF's own grid (tests/test_ingest.py checks the values); here
the whole chain is checked: the prediction of that stack is on exactly the source file's grid (CRS,
transform, width, height), with a model whose recorded training resolution is the x pixel size
(what training records from such a stack), while a scene at twice the resolution is still refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from raster_helpers import write_geotiff
from s2landcover.classes import ClassTable
from s2landcover.config import validate_config
from s2landcover.errors import InputError
from s2landcover.ingest import ingest_scene
from s2landcover.io.checkpoints import save_model_checkpoint
from s2landcover.models import build_segmentation_model
from s2landcover.predict import predict_scene

BANDS = ["B02", "B03", "B04", "B08"]
ODD = Affine(9.995, 0, 300003.7, 0, -9.997, 4999998.7)  # not 10 m, not on a 10 m raster
INGEST = {"resampling": "bilinear", "block_size": 64, "include_scl": False}
CLASSES = ClassTable.from_config(
    [
        {"index": 1, "name": "Forest", "codes": [10], "color": "#1b6e2a"},
        {"index": 2, "name": "Water", "codes": [80], "color": "#2171b5", "water": True},
    ]
)


def write_source(path: Path, transform: Affine, size: tuple[int, int] = (70, 90)) -> Path:
    rng = np.random.default_rng(5)
    data = rng.integers(1, 10000, (len(BANDS), *size), dtype=np.uint16)
    return write_geotiff(path, data, transform, block=None, names=BANDS)


def checkpoint(path: Path, resolution: float) -> Path:
    torch.manual_seed(0)
    model = build_segmentation_model("Unet", "resnet18", len(BANDS), CLASSES.num_classes)
    metadata = {
        "task": "segmentation", "architecture": "Unet", "encoder": "resnet18", "bands": BANDS,
        "scales": [1e-4] * 4, "offsets": [0.0] * 4, "mean": [0.5] * 4, "std": [0.3] * 4,
        "classes": CLASSES.to_dict(), "tile_size": 64, "resolution": resolution,
    }  # fmt: skip
    save_model_checkpoint(path, model.state_dict(), metadata)
    return path


def test_a_9995_m_source_is_mapped_on_its_own_grid(tmp_path: Path) -> None:
    source = write_source(tmp_path / "odd.tif", ODD)
    stack = tmp_path / "stack.tif"
    ingest_scene({"type": "geotiff", "path": str(source), "scale": 1e-4}, BANDS, stack, INGEST)
    model = checkpoint(tmp_path / "model.pt", resolution=float(np.hypot(ODD.a, ODD.d)))
    out = tmp_path / "map.tif"
    predict_scene(model, stack, out, validate_config({})["prediction"], progress=False)
    with rasterio.open(source) as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.width, dst.height) == (
            src.crs, src.transform, src.width, src.height,
        )  # fmt: skip
        assert dst.read(1).min() >= 1


def test_a_scene_at_another_resolution_is_still_refused(tmp_path: Path) -> None:
    stack = write_source(tmp_path / "coarse.tif", Affine(20, 0, 300000, 0, -20, 5000000))
    with rasterio.open(stack, "r+") as dst:
        dst.scales = (1e-4,) * len(BANDS)
    model = checkpoint(tmp_path / "model.pt", resolution=10.0)
    with pytest.raises(InputError, match="20 x 20 m pixels but the model was trained on 10 m"):
        predict_scene(
            model, stack, tmp_path / "map.tif", validate_config({})["prediction"], progress=False
        )
    assert not (tmp_path / "map.tif").exists()
