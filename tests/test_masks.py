"""Tests of mask downsampling (s2landcover.masks, s2landcover.io.warp)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

from raster_helpers import write_geotiff
from s2landcover import masks, parallel
from s2landcover.classes import ClassTable
from s2landcover.config import validate_config
from s2landcover.errors import InputError
from s2landcover.io.rasters import Grid, read_class_table, read_grid
from s2landcover.masks import (
    CodeRemapper,
    DecimationPlan,
    aligned_decimation,
    code_counts,
    downsample_mask,
)

REAL = Path(__file__).parents[1].parent / "shared" / "data" / "real"
GDALWARP = shutil.which("gdalwarp")
NO_GDALWARP = "the gdalwarp command (Debian gdal-bin) is not installed"
UTM31 = CRS.from_epsg(32631)

CLASSES_CONFIG = [
    {"index": 1, "name": "Trees", "codes": [10, 20], "color": "#006400"},
    {"index": 2, "name": "Grass", "codes": [30], "color": "#ffff4c"},
    {"index": 3, "name": "Built", "codes": [50], "color": "#fa0000"},
    {"index": 4, "name": "Water", "codes": [80], "color": "#0064c8", "water": True},
]
CLASSES = ClassTable.from_config(CLASSES_CONFIG)
CODES = np.array([10, 20, 30, 50, 80], dtype=np.uint8)
LUT = np.zeros(256, dtype=np.uint8)
LUT[[10, 20, 30, 50, 80]] = [1, 1, 2, 3, 4]


def mask_cfg(**overrides: object) -> dict:
    """The validated default ``mask`` section with some keys changed."""
    cfg = validate_config({})["mask"]
    cfg.update(overrides)
    return cfg


def write_raster(path: Path, data: np.ndarray, crs: CRS | None, transform: Affine, **extra) -> Path:
    """A small GeoTIFF in 128 px tiles, deflate (band-first data or a 2-D array), no nodata
    unless given."""
    options = {"nodata": None, "block": 128, "compress": "deflate", **extra}
    return write_geotiff(path, data, transform, crs, **options)


def write_scene(path: Path, grid: Grid) -> Path:
    """An empty one-band scene stack on ``grid`` (only its grid is used)."""
    return write_raster(
        path, np.zeros((grid.height, grid.width), np.uint16), grid.crs, grid.transform
    )


def blocky_codes(shape: tuple[int, int], cell: int, seed: int, codes=CODES) -> np.ndarray:
    """Random codes in square cells of ``cell`` px (with an irregular row/column phase)."""
    rng = np.random.default_rng(seed)
    rows, cols = -(-(shape[0] + 3) // cell), -(-(shape[1] + 5) // cell)
    coarse = rng.choice(codes, size=(rows, cols))
    out = np.kron(coarse, np.ones((cell, cell), dtype=coarse.dtype))
    return np.ascontiguousarray(out[3 : 3 + shape[0], 5 : 5 + shape[1]])


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def gdalwarp_codes(source: Path, grid: Grid, out: Path, *extra: str) -> np.ndarray:
    """Source codes warped by the gdalwarp command onto ``grid`` (nearest, no overviews)."""
    left, bottom, right, top = grid.bounds
    command = [GDALWARP, "-q", "-overwrite", "-r", "near", "-ovr", "NONE"]
    command += ["-t_srs", grid.crs.to_wkt(), "-te", *map(repr, (left, bottom, right, top))]
    command += ["-ts", str(grid.width), str(grid.height), *extra, str(source), str(out)]
    subprocess.run(command, check=True, capture_output=True)
    return read_band(out)


def force_warper(monkeypatch: pytest.MonkeyPatch) -> None:
    """Disable the decimated fast path: every window goes through GDAL's warper."""
    monkeypatch.setattr(masks, "aligned_decimation", lambda source, target: None)


@pytest.fixture
def aligned_case(tmp_path: Path) -> tuple[Path, Path, Grid]:
    """A 1 m map (UTM 31N, nodata 0 margins) and a 10 m scene offset from it by whole metres,
    reaching past the map on the left and bottom (uncovered areas must become 0)."""
    codes = blocky_codes((1530, 1270), cell=7, seed=1)
    codes[:40, :] = 0  # the map's own no data
    source = write_raster(
        tmp_path / "map.tif", codes, UTM31, Affine(1, 0, 400_013, 0, -1, 4_600_027), nodata=0
    )
    scene = Grid(UTM31, Affine(10, 0, 399_950, 0, -10, 4_600_000), 140, 160)
    return source, write_scene(tmp_path / "scene.tif", scene), scene


# --- pure functions ----------------------------------------------------------------------------


def test_aligned_decimation_detects_integer_factor_and_offset() -> None:
    source = Grid(UTM31, Affine(1, 0, 400_013, 0, -1, 4_600_027), 100, 100)
    target = Grid(UTM31, Affine(10, 0, 399_950, 0, -10, 4_600_000), 10, 10)
    assert aligned_decimation(source, target) == DecimationPlan(10, 10, -63, 27)
    assert aligned_decimation(source, target).source_window(Window(2, 1, 3, 4)) == Window(
        -43, 37, 30, 40
    )
    shifted = Grid(UTM31, Affine(10, 0, 399_950.5, 0, -10, 4_600_000), 10, 10)
    other_crs = Grid(CRS.from_epsg(32630), target.transform, 10, 10)
    fractional = Grid(UTM31, Affine(2.5, 0, 399_950, 0, -2.5, 4_600_000), 10, 10)
    assert aligned_decimation(source, shifted) is None
    assert aligned_decimation(source, other_crs) is None
    assert aligned_decimation(source, fractional) is None


def test_code_remapper_several_codes_per_class_and_nodata() -> None:
    codes = np.array([[10, 20, 30], [50, 80, 99], [0, 255, 10]], dtype=np.uint8)
    remapper = CodeRemapper.from_classes(CLASSES, nodata_codes=[0, 255])
    assert remapper.remap(codes).tolist() == [[1, 1, 2], [3, 4, 0], [0, 0, 1]]
    assert remapper.unknown_codes(code_counts(codes)) == {99: 1}
    wide = codes.astype(np.int32)  # the np.unique route gives the same answer
    assert remapper.remap(wide, code_counts(wide)).tolist() == remapper.remap(codes).tolist()


# --- correctness ---------------------------------------------------------------------------------


def test_known_answer_coarse_map_upsampled_10x_comes_back(tmp_path: Path) -> None:
    coarse = blocky_codes((90, 110), cell=3, seed=2)
    grid = Grid(UTM31, Affine(10, 0, 500_000, 0, -10, 4_500_000), 110, 90)
    fine = np.kron(coarse, np.ones((10, 10), dtype=np.uint8))
    source = write_raster(
        tmp_path / "fine.tif", fine, UTM31, Affine(1, 0, 500_000, 0, -1, 4_500_000), nodata=0
    )
    scene = write_scene(tmp_path / "scene.tif", grid)
    summary = downsample_mask(source, scene, tmp_path / "mask.tif", CLASSES, mask_cfg(), threads=2)
    assert summary["method"] == "decimated"
    out = read_band(tmp_path / "mask.tif")
    np.testing.assert_array_equal(out, LUT[coarse])
    assert summary["pixels_per_class"]["Trees"] == int(np.isin(coarse, [10, 20]).sum())


def test_output_follows_mask_contract(aligned_case, tmp_path: Path) -> None:
    source, scene_path, scene = aligned_case
    out = tmp_path / "out" / "mask.tif"
    downsample_mask(source, scene_path, out, CLASSES, mask_cfg(block_size=64), progress=False)
    with rasterio.open(out) as dst:
        assert read_grid(out).same_as(scene, tolerance=0)
        assert dst.dtypes == ("uint8",) and dst.count == 1 and dst.nodata == 0
        assert dst.profile["tiled"] and dst.compression.name.lower() == "deflate"
        assert dst.colormap(1)[4][:3] == (0, 100, 200)
        assert json.loads(dst.tags(1)["CLASS_NAMES"]) == ["no data", *CLASSES.names]
        data = dst.read(1)
    assert read_class_table(out) == CLASSES
    assert "Water" in Path(f"{out}.aux.xml").read_text()
    assert set(np.unique(data)) <= {0, 1, 2, 3, 4}
    # the scene's left 6 columns (60 m) and the bottom rows lie outside the map: no data
    assert (data[:, :6] == 0).all() and (data[-8:, :] == 0).all()
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "mask.qml",
        "mask.tif",
        "mask.tif.aux.xml",
    ]


def test_mask_has_overviews_and_uses_threads(tmp_path: Path) -> None:
    codes = blocky_codes((1200, 1100), cell=5, seed=3)
    source = write_raster(
        tmp_path / "map.tif", codes, UTM31, Affine(1, 0, 0, 0, -1, 1200), nodata=0
    )
    scene = Grid(UTM31, Affine(2, 0, 0, 0, -2, 1200), 550, 600)
    scene_path = write_scene(tmp_path / "scene.tif", scene)
    summary = downsample_mask(
        source, scene_path, tmp_path / "m.tif", CLASSES, mask_cfg(), threads=3
    )
    with rasterio.open(tmp_path / "m.tif") as dst:
        assert dst.overviews(1) == [2]
        assert dst.block_shapes[0] == (512, 512)
        np.testing.assert_array_equal(dst.read(1), LUT[codes[1::2, 1::2]])
    assert summary["threads"] == 3 and summary["windows"] == {"decimated": 1}


def test_decimated_path_equals_general_warper(
    aligned_case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, scene_path, _ = aligned_case
    cfg = mask_cfg(block_size=64)
    fast = downsample_mask(source, scene_path, tmp_path / "fast.tif", CLASSES, cfg, threads=2)
    assert fast["windows"]["decimated"] > 0 and fast["windows"]["warp"] > 0  # edges warped
    force_warper(monkeypatch)
    slow = downsample_mask(source, scene_path, tmp_path / "slow.tif", CLASSES, cfg, threads=2)
    assert slow["method"] == "warp"
    np.testing.assert_array_equal(
        read_band(tmp_path / "fast.tif"), read_band(tmp_path / "slow.tif")
    )
    assert fast["pixels_per_class"] == slow["pixels_per_class"]


@pytest.mark.parametrize("factor", [3, 4])
def test_decimated_equals_warper_other_factors_and_no_nodata(
    factor: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    codes = blocky_codes((500, 430), cell=2, seed=factor)  # a map without a nodata value
    source = write_raster(tmp_path / "map.tif", codes, UTM31, Affine(1, 0, 1000, 0, -1, 5000))
    scene = Grid(UTM31, Affine(factor, 0, 990, 0, -factor, 5000 + factor), 160, 180)
    scene_path = write_scene(tmp_path / "scene.tif", scene)
    cfg = mask_cfg(block_size=32)
    fast = downsample_mask(source, scene_path, tmp_path / "a.tif", CLASSES, cfg, progress=False)
    force_warper(monkeypatch)
    downsample_mask(source, scene_path, tmp_path / "b.tif", CLASSES, cfg, progress=False)
    assert "decimated" in fast["windows"]
    a, b = read_band(tmp_path / "a.tif"), read_band(tmp_path / "b.tif")
    np.testing.assert_array_equal(a, b)
    assert (a[0] == 0).all() and (a[:, 0] == 0).all()  # uncovered first row and column


def test_vrt_mosaic_source_same_as_single_file(tmp_path: Path, monkeypatch) -> None:
    codes = blocky_codes((600, 800), cell=9, seed=5)
    whole = write_raster(
        tmp_path / "whole.tif", codes, UTM31, Affine(1, 0, 0, 0, -1, 600), nodata=0
    )
    sources = []
    for i, (c0, c1) in enumerate([(0, 410), (410, 800)]):
        tile = write_raster(
            tmp_path / f"tile{i}.tif",
            codes[:, c0:c1],
            UTM31,
            Affine(1, 0, c0, 0, -1, 600),
            nodata=0,
        )
        sources.append(
            f'<SimpleSource><SourceFilename relativeToVRT="1">{tile.name}</SourceFilename>'
            f"<SourceBand>1</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{c1 - c0}" ySize="600"/>'
            f'<DstRect xOff="{c0}" yOff="0" xSize="{c1 - c0}" ySize="600"/></SimpleSource>'
        )
    vrt = tmp_path / "mosaic.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="800" rasterYSize="600"><SRS>{UTM31.to_wkt()}</SRS>'
        "<GeoTransform>0, 1, 0, 600, 0, -1</GeoTransform>"
        '<VRTRasterBand dataType="Byte" band="1"><NoDataValue>0</NoDataValue>'
        f"{''.join(sources)}</VRTRasterBand></VRTDataset>"
    )
    scene = Grid(UTM31, Affine(10, 0, -20, 0, -10, 600), 82, 60)
    scene_path = write_scene(tmp_path / "scene.tif", scene)
    cfg = mask_cfg(block_size=32)
    downsample_mask(whole, scene_path, tmp_path / "a.tif", CLASSES, cfg, progress=False)
    summary = downsample_mask(vrt, scene_path, tmp_path / "b.tif", CLASSES, cfg, progress=False)
    assert "decimated" in summary["windows"]
    force_warper(monkeypatch)
    downsample_mask(vrt, scene_path, tmp_path / "c.tif", CLASSES, cfg, progress=False)
    a = read_band(tmp_path / "a.tif")
    np.testing.assert_array_equal(a, read_band(tmp_path / "b.tif"))
    np.testing.assert_array_equal(a, read_band(tmp_path / "c.tif"))
    assert (a[:, :2] == 0).all() and (a[:, 2:] > 0).all()


def test_reprojection_independent_of_window_size(tmp_path: Path) -> None:
    codes = blocky_codes((1200, 1200), cell=11, seed=7)
    source = write_raster(
        tmp_path / "map.tif", codes, UTM31, Affine(1, 0, 700_000, 0, -1, 4_600_000), nodata=0
    )
    scene = utm32_grid_over(source, 10.0)
    scene_path = write_scene(tmp_path / "scene.tif", scene)
    one = downsample_mask(
        source,
        scene_path,
        tmp_path / "one.tif",
        CLASSES,
        mask_cfg(block_size=4096, error_threshold=0),
    )
    many = downsample_mask(
        source,
        scene_path,
        tmp_path / "many.tif",
        CLASSES,
        mask_cfg(block_size=64, error_threshold=0),
    )
    assert one["method"] == many["method"] == "warp"
    a, b = read_band(tmp_path / "one.tif"), read_band(tmp_path / "many.tif")
    np.testing.assert_array_equal(a, b)
    assert 0.3 < (a > 0).mean() < 1.0  # the rotated map covers part of the scene


def utm32_grid_over(source: Path, resolution: float) -> Grid:
    """A UTM 32N grid (a rotated, reprojected target) around a UTM 31N map, a bit larger than it."""
    crs = CRS.from_epsg(32632)
    left, bottom, right, top = transform_bounds(UTM31, crs, *read_grid(source).bounds)
    left, top = np.floor(left / 10) * 10 - 50, np.ceil(top / 10) * 10 + 50
    width = int(np.ceil((right - left) / resolution)) + 5
    height = int(np.ceil((top - bottom) / resolution)) + 5
    return Grid(crs, Affine(resolution, 0, left, 0, -resolution, top), width, height)


@pytest.mark.skipif(GDALWARP is None, reason=NO_GDALWARP)
def test_equals_gdalwarp_command_aligned(aligned_case, tmp_path: Path) -> None:
    source, scene_path, scene = aligned_case
    ours = downsample_mask(source, scene_path, tmp_path / "m.tif", CLASSES, mask_cfg(block_size=64))
    assert "decimated" in ours["windows"]
    reference = gdalwarp_codes(source, scene, tmp_path / "gdal.tif")
    np.testing.assert_array_equal(read_band(tmp_path / "m.tif"), LUT[reference])


@pytest.mark.skipif(GDALWARP is None, reason=NO_GDALWARP)
def test_equals_gdalwarp_command_reprojected(tmp_path: Path) -> None:
    codes = blocky_codes((1200, 1200), cell=11, seed=8)
    source = write_raster(
        tmp_path / "map.tif", codes, UTM31, Affine(1, 0, 700_000, 0, -1, 4_600_000), nodata=0
    )
    scene = utm32_grid_over(source, 10.0)
    scene_path = write_scene(tmp_path / "scene.tif", scene)
    # exact transforms (-et 0): equal pixel for pixel, whatever the windows
    cfg = mask_cfg(block_size=64, error_threshold=0)
    downsample_mask(source, scene_path, tmp_path / "b.tif", CLASSES, cfg, threads=2)
    reference = gdalwarp_codes(source, scene, tmp_path / "g2.tif", "-et", "0")
    np.testing.assert_array_equal(read_band(tmp_path / "b.tif"), LUT[reference])
    # default 0.125 px approximation on both sides: the approximations follow different chunks,
    # so only pixels whose centre falls within 0.125 px of a class edge may differ
    downsample_mask(source, scene_path, tmp_path / "a.tif", CLASSES, mask_cfg(block_size=64))
    reference = LUT[gdalwarp_codes(source, scene, tmp_path / "g1.tif")]
    assert (read_band(tmp_path / "a.tif") == reference).mean() >= 0.999


def test_mode_takes_majority_nearest_takes_centre(tmp_path: Path) -> None:
    block = np.full((10, 10), 30, dtype=np.uint8)  # 70 % grass
    block[3:8, 2:8] = 80  # 30 % water, covering the centre pixel (5, 5)
    fine = np.tile(block, (12, 15))
    source = write_raster(tmp_path / "map.tif", fine, UTM31, Affine(1, 0, 0, 0, -1, 120), nodata=0)
    scene_path = write_scene(
        tmp_path / "scene.tif", Grid(UTM31, Affine(10, 0, 0, 0, -10, 120), 15, 12)
    )
    near = downsample_mask(source, scene_path, tmp_path / "n.tif", CLASSES, mask_cfg())
    mode = downsample_mask(
        source, scene_path, tmp_path / "m.tif", CLASSES, mask_cfg(resampling="mode")
    )
    assert (read_band(tmp_path / "n.tif") == 4).all()
    assert (read_band(tmp_path / "m.tif") == 2).all()
    assert mode["method"] == "warp" and near["method"] == "decimated"


def test_unknown_codes_stop_with_counts_and_write_nothing(aligned_case, tmp_path: Path) -> None:
    source, scene_path, _ = aligned_case
    with rasterio.open(source, "r+") as dst:
        data = dst.read(1)
        data[600:700, 600:700] = 77  # 10 x 10 scene pixels
        data[900:910, 900:920] = 201  # 1 x 2 scene pixels
        dst.write(data, 1)
    out = tmp_path / "masks" / "m.tif"
    with pytest.raises(InputError, match=r"77: 100 px, 201: 2 px") as error:
        downsample_mask(source, scene_path, out, CLASSES, mask_cfg(block_size=64), threads=2)
    assert str(source) in str(error.value) and "unknown_codes" in str(error.value)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    summary = downsample_mask(source, scene_path, out, CLASSES, mask_cfg(unknown_codes="nodata"))
    assert summary["unknown_codes"] == {"77": 100, "201": 2}
    assert (read_band(out)[(600 - 27) // 10 + 1 : (700 - 27) // 10, 70:75] == 0).all()


def test_nodata_codes_become_zero(aligned_case, tmp_path: Path) -> None:
    source, scene_path, _ = aligned_case
    plain = downsample_mask(source, scene_path, tmp_path / "a.tif", CLASSES, mask_cfg())
    dropped = downsample_mask(
        source, scene_path, tmp_path / "b.tif", CLASSES, mask_cfg(nodata_codes=[80])
    )
    a, b = read_band(tmp_path / "a.tif"), read_band(tmp_path / "b.tif")
    assert (a == 4).sum() > 0 and (b == 4).sum() == 0
    assert ((a == 4) == ((b == 0) & (a != 0))).all()
    assert (
        dropped["pixels_per_class"]["no data"]
        == plain["pixels_per_class"]["no data"] + (a == 4).sum()
    )


# --- bad input -----------------------------------------------------------------------------------


def _bad_source(kind: str, tmp_path: Path) -> Path:
    transform = Affine(1, 0, 400_000, 0, -1, 4_600_000)
    codes = np.full((200, 200), 10, dtype=np.uint8)
    if kind == "missing":
        return tmp_path / "nowhere.tif"
    if kind == "no CRS":
        return write_raster(tmp_path / "s.tif", codes, None, transform)
    if kind == "bands":
        return write_raster(tmp_path / "s.tif", np.stack([codes, codes]), UTM31, transform)
    if kind == "data type":
        return write_raster(tmp_path / "s.tif", codes.astype("float32"), UTM31, transform)
    if kind == "overlap":
        far = Affine(1, 0, 600_000, 0, -1, 4_600_000)
        return write_raster(tmp_path / "s.tif", codes, UTM31, far)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "does not exist"),
        ("no CRS", "has no CRS"),
        ("bands", "has 2 bands"),
        ("data type", "float32"),
        ("overlap", "does not overlap"),
    ],
)
def test_bad_input_raises_and_writes_nothing(kind: str, message: str, tmp_path: Path) -> None:
    source = _bad_source(kind, tmp_path)
    scene_path = write_scene(
        tmp_path / "scene.tif", Grid(UTM31, Affine(10, 0, 400_000, 0, -10, 4_600_000), 20, 20)
    )
    out = tmp_path / "out" / "mask.tif"
    with pytest.raises(InputError, match=message) as error:
        downsample_mask(source, scene_path, out, CLASSES, mask_cfg())
    assert str(source) in str(error.value)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_missing_scene_raises(tmp_path: Path) -> None:
    source = _bad_source("overlap", tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        downsample_mask(source, tmp_path / "no_scene.tif", tmp_path / "m.tif", CLASSES, mask_cfg())


# --- real data -----------------------------------------------------------------------------------

WORLDCOVER = REAL / "worldcover_N00E006" / "ESA_WorldCover_10m_2021_v200_N00E006_Map.tif"
WORLDCOVER_CODES = [10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100]
SAO_TOME_GRID = Grid(
    CRS.from_epsg(32632), Affine(10, 0, 215_000, 0, -10, 45_000), 2000, 2000
)  # 20 x 20 km of the north of Sao Tome island and sea, UTM 32N


def worldcover_classes() -> ClassTable:
    return ClassTable.from_config(
        [{"index": i + 1, "name": f"wc{c}", "codes": [c]} for i, c in enumerate(WORLDCOVER_CODES)]
    )


@pytest.mark.skipif(not WORLDCOVER.exists(), reason=f"real data not found: {WORLDCOVER}")
def test_real_worldcover_onto_utm_grid_maps_codes(tmp_path: Path) -> None:
    scene_path = write_scene(tmp_path / "scene.tif", SAO_TOME_GRID)
    classes = worldcover_classes()
    out = tmp_path / "mask.tif"
    summary = downsample_mask(WORLDCOVER, scene_path, out, classes, mask_cfg(), threads=2)
    assert summary["method"] == "warp" and summary["unknown_codes"] == {}
    mask = read_band(out)
    assert 0.2 < (mask == 1).mean() < 0.9  # tree cover (10) dominates the island
    assert (mask == 8).mean() > 0.05  # the sea near the coast is permanent water (80)
    # independent check: the map's code at the centre of random scene pixels (exact transform)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 2000, 400), rng.integers(0, 2000, 400)
    xs, ys = SAO_TOME_GRID.transform @ (cols + 0.5, rows + 0.5)
    lon, lat = rasterio.warp.transform(SAO_TOME_GRID.crs, "EPSG:4326", xs, ys)
    with rasterio.open(WORLDCOVER) as src:
        samples = np.array([v[0] for v in src.sample(zip(lon, lat, strict=True))])
    expected = np.zeros(256, np.uint8)
    expected[WORLDCOVER_CODES] = np.arange(1, 12)
    agreement = (expected[samples] == mask[rows, cols]).mean()
    # misses only where the 0.125 px transform approximation moves a centre across a class edge
    assert agreement >= 0.98, agreement
    if GDALWARP:
        # approximations follow each tool's chunks: compare exact-transform runs
        exact = downsample_mask(
            WORLDCOVER, scene_path, tmp_path / "e.tif", classes, mask_cfg(error_threshold=0)
        )
        reference = gdalwarp_codes(WORLDCOVER, SAO_TOME_GRID, tmp_path / "g.tif", "-et", "0")
        assert exact["unknown_codes"] == {}
        np.testing.assert_array_equal(read_band(tmp_path / "e.tif"), expected[reference])


@pytest.mark.skipif(not WORLDCOVER.exists(), reason=f"real data not found: {WORLDCOVER}")
def test_real_worldcover_memory_stays_bounded(tmp_path: Path) -> None:
    scene_path = write_scene(tmp_path / "scene.tif", SAO_TOME_GRID)
    script = textwrap.dedent(
        f"""
        from s2landcover.classes import ClassTable
        from s2landcover.config import validate_config
        from s2landcover.masks import downsample_mask
        classes = ClassTable.from_config(
            [{{"index": i + 1, "name": str(c), "codes": [c]}}
             for i, c in enumerate({WORLDCOVER_CODES})]
        )
        downsample_mask({str(WORLDCOVER)!r}, {str(scene_path)!r}, {str(tmp_path / "m.tif")!r},
                        classes, validate_config({{}})["mask"], threads=2, progress=False)
        """
    )
    peak_mb = peak_rss_mb([sys.executable, "-c", script])
    print(f"worldcover 36000^2 -> 2000^2 at 10 m: peak RSS {peak_mb:.0f} MB")
    assert (tmp_path / "m.tif").exists()
    # the source holds 1.3 GB of pixels (36000^2); the run stays within its stated bound
    assert peak_mb < 600, peak_mb


def peak_rss_mb(command: list[str]) -> float:
    """Peak resident memory (VmHWM, MB) of a child process, polled from /proc while it runs
    (rusage would count the pages of this process that the child inherits at fork)."""
    process = subprocess.Popen(command)
    peak_kb = 0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.01)
    assert process.returncode == 0
    return peak_kb / 1024


ABER_CLASSES = ClassTable.from_config(
    [
        {"index": 1, "name": "Forest", "codes": [1]},
        {"index": 2, "name": "Grass", "codes": [2]},
        {"index": 3, "name": "Urban", "codes": [3]},
        {"index": 4, "name": "Water", "codes": [4], "water": True},
    ]
)
ABER_MAP = REAL / "aberystwyth" / "aber_cls_4class.tif"


@pytest.mark.skipif(not ABER_MAP.exists(), reason=f"real data not found: {ABER_MAP}")
def test_real_aberystwyth_upsampled_reprojected_comes_back(tmp_path: Path) -> None:
    with rasterio.open(ABER_MAP) as src:
        window = Window(300, 300, 300, 300)  # a 3 x 3 km subset, 300 x 300 px at 10 m
        original = src.read(1, window=window)
        grid = Grid(src.crs, src.window_transform(window), 300, 300)
    # the "fine map": 1 m pixels in UTM 30N (another CRS, rotated against the British grid)
    crs = CRS.from_epsg(32630)
    left, bottom, right, top = transform_bounds(grid.crs, crs, *grid.bounds)
    left, top = np.floor(left) - 20, np.ceil(top) + 20
    width, height = int(right - left) + 40, int(top - bottom) + 40
    fine = np.zeros((height, width), np.uint8)
    fine_transform = Affine(1, 0, left, 0, -1, top)
    reproject(
        original, fine, src_transform=grid.transform, src_crs=grid.crs, src_nodata=0,
        dst_transform=fine_transform, dst_crs=crs, dst_nodata=0, resampling=Resampling.nearest,
    )  # fmt: skip
    source = write_raster(tmp_path / "fine.tif", fine, crs, fine_transform, nodata=0)
    scene_path = write_scene(tmp_path / "scene.tif", grid)
    summary = downsample_mask(
        source, scene_path, tmp_path / "m.tif", ABER_CLASSES, mask_cfg(), threads=2
    )
    back = read_band(tmp_path / "m.tif")
    valid = original > 0
    agreement = (back[valid] == original[valid]).mean()
    print(f"aberystwyth 10 m -> 1 m UTM 30N -> 10 m: {agreement:.5f} of pixels identical")
    # measured 1.00000: each 10 m centre lands on a 1 m pixel whose centre lies within 0.71 m of
    # it, so 4 m inside the original 10 m pixel: nearest there and back can only agree
    assert agreement >= 0.999, agreement
    assert summary["method"] == "warp" and summary["unknown_codes"] == {}


# --- on a dask.distributed cluster -------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_cluster():
    """A local dask cluster of two worker processes: windows and the filler cross a pickle."""
    distributed = pytest.importorskip("distributed", reason="distributed is not installed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster


def test_dask_cluster_gives_the_same_mask_as_threads(
    aligned_case, tmp_path: Path, dask_cluster
) -> None:
    source, scene_path, _ = aligned_case
    cfg = mask_cfg(block_size=64)
    local = downsample_mask(source, scene_path, tmp_path / "local.tif", CLASSES, cfg, threads=2)
    remote = downsample_mask(
        source,
        scene_path,
        tmp_path / "remote.tif",
        CLASSES,
        cfg,
        scheduler_address=dask_cluster.scheduler_address,
    )
    assert remote["dask_scheduler"] == dask_cluster.scheduler_address
    assert remote["windows"] == local["windows"]  # decimated inside, warped at the edges
    assert remote["windows"]["decimated"] > 0 and remote["windows"]["warp"] > 0
    assert remote["pixels_per_class"] == local["pixels_per_class"]
    np.testing.assert_array_equal(
        read_band(tmp_path / "remote.tif"), read_band(tmp_path / "local.tif")
    )
    assert read_class_table(tmp_path / "remote.tif").names == CLASSES.names


def test_cli_takes_the_scheduler_from_the_config_or_the_flag(
    aligned_case, tmp_path: Path, dask_cluster
) -> None:
    """`s2lc downsample-mask` as the rule runs it: the address from compute.dask_scheduler, and
    `--dask-scheduler local` (what the rule passes by default) overriding it with threads."""
    source, scene_path, _ = aligned_case
    config = {
        "classes": [dict(c) for c in CLASSES_CONFIG],
        "mask": {"block_size": 64},
        "compute": {"dask_scheduler": dask_cluster.scheduler_address},
    }
    s2lc = str(Path(sys.executable).parent / "s2lc")
    base = [s2lc, "downsample-mask", "--config-json", json.dumps(config), "--source", str(source),
            "--scene", str(scene_path), "--threads", "2"]  # fmt: skip
    for name, extra in (("cluster", []), ("local", ["--dask-scheduler", "local"])):
        out = tmp_path / f"{name}.tif"
        result = subprocess.run(
            [*base, "--out", str(out), *extra], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads(result.stderr.split("downsample-mask summary: ", 1)[1].splitlines()[0])
        expected = dask_cluster.scheduler_address if name == "cluster" else None
        assert summary["dask_scheduler"] == expected
    np.testing.assert_array_equal(
        read_band(tmp_path / "cluster.tif"), read_band(tmp_path / "local.tif")
    )


def test_dask_workers_reopen_a_map_replaced_under_the_same_name(
    tmp_path: Path, dask_cluster
) -> None:
    """Workers keep the map open between tasks, but not past a new file under the same path."""
    scene = Grid(UTM31, Affine(2, 0, 0, 0, -2, 400), 150, 200)
    scene_path = write_scene(tmp_path / "scene.tif", scene)
    transform = Affine(1, 0, 0, 0, -1, 400)
    for seed in (1, 2):
        codes = blocky_codes((400, 300), cell=5, seed=seed)
        tmp = write_raster(tmp_path / "map.new.tif", codes, UTM31, transform, nodata=0)
        tmp.replace(tmp_path / "map.tif")  # a new file (new inode, new mtime) under one name
        out = tmp_path / f"mask{seed}.tif"
        downsample_mask(
            tmp_path / "map.tif",
            scene_path,
            out,
            CLASSES,
            mask_cfg(block_size=64),
            scheduler_address=dask_cluster.scheduler_address,
        )
        np.testing.assert_array_equal(read_band(out), LUT[codes[1::2, 1::2]])


def test_unreachable_dask_scheduler_stops_before_writing(
    aligned_case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("distributed", reason="distributed is not installed")
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT_S", 0.5)  # not the production 30 s
    source, scene_path, _ = aligned_case
    out = tmp_path / "mask.tif"
    with pytest.raises(InputError, match="no dask scheduler reached"):
        downsample_mask(
            source, scene_path, out, CLASSES, mask_cfg(), scheduler_address="tcp://127.0.0.1:9"
        )
    assert list(tmp_path.glob("mask*")) == []


def test_mask_onto_a_scene_grid_that_is_not_10m(aligned_case, tmp_path: Path) -> None:
    """A scene kept on its own 9.995 m x 9.997 m grid (issue 16): the mask is on exactly that grid,
    through GDAL's warper (no integer factor), and equals the nearest-neighbour warp of the map."""
    source, _, _ = aligned_case
    scene = Grid(UTM31, Affine(9.995, 0, 400_003.7, 0, -9.997, 4_599_998.7), 120, 140)
    scene_path = write_scene(tmp_path / "odd_scene.tif", scene)
    out = tmp_path / "odd_mask.tif"
    summary = downsample_mask(
        source, scene_path, out, CLASSES, mask_cfg(block_size=64, error_threshold=0),
        progress=False,
    )  # fmt: skip
    assert summary["method"] == "warp"
    assert read_grid(out).same_as(scene, tolerance=0)
    codes = np.zeros((scene.height, scene.width), dtype=np.uint8)
    with rasterio.open(source) as src:
        reproject(
            rasterio.band(src, 1), codes, dst_transform=scene.transform, dst_crs=scene.crs,
            dst_nodata=0, resampling=Resampling.nearest,
        )  # fmt: skip
    np.testing.assert_array_equal(read_band(out), LUT[codes])
