"""The synthetic demo: deterministic 1 m land cover and SAFE products with realistic structure."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio

from s2landcover.config import validate_config
from s2landcover.demo import (
    BARE,
    BUILT_UP,
    CROPLAND,
    DEMO_CODES,
    FOREST,
    GRASSLAND,
    WATER,
    DemoLandscape,
    class_fractions,
    make_demo_landcover,
    make_demo_scene,
)
from s2landcover.errors import InputError

SIZE = 240  # 10 m pixels: 2.4 km, a 2,400 x 2,400 px 1 m map


@pytest.fixture(scope="module")
def demo_cfg() -> dict:
    cfg = validate_config({})["demo"]
    cfg.update(size=SIZE, seed=7)
    return cfg


@pytest.fixture(scope="module")
def landcover(tmp_path_factory: pytest.TempPathFactory, demo_cfg: dict) -> Path:
    path = tmp_path_factory.mktemp("demo") / "landcover.tif"
    make_demo_landcover(path, demo_cfg)
    return path


@pytest.fixture(scope="module")
def june_scene(tmp_path_factory: pytest.TempPathFactory, landcover: Path, demo_cfg: dict) -> Path:
    path = tmp_path_factory.mktemp("scene") / "S2B_MSIL2A_20240615.SAFE"
    make_demo_scene(path, landcover, demo_cfg, "demo", "2024-06-15", ["B02", "B03", "B04", "B08"])
    return path


def _band(safe: Path, band: str) -> Path:
    (path,) = safe.glob(f"GRANULE/*/IMG_DATA/R*m/*_{band}_*m.jp2")
    return path


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_landcover_grid_metadata_and_codes(landcover: Path, demo_cfg: dict) -> None:
    with rasterio.open(landcover) as src:
        assert (src.width, src.height) == (SIZE * 10, SIZE * 10)
        assert src.res == (1.0, 1.0)
        assert src.crs.to_epsg() == 32631
        assert (src.transform.c, src.transform.f) == tuple(demo_cfg["origin"])
        assert src.dtypes[0] == "uint8" and src.nodata == 0
        assert src.profile["tiled"] and src.compression is not None
        assert src.overviews(1)
        codes = src.read(1)
    values, counts = np.unique(codes, return_counts=True)
    assert set(values) == set(DEMO_CODES)  # every class present, no 0 inside the scene
    shares = dict(zip(values.tolist(), (counts / codes.size).tolist(), strict=True))
    assert shares[CROPLAND] > 0.1 and shares[GRASSLAND] > 0.05 and shares[FOREST] > 0.03
    assert shares[BUILT_UP] > 0.002 and shares[BARE] > 0.001


def test_landcover_has_sea_along_west_edge(landcover: Path) -> None:
    codes = _read(landcover)
    # The sea covers at least a quarter of the width on every row: whole water-only chips exist.
    assert (codes[:, : codes.shape[1] // 4] == WATER).all()
    assert (codes[:, -10:] != WATER).mean() > 0.9  # and the east edge is land (mostly)


def test_landcover_is_deterministic_for_a_seed(
    tmp_path: Path, landcover: Path, demo_cfg: dict
) -> None:
    again = tmp_path / "again.tif"
    make_demo_landcover(again, demo_cfg)
    assert np.array_equal(_read(again), _read(landcover))
    other = tmp_path / "other.tif"
    make_demo_landcover(other, {**demo_cfg, "seed": 8})
    assert (_read(other) != _read(landcover)).mean() > 0.1


def test_landscape_windows_agree_with_the_whole() -> None:
    landscape = DemoLandscape(2000.0, seed=3)
    east = np.arange(0, 2000) + 0.5
    south = np.arange(0, 2000) + 0.5
    whole = landscape.codes(east[::4], south[::4])
    part = landscape.codes(east[::4][100:300], south[::4][50:250])
    assert np.array_equal(whole[50:250, 100:300], part)


def test_class_fractions_of_blocks() -> None:
    codes = np.full((20, 20), FOREST, dtype=np.uint8)
    codes[:10, :5] = WATER
    fractions = class_fractions(codes, 10)
    assert fractions[WATER][0, 0] == pytest.approx(0.5)
    assert fractions[FOREST][0, 0] == pytest.approx(0.5)
    assert fractions[FOREST][1, 1] == pytest.approx(1.0)


def test_scene_is_a_safe_product_with_real_names(june_scene: Path) -> None:
    granules = list((june_scene / "GRANULE").iterdir())
    assert len(granules) == 1
    img = granules[0] / "IMG_DATA"
    names = {p.relative_to(img).as_posix() for p in img.rglob("*.jp2")}
    assert "R10m/T31TCG_20240615T105031_B02_10m.jp2" in names
    assert "R20m/T31TCG_20240615T105031_B8A_20m.jp2" in names
    assert "R20m/T31TCG_20240615T105031_SCL_20m.jp2" in names
    assert "R60m/T31TCG_20240615T105031_B09_60m.jp2" in names
    assert not any("B10" in n for n in names)
    assert len(names) == 13  # 12 L2A bands + SCL
    xml = (june_scene / "MTD_MSIL2A.xml").read_text()
    assert "<PROCESSING_BASELINE>05.10</PROCESSING_BASELINE>" in xml
    assert re.search(r"<BOA_QUANTIFICATION_VALUE[^>]*>10000</BOA_QUANTIFICATION_VALUE>", xml)
    offsets = re.findall(r'<BOA_ADD_OFFSET band_id="(\d+)">(-?\d+)</BOA_ADD_OFFSET>', xml)
    assert len(offsets) == 13 and {v for _, v in offsets} == {"-1000"}


def test_scene_bands_are_stored_at_native_resolution(june_scene: Path) -> None:
    with (
        rasterio.open(_band(june_scene, "B02")) as b02,
        rasterio.open(_band(june_scene, "B11")) as b11,
    ):
        assert b02.driver == "JP2OpenJPEG" and b11.driver == "JP2OpenJPEG"
        assert b02.res == (10.0, 10.0) and (b02.width, b02.height) == (SIZE, SIZE)
        assert b11.res == (20.0, 20.0) and (b11.width, b11.height) == (SIZE // 2, SIZE // 2)
        assert b11.bounds == b02.bounds
        assert b02.crs == b11.crs
    with rasterio.open(_band(june_scene, "B01")) as b01:
        assert b01.res == (60.0, 60.0) and b01.width == SIZE // 6


def test_scene_has_a_no_data_corner(june_scene: Path) -> None:
    for band in ("B02", "B08", "B05", "B01", "SCL"):
        data = _read(_band(june_scene, band))
        assert data[0, -1] == 0, band  # upper-right corner is outside the swath
        assert data[-1, 0] != 0, band  # lower-left is inside
    b02 = _read(_band(june_scene, "B02"))
    assert 0.03 < (b02 == 0).mean() < 0.15
    assert (b02[b02 > 0] >= 1).all()


def test_scene_spectra_are_plausible(june_scene: Path, landcover: Path) -> None:
    with rasterio.open(landcover) as src:
        codes = src.read(1)
    fractions = class_fractions(codes, 10)

    def reflectance(band: str) -> np.ndarray:
        return _read(_band(june_scene, band)).astype(float) / 10000 - 0.1

    red, nir, blue = reflectance("B04"), reflectance("B08"), reflectance("B02")
    valid = _read(_band(june_scene, "B02")) > 0
    water = (fractions[WATER] == 1) & valid
    forest = (fractions[FOREST] == 1) & valid
    built = (fractions[BUILT_UP] == 1) & valid
    assert water.sum() > 100 and forest.sum() > 100
    assert np.median(nir[water]) < 0.05  # water is dark in the NIR
    assert np.median(nir[forest]) > 3 * np.median(red[forest])  # vegetation: red edge
    ndvi = (nir - red) / (nir + red)
    if built.sum() > 20:
        assert np.median(ndvi[built]) < np.median(ndvi[forest])
    assert np.median(blue[valid]) > 0


def test_scene_dates_change_the_crops_not_the_land(
    tmp_path: Path, june_scene: Path, landcover: Path, demo_cfg: dict
) -> None:
    august = tmp_path / "august.SAFE"
    make_demo_scene(
        august, landcover, demo_cfg, "demo_aug", "2024-08-20", ["B02", "B03", "B04", "B08"]
    )
    with rasterio.open(landcover) as src:
        fractions = class_fractions(src.read(1), 10)

    def nir(safe: Path) -> np.ndarray:
        return _read(_band(safe, "B08")).astype(float) / 10000 - 0.1

    valid = _read(_band(june_scene, "B02")) > 0
    crops = (fractions[CROPLAND] == 1) & valid
    water = (fractions[WATER] == 1) & valid
    change = np.abs(nir(june_scene) - nir(august))
    # Many fields change with the season (maize greens up, cereals are harvested), water does not.
    assert (change[crops] > 0.05).mean() > 0.2
    assert np.median(change[water]) < 0.01
    # Same inputs, same product.
    again = tmp_path / "again.SAFE"
    make_demo_scene(again, landcover, demo_cfg, "demo", "2024-06-15", ["B02"])
    assert np.array_equal(_read(_band(again, "B03")), _read(_band(june_scene, "B03")))


def test_scene_rejects_bands_that_l2a_lacks(
    tmp_path: Path, landcover: Path, demo_cfg: dict
) -> None:
    out = tmp_path / "x.SAFE"
    with pytest.raises(InputError, match=r"B10"):
        make_demo_scene(out, landcover, demo_cfg, "demo", "2024-06-15", ["B02", "B10"])
    assert not out.exists()
