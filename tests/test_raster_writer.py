"""The one raster writer (io.windowed.RasterWriter) and the one overview policy (io.rasters)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from s2landcover.classes import ClassTable
from s2landcover.io.prediction_writer import StreamingRasterWriter
from s2landcover.io.rasters import Grid, overview_block_size, overview_factors
from s2landcover.io.stack import StackWriter
from s2landcover.io.warp import write_mask
from s2landcover.io.windowed import RasterWriter

CLASSES = ClassTable.from_dict(
    {"names": ["A", "B"], "colors": ["#112233", "#445566"], "codes": [[1], [2]], "water": []}
)


def grid(width: int, height: int) -> Grid:
    return Grid(CRS.from_epsg(32631), Affine(10, 0, 4e5, 0, -10, 5e6), width, height)


@pytest.mark.parametrize(
    "size,factors",
    [
        ((10980, 10980), [2, 4, 8, 16, 32]),  # a Sentinel-2 tile: to 1/32 (343 px)
        ((600, 400), [2, 4]),  # blocks of 256 px
        ((600, 600), [2]),
        ((300, 200), [2, 4]),  # blocks of 128 px: a small prediction still has overviews
        ((37, 37), []),  # fits one 64 px block
    ],
)
def test_overview_policy(size: tuple[int, int], factors: list[int]) -> None:
    assert overview_factors(*size) == factors
    smallest = max(size) / (factors[-1] if factors else 1)
    assert smallest <= overview_block_size(*size)


def test_scene_mask_and_prediction_of_one_grid_get_the_same_overviews(tmp_path: Path) -> None:
    g = grid(600, 400)
    labels = np.random.default_rng(0).integers(0, 3, (400, 600)).astype(np.uint8)
    with StackWriter(tmp_path / "scene.tif", g, 2, "uint16", descriptions=["B02", "B03"]) as w:
        w.write(Window(0, 0, 600, 400), np.ones((2, 400, 600), np.uint16))
    with write_mask(tmp_path / "mask.tif", g, CLASSES) as dst:
        dst.write(labels, 1)
    with StreamingRasterWriter(tmp_path / "pred.tif", g, classes=CLASSES) as writer:
        writer.write_rows(0, labels)
    for name in ("scene", "mask", "pred"):
        path = tmp_path / f"{name}.tif"
        assert cog_validate(str(path))[0], name
        with rasterio.open(path) as src:
            assert src.overviews(1) == overview_factors(600, 400) == [2, 4], name
            assert src.profile["tiled"] and src.compression is not None


def test_raster_writer_plain_geotiff_metadata_and_nothing_left_on_error(tmp_path: Path) -> None:
    g = grid(100, 60)
    out = tmp_path / "x.tif"
    with RasterWriter(
        out, g, 2, "float32", -1.0, descriptions=["a", "b"], scales=[2, 3], tags={"K": 1}
    ) as writer:
        writer.write(Window(0, 0, 100, 60), np.full((2, 60, 100), 0.5, np.float32))
    with rasterio.open(out) as src:
        assert src.descriptions == ("a", "b") and src.scales == (2.0, 3.0)
        assert src.tags()["K"] == "1" and src.nodata == -1 and src.overviews(1) == [2]
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3" and (src.read() == 0.5).all()
    for cog in (False, True):
        with pytest.raises(RuntimeError, match="boom"):
            with RasterWriter(tmp_path / "y.tif", g, 1, "uint8", 0, cog=cog) as writer:
                writer.write(Window(0, 0, 10, 10), np.ones((10, 10), np.uint8))
                raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tif"]
