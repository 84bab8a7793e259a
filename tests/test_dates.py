"""Several dates of one area: the stacks / composites config, stacked scenes with dated band names,
the stack's validity, composite maps with a source-date raster, and the demo's seasons."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from raster_helpers import write_geotiff
from s2landcover.classes import NOT_OBSERVED, ClassTable
from s2landcover.cli import main
from s2landcover.config import ConfigError, input_bands, model_bands, validate_config
from s2landcover.dates import (
    NO_SOURCE,
    combine_codes,
    combine_validity,
    composite_choice,
    source_path,
    write_composite,
    write_stack,
)
from s2landcover.demo import (
    BUILT_UP,
    CROPLAND,
    FOREST,
    GRASSLAND,
    WATER,
    _SceneLook,
    deciduous_leaf_cover,
    simulate_reflectance,
)
from s2landcover.errors import InputError
from s2landcover.io.prediction_writer import StreamingRasterWriter, inspect_scene_bands
from s2landcover.io.rasters import Grid, geotiff_profile, read_class_table
from s2landcover.io.sentinel2 import L2A_BANDS
from s2landcover.validity import CLEAR, CLOUD, NODATA, SHADOW, SNOW, read_validity_info

UTM = CRS.from_epsg(32631)
GRID = Grid(UTM, Affine(10, 0, 400000, 0, -10, 4600000), 40, 32)
CLASSES = validate_config({})["classes"]


def two_dates(**extra: object) -> dict:
    config = {
        "scenes": [
            {"name": "april", "date": "2024-04-15", "source": {"type": "demo"}},
            {"name": "august", "date": "2024-08-20", "source": {"type": "demo"}},
        ],
        "stacks": [{"name": "area", "scenes": ["april", "august"]}],
    }
    config.update(extra)
    return config


# --- config ---------------------------------------------------------------------------------------


def test_stack_members_default_to_role_none_and_the_model_gets_dated_bands():
    config = validate_config(two_dates())
    roles = {s["name"]: s["role"] for s in config["scenes"]}
    assert roles == {"april": "none", "august": "none"}
    assert config["stacks"][0]["role"] == "both" and config["stacks"][0]["allow_partial"] is False
    assert input_bands(config, "area")[:2] == ["2024-04-15:B02", "2024-04-15:B03"]
    assert model_bands(config) == [
        f"{d}:{b}" for d in ("2024-04-15", "2024-08-20") for b in ("B02", "B03", "B04", "B08")
    ]
    # A member with a role of its own keeps it: one model cannot take plain scenes and the stack.
    plain = two_dates()
    plain["scenes"][0]["role"] = "both"
    with pytest.raises(ConfigError, match="do not have the bands the model is trained on"):
        validate_config(plain)
    plain["stacks"][0]["role"] = "none" if False else "map"
    with pytest.raises(ConfigError, match=r"\['area'\]"):
        validate_config(plain)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["stacks"][0].update(scenes=["april", "june"]), "unknown scene"),
        (lambda c: c["scenes"][1].update(date="2024-04-15"), "its own date"),
        (lambda c: c["stacks"][0].update(name="april"), "also scene names"),
        (lambda c: c["stacks"].append(dict(c["stacks"][0])), "duplicate stack"),
        (
            lambda c: c["scenes"][1].update(
                source={"type": "geotiff", "path": "x.tif", "scale": 1e-4}
            ),
            "different areas",
        ),
        (
            lambda c: c["scenes"].append({"name": "x", "role": "none", "source": {"type": "demo"}}),
            "in no stack",
        ),
        (lambda c: c.update(bands=["2024-04-15:B04"]), "plain band names"),
        (lambda c: c["ingest"].update(include_scl=True), "include_scl"),
        (
            lambda c: c.update(composites=[{"name": "m", "scenes": ["area", "april"]}]),
            "not mapped inputs",
        ),
    ],
)
def test_bad_stack_configs_are_refused_naming_the_problem(change, message):
    config = two_dates(ingest={})
    change(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_composites_need_confidence_and_split_scenes_may_name_stacks():
    scenes = two_dates()["scenes"]
    for s in scenes:
        s["role"] = "both"
    composite = {"scenes": scenes, "composites": [{"name": "m", "scenes": ["april", "august"]}]}
    with pytest.raises(ConfigError, match=r"prediction\.confidence"):
        validate_config(composite)
    validate_config({**composite, "prediction": {"confidence": True}})
    split = {"method": "scene", "scenes": {"train": ["area"], "val": [], "test": []}}
    split["fractions"] = {"train": 1.0, "val": 0.0, "test": 0.0}
    assert validate_config(two_dates(split=split))["split"]["scenes"]["train"] == ["area"]


# --- stacked scenes -------------------------------------------------------------------------------


def write_scene(path: Path, grid: Grid, values: np.ndarray, bands=("B02", "B03"), scale=1e-4):
    count = values.shape[0]
    return write_geotiff(
        path, values, names=bands, scales=[scale] * count, offsets=[-0.1] * count,
        **geotiff_profile(grid, count, "uint16", 0),
    )  # fmt: skip


def scene_values(seed: int, count: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(1000, 5000, (count, GRID.height, GRID.width)).astype(np.uint16)


def test_stack_has_dated_band_names_each_band_its_scale_and_prediction_matches_by_name(tmp_path):
    april, august = scene_values(1), scene_values(2)
    a = write_scene(tmp_path / "april.tif", GRID, april)
    b = write_scene(tmp_path / "august.tif", GRID, august, scale=1e-3)
    out = tmp_path / "area.tif"
    summary = write_stack([a, b], ["2024-04-15", "2024-08-20"], out, names=["april", "august"])
    assert summary["warped"] == []
    with rasterio.open(out) as src:
        assert src.descriptions == (
            "2024-04-15:B02",
            "2024-04-15:B03",
            "2024-08-20:B02",
            "2024-08-20:B03",
        )
        assert src.scales == (1e-4, 1e-4, 1e-3, 1e-3)
        np.testing.assert_array_equal(src.read(), np.concatenate([april, august]))
        assert json.loads(src.tags()["STACK_DATES"]) == ["2024-04-15", "2024-08-20"]
        assert src.tags(3)["DATE"] == "2024-08-20" and src.tags(3)["BAND"] == "B02"
    # Prediction's band matching by name: the model's dated names find the right bands.
    bands = inspect_scene_bands(out, ["2024-08-20:B03", "2024-04-15:B02"])
    assert bands.indexes == (4, 1) and bands.scales == (1e-3, 1e-4)
    with pytest.raises(InputError, match="lacks band"):
        inspect_scene_bands(out, ["B02", "B03"])


def test_stack_warps_a_member_on_another_grid_and_refuses_another_area(tmp_path, caplog):
    a = write_scene(tmp_path / "april.tif", GRID, scene_values(1))
    shifted = Grid(UTM, Affine(10, 0, 400005, 0, -10, 4600000), 40, 32)
    b = write_scene(tmp_path / "august.tif", shifted, scene_values(2))
    with caplog.at_level(logging.WARNING):
        summary = write_stack([a, b], ["2024-04-15", "2024-08-20"], tmp_path / "s.tif")
    assert summary["warped"] == ["august"] and "warping it onto that grid" in caplog.text
    with rasterio.open(tmp_path / "s.tif") as src:
        assert Grid(src.crs, src.transform, src.width, src.height).same_as(GRID)
    far = Grid(UTM, Affine(10, 0, 500000, 0, -10, 4600000), 40, 32)
    c = write_scene(tmp_path / "far.tif", far, scene_values(3))
    with pytest.raises(InputError, match="must cover one area"):
        write_stack([a, c], ["2024-04-15", "2024-08-20"], tmp_path / "bad.tif")
    assert not (tmp_path / "bad.tif").exists()
    d = write_scene(tmp_path / "other.tif", GRID, scene_values(4), bands=("B04", "B08"))
    with pytest.raises(InputError, match="band names"):
        write_stack([a, d], ["2024-04-15", "2024-08-20"], tmp_path / "bad.tif")
    with pytest.raises(InputError, match="distinct"):
        write_stack([a, b], ["2024-04-15", "2024-04-15"], tmp_path / "bad.tif")


# --- validity of a stack --------------------------------------------------------------------------


def test_combined_validity_invalid_on_any_date_unless_partial():
    april = np.array([[CLEAR, CLOUD, CLEAR, NODATA, SNOW]], np.uint8)
    august = np.array([[CLEAR, CLEAR, SHADOW, CLOUD, CLEAR]], np.uint8)
    strict = combine_codes([april, august], allow_partial=False)
    np.testing.assert_array_equal(strict, [[CLEAR, CLOUD, SHADOW, NODATA, SNOW]])
    partial = combine_codes([april, august], allow_partial=True)
    np.testing.assert_array_equal(partial, [[CLEAR, CLEAR, CLEAR, NODATA, CLEAR]])


def write_validity_raster(path: Path, codes: np.ndarray) -> Path:
    tags = {"VALIDITY_SOURCE": "scl", "PIXELS_PER_CODE": "[]"}
    return write_geotiff(path, codes, tags=tags, **geotiff_profile(GRID, 1, "uint8", 0))


def test_stack_validity_raster_is_read_like_a_scenes(tmp_path):
    a = write_scene(tmp_path / "april.tif", GRID, scene_values(1))
    b = write_scene(tmp_path / "august.tif", GRID, scene_values(2))
    stack = tmp_path / "area.tif"
    write_stack([a, b], ["2024-04-15", "2024-08-20"], stack)
    first = np.full((GRID.height, GRID.width), CLEAR, np.uint8)
    first[:4] = CLOUD
    second = np.full_like(first, CLEAR)
    second[-2:] = SHADOW
    va = write_validity_raster(tmp_path / "va.tif", first)
    vb = write_validity_raster(tmp_path / "vb.tif", second)
    out = tmp_path / "v.tif"
    argv = ["stack-validity", "--validity", str(va), str(vb), "--scene", str(stack)]
    assert main([*argv, "--out", str(out)]) == 0
    info = read_validity_info(out)
    assert info["pixels"]["cloud"] == 4 * GRID.width
    assert info["pixels"]["cloud shadow"] == 2 * GRID.width
    combine_validity([va, vb], stack, out, allow_partial=True)
    assert read_validity_info(out)["pixels"]["clear"] == GRID.width * GRID.height


# --- composite ------------------------------------------------------------------------------------


def write_map(path: Path, classes: np.ndarray, confidence: np.ndarray | None = None) -> Path:
    table = ClassTable.from_config(CLASSES)
    with StreamingRasterWriter(path, GRID, classes=table) as writer:
        writer.write_rows(0, classes)
    if confidence is not None:
        with StreamingRasterWriter(path.with_name(f"{path.stem}_confidence.tif"), GRID) as writer:
            writer.write_rows(0, confidence)
    return path


def test_composite_choice_prefers_observed_then_confident_then_first():
    april = np.array([[NOT_OBSERVED, 1, 2, 0, NOT_OBSERVED, 3]], np.uint8)
    august = np.array([[4, 5, 6, 0, 0, 3]], np.uint8)
    conf_a = np.array([[0, 200, 100, 0, 0, 90]], np.uint8)
    conf_b = np.array([[250, 100, 220, 0, 0, 90]], np.uint8)
    classes, source = composite_choice([april, august], [conf_a, conf_b])
    np.testing.assert_array_equal(classes, [[4, 1, 6, 0, NOT_OBSERVED, 3]])
    np.testing.assert_array_equal(source, [[1, 0, 1, NO_SOURCE, NO_SOURCE, 0]])


def test_composite_takes_a_pixel_clouded_on_one_date_from_the_other(tmp_path):
    april = np.full((GRID.height, GRID.width), 3, np.uint8)
    april[5:9, 10:20] = NOT_OBSERVED  # clouded in April
    august = np.full_like(april, 1)
    confidence = np.full_like(april, 100)
    a = write_map(tmp_path / "april.tif", april, confidence)
    b = write_map(tmp_path / "august.tif", august, confidence)
    out = tmp_path / "composite.tif"
    argv = ["composite", "--predictions", str(a), str(b), "--dates", "2024-04-15", "2024-08-20"]
    argv += ["--confidence", str(tmp_path / "april_confidence.tif")]
    argv += [str(tmp_path / "august_confidence.tif"), "--out", str(out)]
    assert main(argv) == 0
    with rasterio.open(out) as src, rasterio.open(source_path(out)) as source:
        classes, sources = src.read(1), source.read(1)
        assert src.colormap(1)[1][:3] == (0x1B, 0x6E, 0x2A)
        assert read_class_table(out).names == ClassTable.from_config(CLASSES).names
        assert json.loads(source.tags()["SOURCE_DATES"]) == ["2024-04-15", "2024-08-20"]
        assert source.tags()["SOURCE_1"].startswith("2024-08-20")
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert (classes[5:9, 10:20] == 1).all() and (sources[5:9, 10:20] == 1).all()
    clear = np.ones_like(classes, bool)
    clear[5:9, 10:20] = False
    assert (classes[clear] == 3).all() and (sources[clear] == 0).all()


def test_composite_refuses_maps_on_different_grids(tmp_path):
    a = write_map(tmp_path / "a.tif", np.ones((GRID.height, GRID.width), np.uint8))
    other = Grid(UTM, Affine(10, 0, 400010, 0, -10, 4600000), GRID.width, GRID.height)
    with StreamingRasterWriter(
        tmp_path / "b.tif", other, classes=ClassTable.from_config(CLASSES)
    ) as writer:
        writer.write_rows(0, np.ones((GRID.height, GRID.width), np.uint8))
    with pytest.raises(InputError, match="not on the grid"):
        write_composite([a, tmp_path / "b.tif"], ["x", "y"], tmp_path / "c.tif")
    assert not (tmp_path / "c.tif").exists()


# --- the demo's seasons ---------------------------------------------------------------------------


def pure_reflectance(code: int, doy: int, forest_type: float = 3.0) -> np.ndarray:
    """Reflectance (12 bands x 900 pixels, each its own field) of pure pixels of one class."""
    shape = (30, 30)
    fractions = {code: np.ones(shape, np.float32)}
    fields = np.arange(shape[0] * shape[1]).reshape(shape)
    look = _SceneLook(doy=doy, noise_seed=1, seed=7)
    refl = simulate_reflectance(
        fractions,
        fields,
        np.full(shape, forest_type, np.float32),
        np.zeros(shape, np.float32),
        np.zeros(shape, bool),
        look,
        np.random.default_rng(0),
    )
    return refl.reshape(12, -1)


def ndvi(refl: np.ndarray) -> np.ndarray:
    red, nir = refl[L2A_BANDS.index("B04")], refl[L2A_BANDS.index("B08")]
    return (nir - red) / (nir + red)


def test_demo_spectra_are_seasonal_where_land_cover_is():
    april, august = 106, 232
    # Crops: each field changes (cereals green in spring and harvested in summer, maize the other
    # way round), so the same field looks different; grass: green in spring, dry in summer.
    crop_change = np.abs(
        ndvi(pure_reflectance(CROPLAND, april)) - ndvi(pure_reflectance(CROPLAND, august))
    )
    assert crop_change.mean() > 0.3
    grass = (
        ndvi(pure_reflectance(GRASSLAND, april)).mean()
        - ndvi(pure_reflectance(GRASSLAND, august)).mean()
    )
    assert grass > 0.15
    # Deciduous forest: leafless in mid April, in leaf in August.
    assert deciduous_leaf_cover(april) < 0.3 < 0.95 < deciduous_leaf_cover(august)
    forest = (
        ndvi(pure_reflectance(FOREST, august)).mean() - ndvi(pure_reflectance(FOREST, april)).mean()
    )
    assert forest > 0.2
    # Water and built-up: the same spectra (up to noise).
    for code in (WATER, BUILT_UP):
        np.testing.assert_allclose(
            pure_reflectance(code, april).mean(axis=1),
            pure_reflectance(code, august).mean(axis=1),
            atol=0.01,
        )
