"""Tests of tiling (window plan, chip contents, georeference), the chip store and filtering."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from raster_helpers import write_geotiff, write_scene_stack
from s2landcover.chips import (
    WATER_SURVIVAL,
    chip_statistics,
    filter_chips,
    filter_decisions,
    tile_scene,
    water_only_survivors,
)
from s2landcover.classes import ClassTable
from s2landcover.config import validate_config
from s2landcover.errors import InputError
from s2landcover.io.chipstore import ChipStore
from s2landcover.windows import window_starts

REAL = Path(__file__).parents[1].parent / "shared" / "data" / "real"
CONFIG = validate_config({})
CLASSES = ClassTable.from_config(CONFIG["classes"])  # 6 classes, 6 = Water
TRANSFORM = Affine(10.0, 0.0, 400000.0, 0.0, -10.0, 4600000.0)


def write_raster(
    path: Path, data: np.ndarray, transform: Affine = TRANSFORM, crs: str = "EPSG:32631"
) -> Path:
    """A GeoTIFF, nodata 0, 16 px tiles; with several bands a scene stack (B00, B01, ...)."""
    count = data.shape[0] if data.ndim == 3 else 1
    if count == 1:
        return write_geotiff(path, data, transform, crs)
    names = [f"B{i:02d}" for i in range(count)]
    return write_scene_stack(path, data, names, transform=transform, crs=crs, compress=None)


@pytest.fixture
def scene_and_mask(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A 70 x 50 px, 3-band scene with a no-data corner and a mask with a water band on the left."""
    rng = np.random.default_rng(1)
    image = rng.integers(1, 4000, (3, 70, 50), dtype=np.uint16)
    image[:, :20, 40:] = 0  # image no data (all bands 0)
    mask = rng.integers(1, 6, (70, 50), dtype=np.uint8)
    mask[:, :16] = 6  # water on the west edge
    mask[60:, 30:] = 0  # mask no data
    scene = write_raster(tmp_path / "scene.tif", image)
    mask_path = write_raster(tmp_path / "mask.tif", mask)
    return scene, mask_path, image, mask


def test_chip_statistics_counts_valid_pixels_per_class():
    image = np.ones((2, 4, 4), np.uint16)
    image[:, 0, 0] = 0  # image no data
    image[0, 0, 1] = 0  # only one band 0: still valid
    mask = np.full((4, 4), 2, np.uint8)
    mask[3, :] = 0
    mask[2, :2] = 1
    stats = chip_statistics(image, mask, num_classes=3)
    assert stats["px_0"] == 5 and stats["px_1"] == 2 and stats["px_2"] == 9 and stats["px_3"] == 0
    assert stats["nodata_fraction"] == pytest.approx(5 / 16)
    assert stats["image_nodata_fraction"] == pytest.approx(1 / 16)
    assert stats["valid_fraction"] == pytest.approx(11 / 16)


@pytest.mark.parametrize("edge,stride", [("shift", None), ("drop", None), ("shift", 8)])
def test_tile_scene_chips_equal_windows_of_scene_and_mask(scene_and_mask, tmp_path, edge, stride):
    scene, mask_path, _, _ = scene_and_mask
    out = tmp_path / "chips" / "size16" / "demo"
    chips_cfg = {"stride": stride, "edge": edge}
    summary = tile_scene(scene, mask_path, "demo", out, 16, chips_cfg, CLASSES, threads=2)
    store = ChipStore(out)
    rows = window_starts(70, 16, stride or 16, edge=edge)
    cols = window_starts(50, 16, stride or 16, edge=edge)
    assert summary["chips"] == len(store) == len(rows) * len(cols)
    assert store.images.shape == (len(store), 3, 16, 16) and store.images.dtype == np.uint16
    assert store.masks.shape == (len(store), 16, 16) and store.masks.dtype == np.uint8
    assert list(store.index["store_index"]) == list(range(len(store)))
    covered = np.zeros((70, 50), bool)
    with rasterio.open(scene) as src, rasterio.open(mask_path) as msk:
        for i, row in store.index.iterrows():
            window = Window(row["col_off"], row["row_off"], 16, 16)
            chip_image, chip_mask = store.read(i)
            np.testing.assert_array_equal(chip_image, src.read(window=window))
            np.testing.assert_array_equal(chip_mask, msk.read(1, window=window))
            assert row["chip_id"] == f"demo_r{row['row_off']}_c{row['col_off']}"
            # georeference: scene transform offset by the window
            assert store.transform_of(i) == src.window_transform(window)
            left, bottom, right, top = rasterio.windows.bounds(window, src.transform)
            assert (row["minx"], row["miny"], row["maxx"], row["maxy"]) == (
                left,
                bottom,
                right,
                top,
            )
            covered[window.toslices()] = True
    assert covered.all() == (edge == "shift")
    if edge == "drop":
        assert not covered[:, 48:].any() and not covered[64:, :].any()
    meta = store.meta
    assert meta["bands"] == ["B00", "B01", "B02"] and meta["scales"] == [1e-4] * 3
    assert meta["offsets"] == [-0.1] * 3 and meta["nodata"] == 0
    assert meta["transform"] == list(TRANSFORM)[:6] and meta["crs"] == "EPSG:32631"
    assert (meta["width"], meta["height"], meta["tile_size"]) == (50, 70, 16)
    assert meta["stride"] == (stride or 16)
    assert (store.index["crs"] == "EPSG:32631").all()


def test_tile_scene_index_statistics_match_chip_pixels(scene_and_mask, tmp_path):
    scene, mask_path, _, _ = scene_and_mask
    out = tmp_path / "store"
    tile_scene(scene, mask_path, "demo", out, 16, CONFIG["chips"], CLASSES)
    store = ChipStore(out)
    for i, row in store.index.iterrows():
        image, mask = store.read(i)
        expected = chip_statistics(image, mask, CLASSES.num_classes)
        for key, value in expected.items():
            assert row[key] == pytest.approx(value), key
        assert sum(row[f"px_{k}"] for k in range(7)) == 16 * 16
    corner = store.index[(store.index.row_off == 0) & (store.index.col_off == 34)].iloc[0]
    assert corner["image_nodata_fraction"] > 0.5


def test_tile_scene_writes_scl_fractions(scene_and_mask, tmp_path):
    scene, mask_path, _, _ = scene_and_mask
    scl = np.full((70, 50), 4, np.uint8)
    scl[:16, :16] = 9  # cloud over the first chip
    scl_path = write_raster(tmp_path / "scl.tif", scl)
    tile_scene(scene, mask_path, "demo", tmp_path / "s", 16, CONFIG["chips"], CLASSES,
               scl_path=scl_path)  # fmt: skip
    index = ChipStore(tmp_path / "s").index
    assert index.loc[0, "scl_fraction_9"] == 1.0 and index.loc[1, "scl_fraction_4"] == 1.0
    assert np.allclose(index[[f"scl_fraction_{c}" for c in range(12)]].sum(axis=1), 1.0)


def test_chip_store_reader_is_picklable_and_reads_fast_enough(scene_and_mask, tmp_path):
    scene, mask_path, _, _ = scene_and_mask
    tile_scene(scene, mask_path, "demo", tmp_path / "s", 16, CONFIG["chips"], CLASSES)
    store = ChipStore(tmp_path / "s")
    first = store.read(3)
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.read(3)[0], first[0])
    with pytest.raises(IndexError):
        store.read(len(store))


def test_tile_scene_rejects_mask_on_another_grid_and_writes_nothing(scene_and_mask, tmp_path):
    scene, _, _, mask = scene_and_mask
    shifted = write_raster(tmp_path / "shifted.tif", mask, TRANSFORM @ Affine.translation(1, 0))
    out = tmp_path / "out"
    with pytest.raises(InputError) as error:
        tile_scene(scene, shifted, "demo", out, 16, CONFIG["chips"], CLASSES)
    message = str(error.value)
    assert (
        "shifted.tif" in message
        and "is not on the grid of scene" in message
        and "400010.00" in message
    )
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_tile_scene_rejects_tile_larger_than_scene_and_writes_nothing(scene_and_mask, tmp_path):
    scene, mask_path, _, _ = scene_and_mask
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"tile size 64 px is larger than scene .*50 x 70"):
        tile_scene(scene, mask_path, "demo", out, 64, CONFIG["chips"], CLASSES)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def make_index(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["chip_id"] = [f"s_r0_c{i}" for i in range(len(frame))]
    frame["scene"] = "s"
    for k in range(7):
        frame[f"px_{k}"] = frame.get(f"px_{k}", 0)
    frame = frame.fillna(0)
    frame["nodata_fraction"] = frame["px_0"] / 100
    return frame


def test_filter_decisions_reasons_and_counts():
    index = make_index([
        {"px_1": 100},  # kept
        {"px_0": 60, "px_1": 40},  # nodata
        {"px_6": 100},  # water only
        {"px_0": 70, "px_6": 30},  # nodata and water
        {"px_0": 100},  # nothing valid
        {"px_1": 10, "px_6": 90},  # mostly water: kept at water_fraction 1.0
    ])  # fmt: skip
    keep, reasons, counts = filter_decisions(index, CONFIG["filter"], CLASSES)
    assert list(keep) == [True, False, False, False, False, True]
    assert list(reasons) == ["", "nodata", "water", "nodata;water", "nodata", ""]
    assert counts == {"nodata": 3, "water": 2, "scl": 0, "cloud": 0}
    stricter = dict(CONFIG["filter"], water_fraction=0.9)
    assert filter_decisions(index, stricter, CLASSES)[1].iloc[5] == "water"
    no_water_filter = dict(CONFIG["filter"], drop_water_only=False)
    assert filter_decisions(index, no_water_filter, CLASSES)[2]["water"] == 0


def test_filter_scl_needs_scl_columns():
    index = make_index([{"px_1": 100}, {"px_1": 100}])
    scl_on = dict(
        CONFIG["filter"], scl_filter={"enabled": True, "classes": [8, 9], "max_fraction": 0.5}
    )
    with pytest.raises(InputError, match="include_scl"):
        filter_decisions(index, scl_on, CLASSES)
    for code in range(12):
        index[f"scl_fraction_{code}"] = 0.0
    index.loc[0, "scl_fraction_8"] = 0.4
    index.loc[0, "scl_fraction_9"] = 0.3
    index.loc[1, "scl_fraction_4"] = 1.0
    _, reasons, counts = filter_decisions(index, scl_on, CLASSES)
    assert list(reasons) == ["scl", ""] and counts["scl"] == 1


def test_filter_chips_writes_selected_and_summary(scene_and_mask, tmp_path):
    scene, mask_path, _, _ = scene_and_mask
    tile_scene(scene, mask_path, "demo", tmp_path / "demo", 16, CONFIG["chips"], CLASSES)
    out = tmp_path / "selected.parquet"
    no_survival = dict(CONFIG["filter"], water_only_keep_fraction=0.0)
    result = filter_chips([tmp_path / "demo" / "index.parquet"], out, no_survival, CLASSES)
    selected = pd.read_parquet(out)
    summary = json.loads((tmp_path / "filter_summary.json").read_text())
    assert len(selected) == 20 and result["kept"] == int(selected["keep"].sum()) == summary["kept"]
    water_chips = selected[selected["col_off"] == 0]  # west band of water
    assert (water_chips["drop_reason"].str.contains("water")).all()
    assert summary["dropped_by_reason"]["water"] == len(water_chips)
    assert (selected.loc[selected["keep"], "drop_reason"] == "").all()
    assert (selected["keep_reason"] == "").all() and summary["water_only_kept"] == 0
    # the default keeps the water-only chips (negative survival 1.0), marked with their reason
    filter_chips([tmp_path / "demo" / "index.parquet"], out, CONFIG["filter"], CLASSES)
    default = pd.read_parquet(out).set_index("chip_id")
    survivors = default.loc[water_chips.loc[water_chips["drop_reason"] == "water", "chip_id"]]
    assert len(survivors) > 0 and survivors["keep"].all()
    assert (survivors["keep_reason"] == WATER_SURVIVAL).all()
    assert (survivors["drop_reason"] == "").all()


def test_water_only_survival_keeps_the_configured_share_deterministically():
    water_only = [{"px_6": 100}] * 200
    index = make_index([*water_only, {"px_0": 70, "px_6": 30}, {"px_1": 100}])
    index["chip_id"] = [f"s_r{i}_c0" for i in range(len(index))]
    _, reasons, _ = filter_decisions(index, CONFIG["filter"], CLASSES)
    assert (reasons == "water").sum() == 200  # the nodata;water and the kept chip are not eligible
    kept = water_only_survivors(index["chip_id"], reasons, 0.3, seed=7)
    assert kept.sum() == 60 and kept[:200].sum() == 60 and not kept[200:].any()
    again = water_only_survivors(index["chip_id"].iloc[::-1], reasons.iloc[::-1], 0.3, seed=7)
    assert set(index["chip_id"][kept]) == set(index["chip_id"].iloc[::-1][again])  # row order
    other = water_only_survivors(index["chip_id"], reasons, 0.3, seed=8)
    assert other.sum() == 60 and (other != kept).any()  # another seed, another draw
    more = water_only_survivors(index["chip_id"], reasons, 0.5, seed=7)
    assert more.sum() == 100 and (more | ~kept).all()  # a larger share only adds chips
    assert water_only_survivors(index["chip_id"], reasons, 0.0, seed=7).sum() == 0
    assert water_only_survivors(index["chip_id"], reasons, 1.0, seed=7).sum() == 200


def test_filter_chips_no_chip_left_names_thresholds_and_writes_nothing(scene_and_mask, tmp_path):
    scene, mask_path, _, _ = scene_and_mask
    tile_scene(scene, mask_path, "demo", tmp_path / "demo", 16, CONFIG["chips"], CLASSES)
    out = tmp_path / "selected.parquet"
    strict = dict(
        CONFIG["filter"], max_nodata_fraction=0.0, water_fraction=0.0, water_only_keep_fraction=0.0
    )
    with pytest.raises(
        InputError, match=r"no chip left after filtering 20 chips.*removed \d+.*removed"
    ):
        filter_chips([tmp_path / "demo" / "index.parquet"], out, strict, CLASSES)
    assert not out.exists() and not (tmp_path / "filter_summary.json").exists()


def _real_classes() -> ClassTable:
    names = ["Forest", "Grass", "Urban", "Water"]
    return ClassTable.from_config(
        [
            {"index": i + 1, "name": n, "codes": [i + 1], "water": n == "Water"}
            for i, n in enumerate(names)
        ]
    )


def test_real_aberystwyth_sea_chips_are_dropped_as_water(tmp_path):
    folder = REAL / "aberystwyth"
    scene, mask = folder / "aber_s2_10band_10m.tif", folder / "aber_cls_4class.tif"
    if not (scene.exists() and mask.exists()):
        pytest.skip(f"real test data not found in {folder}")
    classes = _real_classes()
    chips_cfg = {"stride": None, "edge": "shift"}
    summary = tile_scene(scene, mask, "aber", tmp_path / "aber", 100, chips_cfg, classes, threads=2)
    store = ChipStore(tmp_path / "aber")
    assert summary["chips"] == 100 and len(store.bands) == 10
    i = len(store) // 2 + 3
    with rasterio.open(scene) as src:
        row = store.index.iloc[i]
        window = Window(row["col_off"], row["row_off"], 100, 100)
        np.testing.assert_array_equal(store.read(i)[0], src.read(window=window))
        assert store.transform_of(i) == src.window_transform(window)
    no_survival = dict(CONFIG["filter"], water_only_keep_fraction=0.0)
    result = filter_chips([tmp_path / "aber" / "index.parquet"], tmp_path / "selected.parquet",
                          no_survival, classes)  # fmt: skip
    selected = pd.read_parquet(tmp_path / "selected.parquet")
    water = selected[selected["drop_reason"].str.contains("water")]
    assert result["dropped_by_reason"]["water"] == len(water) >= 3
    # the sea is on the west edge: dropped water chips lie in the western half of the scene
    assert (water["col_off"] < store.meta["width"] / 2).all()
    assert (water["px_4"] > 0).all() and (water[["px_1", "px_2", "px_3"]].sum(axis=1) == 0).all()
    assert 0 < result["kept"] < len(selected)
