"""The notebook API: lazy scenes and class rasters, class areas per scene and split and docs."""

from __future__ import annotations

import re
from pathlib import Path

import dask.array
import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
import yaml
from affine import Affine

from raster_helpers import grid_transform, write_geotiff, write_scene_stack
from s2landcover import notebook
from s2landcover.classes import NOT_OBSERVED, ClassTable
from s2landcover.errors import InputError
from s2landcover.notebook import (
    class_areas,
    class_colormap,
    open_classes,
    open_results,
    open_scene,
)

# rioxarray 0.19 multiplies Affine objects with `*` (affine 3 prefers `@`): not this code.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Use `@` matmul instead of `\\*` mul operator:PendingDeprecationWarning:rioxarray"
)
ROOT = Path(__file__).resolve().parents[1]
BANDS = ["B02", "B03", "B04", "B08"]
ORIGIN = (500000.0, 4600000.0)
CLASSES = ClassTable(
    names=("Forest", "Water", "Cropland"),
    colors=("#1b6e2a", "#2171b5", "#f2d16b"),
    codes=((10,), (80,), (40,)),
    water=(False, True, False),
)


def write_scene(
    path: Path,
    stored: np.ndarray,
    names: list[str] = BANDS,
    scales: list[float] | None = None,
    offsets: list[float] | None = None,
    tags: dict[str, str] | None = None,
) -> Path:
    """A scene stack per the contract, scale/offset per band (default 1e-4 / -0.1)."""
    return write_scene_stack(path, stored, names, scales=scales, offsets=offsets, tags=tags)


def write_classes(
    path: Path,
    codes: np.ndarray,
    classes: ClassTable | None = CLASSES,
    crs: str = "EPSG:32631",
    resolution: float = 20.0,
) -> Path:
    """A class raster as the pipeline writes it (uint8, nodata 0, the class metadata)."""
    return write_geotiff(path, codes, grid_transform(resolution), crs, classes=classes)


def chip(scene: str, row: int, col: int, size: int, split: str, resolution: float = 20.0) -> dict:
    return {
        "chip_id": f"{scene}_r{row}_c{col}",
        "scene": scene,
        "row_off": row,
        "col_off": col,
        "height": size,
        "width": size,
        "minx": ORIGIN[0] + col * resolution,
        "maxy": ORIGIN[1] - row * resolution,
        "split": split,
    }


def random_codes(shape: tuple[int, int], seed: int = 0, not_observed: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = [0, 1, 2, 3, NOT_OBSERVED] if not_observed else [0, 1, 2, 3]
    return rng.choice(values, size=shape).astype(np.uint8)


# --- open_scene ---------------------------------------------------------------------------------


def test_open_scene_is_lazy_float32_reflectance_per_band_scale_with_nan_for_nodata(tmp_path):
    rng = np.random.default_rng(1)
    stored = rng.integers(1, 10000, size=(4, 40, 48)).astype(np.uint16)
    stored[:, :3, :] = 0  # no data rows
    scales, offsets = [1e-4, 2e-4, 1e-4, 5e-5], [-0.1, 0.0, -0.05, 0.0]
    path = write_scene(tmp_path / "s1.tif", stored, scales=scales, offsets=offsets,
                       tags={"DATE": "2024-06-15", "PRODUCT_LEVEL": "L2A"})  # fmt: skip

    scene = open_scene(path, chunks={"band": -1, "y": 16, "x": 16})

    assert isinstance(scene.data, dask.array.Array)
    assert scene.dims == ("band", "y", "x")
    assert scene.dtype == np.float32
    assert list(scene["band"].values) == BANDS
    assert scene.chunks == ((4,), (16, 16, 8), (16, 16, 16))
    expected = stored.astype(np.float64) * np.array(scales)[:, None, None]
    expected += np.array(offsets)[:, None, None]
    expected[stored == 0] = np.nan
    values = scene.values
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-7)
    assert np.isnan(values[:, :3]).all() and not np.isnan(values[:, 3:]).any()
    np.testing.assert_allclose(
        scene.sel(band="B03").values[5, 7], stored[1, 5, 7] * 2e-4, rtol=1e-6
    )
    assert scene.rio.crs.to_epsg() == 32631
    assert scene.rio.transform() == Affine(10.0, 0, ORIGIN[0], 0, -10.0, ORIGIN[1])
    assert scene["x"].values[0] == ORIGIN[0] + 5.0  # pixel centres
    assert scene.attrs["scene"] == "s1"
    assert scene.attrs["date"] == "2024-06-15"
    assert scene.attrs["product_level"] == "L2A"


def test_open_scene_default_chunks_hold_all_bands_in_whole_blocks(tmp_path):
    path = write_scene(tmp_path / "s.tif", np.ones((4, 40, 40), dtype=np.uint16))
    scene = open_scene(path)
    assert scene.chunks == ((4,), (40,), (40,))  # smaller than CHUNK_PIXELS: one chunk
    assert notebook._default_chunks((512, 512), (10980, 10980)) == {
        "band": -1,
        "y": 1024,
        "x": 1024,
    }
    assert notebook._default_chunks((256, 256), (300, 5000))["y"] == 300


def test_open_scene_refuses_bands_without_names_and_missing_files(tmp_path):
    path = write_scene(tmp_path / "s.tif", np.ones((2, 16, 16), dtype=np.uint16), names=["B02", ""])
    with pytest.raises(InputError, match="without a description"):
        open_scene(path)
    with pytest.raises(InputError, match="does not exist"):
        open_scene(tmp_path / "absent.tif")


def test_open_scene_refuses_a_class_raster(tmp_path):
    path = write_classes(tmp_path / "m.tif", random_codes((16, 16)))
    with pytest.raises(InputError, match="uint16"):
        open_scene(path)


# --- open_classes -------------------------------------------------------------------------------


def test_open_classes_gives_codes_with_names_and_colours(tmp_path):
    codes = random_codes((32, 32))
    mask = open_classes(write_classes(tmp_path / "demo.tif", codes))

    assert isinstance(mask.data, dask.array.Array)
    assert mask.dims == ("y", "x") and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask.values, codes)
    assert mask.attrs["scene"] == "demo"
    assert mask.attrs["class_names"] == {0: "no data", 1: "Forest", 2: "Water", 3: "Cropland"}
    assert mask.attrs["class_colors"][2] == "#2171b5"
    assert NOT_OBSERVED not in mask.attrs["class_names"]  # a mask holds no clouds
    assert mask.rio.crs.to_epsg() == 32631


def test_open_classes_names_not_observed_in_a_prediction_made_with_validity(tmp_path):
    classes = ClassTable(**{**CLASSES.__dict__, "not_observed": True})
    prediction = open_classes(write_classes(tmp_path / "p.tif", random_codes((16, 16)), classes))
    assert prediction.attrs["class_names"][NOT_OBSERVED] == "Not observed"
    cmap, norm = class_colormap(prediction)
    assert cmap(norm(0))[3] == 0.0  # no data transparent
    assert cmap(norm(1))[:3] == pytest.approx((0x1B / 255, 0x6E / 255, 0x2A / 255))
    assert cmap(norm(NOT_OBSERVED))[:3] == pytest.approx((1.0, 0.0, 1.0))


def test_open_classes_refuses_a_raster_without_class_metadata(tmp_path):
    path = write_classes(tmp_path / "plain.tif", random_codes((16, 16)), classes=None)
    with pytest.raises(InputError, match="no class names"):
        open_classes(path)


# --- class_areas --------------------------------------------------------------------------------


def reference_counts(codes: np.ndarray, chips: list[dict], split: str) -> np.ndarray:
    covered = np.zeros(codes.shape, dtype=bool)
    for c in chips:
        if c["split"] == split:
            rows = slice(c["row_off"], c["row_off"] + c["height"])
            covered[rows, c["col_off"] : c["col_off"] + c["width"]] = True
    return np.bincount(codes[covered], minlength=256)


def test_class_areas_per_scene_in_hectares_from_the_pixel_size(tmp_path):
    codes = np.zeros((10, 10), dtype=np.uint8)
    codes[:5] = 1  # 50 px Forest
    codes[5:, :3] = 3  # 15 px Cropland; no Water; 35 px no data
    table = class_areas(write_classes(tmp_path / "a.tif", codes, resolution=20.0))

    rows = table.set_index("class")
    assert list(table["split"].unique()) == ["all"]
    assert list(rows.index) == ["Forest", "Water", "Cropland"]  # every class, in code order
    assert rows.loc["Forest", "pixels"] == 50
    assert rows.loc["Forest", "area_ha"] == pytest.approx(50 * 400 / 10_000)  # 20 m pixels
    assert rows.loc["Water", "area_ha"] == 0
    assert rows.loc["Cropland", "fraction"] == pytest.approx(15 / 65)
    with_nodata = class_areas(write_classes(tmp_path / "b.tif", codes), include_nodata=True)
    assert with_nodata.set_index("class").loc["no data", "pixels"] == 35


def test_class_areas_per_split_match_numpy_across_chunk_edges_and_overlaps(tmp_path):
    codes = random_codes((50, 60), seed=4, not_observed=True)
    chips = [
        chip("s", 0, 0, 20, "train"),
        chip("s", 0, 10, 20, "train"),  # overlaps the previous train chip: counted once
        chip("s", 25, 5, 20, "val"),
        chip("s", 30, 15, 20, "test"),  # overlaps the val chip: in both
        chip("s", 10, 35, 20, "excluded"),
        chip("other", 0, 0, 20, "train"),  # another scene: ignored here
    ]
    classes = ClassTable(**{**CLASSES.__dict__, "not_observed": True})
    raster = open_classes(
        write_classes(tmp_path / "s.tif", codes, classes), chunks={"band": 1, "y": 16, "x": 16}
    )
    assert len(raster.chunks[0]) > 1 and len(raster.chunks[1]) > 1

    table = class_areas({"s": raster}, pd.DataFrame(chips))

    assert set(table["split"]) == {"all", "train", "val", "test", "excluded"}
    for split in ("train", "val", "test", "excluded"):
        expected = reference_counts(codes, chips, split)
        part = table[table["split"] == split].set_index("value")
        for value in (1, 2, 3, NOT_OBSERVED):
            assert part.loc[value, "pixels"] == expected[value], (split, value)
            assert part.loc[value, "area_ha"] == pytest.approx(expected[value] * 0.04)
    everything = table[table["split"] == "all"].set_index("value")["pixels"]
    full = np.bincount(codes.ravel(), minlength=256)
    assert everything.to_dict() == {v: full[v] for v in (1, 2, 3, NOT_OBSERVED)}
    assert table.set_index(["split", "value"]).loc[("train", NOT_OBSERVED), "class"] == (
        "Not observed"
    )


def test_class_areas_reads_chunk_by_chunk(tmp_path, monkeypatch):
    codes = random_codes((64, 64), seed=2)
    seen: list[tuple[int, ...]] = []
    original = notebook._block_counts

    def spy(block, windows, groups, block_info=None):
        seen.append(block.shape)
        return original(block, windows, groups, block_info=block_info)

    monkeypatch.setattr(notebook, "_block_counts", spy)
    raster = open_classes(write_classes(tmp_path / "s.tif", codes), chunks={"y": 16, "x": 32})
    assert not seen  # opening reads nothing
    class_areas({"s": raster}, pd.DataFrame([chip("s", 0, 0, 32, "train")]))
    real = [s for s in seen if s != (1, 1)]  # dask probes map_blocks with a tiny array once
    assert len(real) == 8 and all(s == (16, 32) for s in real)


def test_class_areas_refuses_a_geographic_crs(tmp_path):
    path = write_classes(tmp_path / "g.tif", random_codes((8, 8)), crs="EPSG:4326", resolution=1e-4)
    with pytest.raises(InputError, match="geographic CRS EPSG:4326"):
        class_areas(path)


def test_class_areas_refuses_a_split_table_of_another_grid(tmp_path):
    raster = write_classes(tmp_path / "s.tif", random_codes((32, 32)))
    with pytest.raises(InputError, match="lies outside"):
        class_areas({"s": raster}, pd.DataFrame([chip("s", 20, 0, 20, "train")]))
    shifted = chip("s", 0, 0, 16, "train")
    shifted["minx"] += 1000.0  # chips cut from another grid
    with pytest.raises(InputError, match="another grid"):
        class_areas({"s": raster}, pd.DataFrame([shifted]))
    with pytest.raises(InputError, match="lacks columns"):
        class_areas({"s": raster}, pd.DataFrame([{"scene": "s", "split": "train"}]))


# --- open_results -------------------------------------------------------------------------------


def test_open_results_finds_the_paths_of_a_run(tmp_path):
    (tmp_path / "scenes").mkdir()
    write_scene(tmp_path / "scenes/b.tif", np.ones((4, 16, 16), dtype=np.uint16))
    write_scene(tmp_path / "scenes/a.tif", np.ones((4, 16, 16), dtype=np.uint16))
    (tmp_path / "scenes/a_scl.tif").write_bytes(b"")
    run = open_results(tmp_path, 256, "unet")
    assert run.scenes == ["a", "b"]
    assert run.mask_path("a") == tmp_path / "masks/a.tif"
    assert run.prediction_path("a") == tmp_path / "predictions/size256/unet/a.tif"
    assert run.split_path == tmp_path / "splits/size256/split.parquet"
    assert list(run.scene("a")["band"].values) == BANDS
    with pytest.raises(InputError, match="no scenes/ folder"):
        open_results(tmp_path / "scenes", 256, "unet")
    with pytest.raises(InputError, match="expected 'prediction' or 'mask'"):
        run.class_areas("scene")


# --- real data (../shared/data/real; skipped when absent) -----------------------------------------

REAL = ROOT.parent / "shared" / "data" / "real"
WORLDCOVER = REAL / "worldcover_N00E006" / "ESA_WorldCover_10m_2021_v200_N00E006_Map.tif"


def test_real_aberystwyth_ingested_stack_opens_as_reflectance(tmp_path):
    """A real 10-band scene through `ingest` (stored x 1000), opened as named reflectance bands."""
    from s2landcover.ingest import ingest_scene

    source = REAL / "aberystwyth" / "aber_s2_10band_10m.tif"
    if not source.is_file():
        pytest.skip(f"real test data not found at {source}")
    bands = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    out = tmp_path / "aber.tif"
    ingest = {"resampling": "bilinear", "block_size": 256, "include_scl": False}
    ingest_scene({"type": "geotiff", "path": str(source), "scale": 0.001}, bands, out, ingest)

    scene = open_scene(out)
    assert list(scene["band"].values) == bands and scene.attrs["date"] == "2021-05-27"
    assert scene.rio.crs.to_epsg() == 27700
    with rasterio.open(source) as src:
        nir = src.read(7).astype(np.float64) / 1000
        assert scene.rio.transform() == src.transform
    got = scene.sel(band="B08").values
    valid = ~np.isnan(got)
    assert valid.mean() > 0.99
    np.testing.assert_allclose(got[valid], nir[valid], rtol=1e-6, atol=1e-6)
    assert np.nanmedian(got[:, :5]) < 0.1  # the west edge is sea


def worldcover_codes(path: Path) -> xr.DataArray:
    """The real WorldCover tile as a lazy class DataArray (ESA codes, named by code)."""
    import rioxarray

    codes = rioxarray.open_rasterio(path, chunks={"y": 1024, "x": 1024}).squeeze("band", drop=True)
    codes.attrs = {"path": str(path), "class_names": {10: "Tree cover", 80: "Water"}}
    return codes


def test_real_worldcover_geographic_crs_is_refused(tmp_path):
    if not WORLDCOVER.is_file():
        pytest.skip(f"real test data not found at {WORLDCOVER}")
    with pytest.raises(InputError, match=r"geographic CRS EPSG:4326.*degrees"):
        class_areas({"wc": worldcover_codes(WORLDCOVER)})


def test_real_worldcover_window_areas_match_a_rasterio_count(tmp_path):
    """A 4096 px window (Sao Tome: forest, sea, towns) of the real tile on a UTM grid, by chunks."""
    if not WORLDCOVER.is_file():
        pytest.skip(f"real test data not found at {WORLDCOVER}")
    codes = worldcover_codes(WORLDCOVER)[30500:34596, 6000:10096]
    codes = codes.rio.write_crs("EPSG:32632").rio.write_transform(
        Affine(10.0, 0, 300000.0, 0, -10.0, 300000.0)
    )
    table = class_areas({"wc": codes}).set_index("value")
    with rasterio.open(WORLDCOVER) as src:
        window = rasterio.windows.Window(6000, 30500, 4096, 4096)
        expected = np.bincount(src.read(1, window=window).ravel(), minlength=256)
    assert expected[80] > 0 and expected[10] > 0  # sea and forest in this window
    for value in np.flatnonzero(expected[1:]) + 1:
        assert table.loc[value, "pixels"] == expected[value]
        assert table.loc[value, "area_ha"] == pytest.approx(expected[value] * 0.01)
    assert table.loc[80, "class"] == "Water"


# --- the docs example on a real run ---------------------------------------------------------------

# The tiny configuration of tests/test_workflow.py (copied: that file belongs to the workflow).
TINY_CONFIG = {
    "scenes": [{"name": "demo", "date": "2024-06-15", "source": {"type": "demo"}}],
    "demo": {"size": 256, "mask_factor": 10, "seed": 3},
    "tile_size": 64,
    "model": {"name": "tiny", "architecture": "Unet", "encoder": "resnet18"},
    "training": {"epochs": 1, "batch_size": 4, "num_workers": 0},
    "prediction": {"batch_size": 4},
    "evaluation": {"sample_chips": 2, "overview_size": 128},
}


def docs_example() -> str:
    text = (ROOT / "docs/notebooks.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "docs/notebooks.md should hold one python example"
    return blocks[0]


@pytest.mark.slow
@pytest.mark.workflow
def test_docs_example_runs_on_a_real_workflow_run(tmp_path, monkeypatch):
    """The docs' python block, executed on the products of the tiny demo workflow (~30 s)."""
    from workflow_helpers import snakemake

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    targets = ["results/predictions/size64/tiny/demo.tif", "results/splits/size64/split.parquet"]
    result = snakemake(tmp_path, "--cores", "2", *targets)
    assert result.returncode == 0, result.stderr[-5000:]

    code = docs_example()
    assert 'RESULTS, TILE, MODEL = "results", 64, "tiny"' in code
    monkeypatch.chdir(tmp_path)  # the example runs from the workflow folder
    monkeypatch.setenv("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    namespace: dict = {}
    exec(compile(code, str(ROOT / "docs/notebooks.md"), "exec"), namespace)

    scene, prediction, areas = namespace["scene"], namespace["prediction"], namespace["areas"]
    assert isinstance(scene, xr.DataArray) and list(scene["band"].values) == [
        "B02",
        "B03",
        "B04",
        "B08",
    ]
    assert 0 < namespace["agreement"] <= 1
    # The whole scene's rows add up to the scene's area minus its no-data pixels (10 m pixels).
    whole = areas[areas["split"] == "all"]
    nodata = int((prediction == 0).sum())
    assert whole["area_ha"].sum() == pytest.approx((256 * 256 - nodata) * 0.01)
    # Per split: the pixels under each split's chips, as counted straight from the split table.
    chips = pd.read_parquet(tmp_path / "results/splits/size64/split.parquet")
    values = prediction.values
    for split, part in areas[areas["split"] != "all"].groupby("split"):
        expected = reference_counts(values, chips.to_dict("records"), split)
        assert part.set_index("value")["pixels"].to_dict() == {
            v: expected[v] for v in part["value"]
        }
    assert set(areas["split"]) >= {"all", "train", "val"}
