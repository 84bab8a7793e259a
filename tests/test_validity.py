"""Valid-observation rasters (clear / cloud / shadow / cirrus / snow / no data) and their use in
chips, prediction and evaluation; real SCL and real L1C pixels where ../shared/data/real exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from raster_helpers import write_geotiff
from s2landcover.chips import filter_decisions, tile_scene
from s2landcover.classes import NOT_OBSERVED, NOT_OBSERVED_NAME, ClassTable
from s2landcover.config import validate_config
from s2landcover.demo import SPECTRA
from s2landcover.errors import InputError
from s2landcover.evaluate import confusion_matrix
from s2landcover.io.chipstore import read_chip_index
from s2landcover.io.rasters import Grid, geotiff_profile
from s2landcover.io.sentinel2 import ALL_BANDS
from s2landcover.predict import confidence_path, predict_scene_with_model
from s2landcover.training.losses import CombinedLoss
from s2landcover.validity import (
    CIRRUS,
    CLEAR,
    CLOUD,
    NODATA,
    SHADOW,
    SNOW,
    choose_source,
    invalid_pixels,
    read_validity_info,
    scl_to_validity,
    write_validity,
)

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
T29UNU = REAL / "s2_l2a_t29unu_20221005"
T33UUU = REAL / "s2_l1c_t33uuu_20170216"
BARBELLINO = REAL / "s2_barbellino_sen2r_tiny"
CONFIG = validate_config({})
CRS_UTM = CRS.from_epsg(32631)


def write_raster(
    path: Path,
    data: np.ndarray,
    grid: Grid,
    nodata: float | None = 0,
    descriptions: list[str] | None = None,
    scales: list[float] | None = None,
    offsets: list[float] | None = None,
) -> Path:
    """A GeoTIFF with the pipeline's own profile on ``grid``; band names, scales, offsets."""
    count = data.shape[0] if data.ndim == 3 else 1
    profile = geotiff_profile(grid, count, str(data.dtype), nodata)
    return write_geotiff(path, data, names=descriptions, scales=scales, offsets=offsets, **profile)


def validity_cfg(**overrides) -> dict:
    cfg = json.loads(json.dumps(CONFIG["validity"]))
    cfg.update(overrides)
    return cfg


def scene_stack_like(path: Path, source: Path, repeat: int = 1) -> Path:
    """A one-band uint16 scene stack on the grid of ``source`` (refined ``repeat`` times)."""
    with rasterio.open(source) as src:
        data = src.read(1)
        t = src.transform
        grid = Grid(src.crs, Affine(t.a / repeat, 0, t.c, 0, t.e / repeat, t.f), 1, 1)
    data = np.repeat(np.repeat(data, repeat, 0), repeat, 1).astype(np.uint16)
    data[data == 0] = 1
    grid = Grid(grid.crs, grid.transform, data.shape[1], data.shape[0])
    return write_raster(path, data, grid)


def read1(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


# --- codes ---------------------------------------------------------------------------------------


def test_scl_codes_map_to_validity_codes():
    scl = np.arange(12, dtype=np.uint8)
    expected = [
        NODATA,
        NODATA,
        CLEAR,
        SHADOW,
        CLEAR,
        CLEAR,
        CLEAR,
        CLEAR,
        CLOUD,
        CLOUD,
        CIRRUS,
        SNOW,
    ]
    assert scl_to_validity(scl).tolist() == expected
    assert invalid_pixels(np.arange(6)).tolist() == [True, False, True, True, True, False]


def test_auto_falls_back_to_none_and_explicit_sources_must_exist(tmp_path, caplog):
    cfg = validity_cfg()
    assert choose_source(cfg, "a", None) == "none"
    assert "NOT screened" in caplog.text
    assert choose_source(cfg, "a", None, scl_path="x.tif") == "scl"
    assert choose_source(validity_cfg(files={"a": "m.tif"}), "a", None, "x.tif") == "file"
    for source in ("scl", "s2cloudless", "file"):
        with pytest.raises(InputError, match=source):
            choose_source(validity_cfg(source=source), "a", {"type": "geotiff", "path": "x"})


# --- real pixels ---------------------------------------------------------------------------------


@pytest.mark.skipif(not T29UNU.exists(), reason="real test data absent")
def test_real_scl_t29unu_gives_the_known_cloud_shadow_and_cirrus_shares(tmp_path):
    scl20 = T29UNU / "T29UNU_20221005T115411_SCL_20m.tif"
    # A scene on the 20 m SCL grid (the 60 m B02 refined 3x) and SCL at 20 m and at 60 m.
    scene = scene_stack_like(
        tmp_path / "scene.tif", T29UNU / "T29UNU_20221005T115411_B02_60m.tif", 3
    )
    shares = {}
    for name, scl in (("20m", scl20), ("60m", T29UNU / "T29UNU_20221005T115411_SCL_60m.tif")):
        out = tmp_path / f"validity_{name}.tif"
        summary = write_validity(scene, out, validity_cfg(source="scl"), "t29unu", None, scl)
        codes = read1(out)
        assert summary["source"] == "scl" and codes.shape == (1800, 1800)
        shares[name] = {c: float((codes == c).mean()) for c in (CLOUD, SHADOW, CIRRUS)}
        assert read_validity_info(out)["cloud_fraction"] == pytest.approx(
            sum(shares[name].values()), abs=1e-6
        )
    # README: 8 cloud medium 30.1 %, 9 cloud high 6.8 %, 3 shadow 14.6 %, 10 cirrus 8.3 % at 20 m.
    assert shares["20m"][CLOUD] == pytest.approx(0.369, abs=0.001)
    assert shares["20m"][SHADOW] == pytest.approx(0.146, abs=0.001)
    assert shares["20m"][CIRRUS] == pytest.approx(0.083, abs=0.001)
    for code in (CLOUD, SHADOW, CIRRUS):  # the 60 m SCL warped onto the 20 m grid: within 0.2 %
        assert shares["60m"][code] == pytest.approx(shares["20m"][code], abs=0.003)


@pytest.mark.skipif(not BARBELLINO.exists(), reason="real test data absent")
def test_real_barbellino_exact_scl_counts(tmp_path):
    counts = {}
    for date in ("20170703", "20190723"):
        boa = BARBELLINO / f"S2A2A_{date}_022_Barbellino_BOA_10.tif"
        scl = BARBELLINO / f"S2A2A_{date}_022_Barbellino_SCL_10.tif"
        out = tmp_path / f"{date}.tif"
        write_validity(boa, out, validity_cfg(), date, None, scl_path=scl)  # auto -> scl
        codes = read1(out)
        assert codes.shape == (42, 24)
        counts[date] = {c: int((codes == c).sum()) for c in range(6)}
    # 2017: SCL 30 px class 8 + 3 px class 9 at 20 m = 132 cloud px at 10 m; class 2 (30 px) clear.
    assert counts["20170703"] == {0: 0, 1: 1008 - 132, 2: 132, 3: 0, 4: 0, 5: 0}
    assert counts["20190723"][CLOUD] == 0 and counts["20190723"][CLEAR] == 1008
    assert read_validity_info(tmp_path / "20170703.tif")["cloud_fraction"] == pytest.approx(
        132 / 1008
    )
    # The L1C file of that date lacks B8A, so s2cloudless cannot run: auto says "not screened".
    toa = BARBELLINO / "S2A1C_20170703_022_Barbellino_TOA_10.tif"
    order = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12"]
    source = {"type": "geotiff", "path": str(toa), "band_order": order, "scale": 1e-4}
    summary = write_validity(toa, tmp_path / "l1c.tif", validity_cfg(), "l1c", source)
    assert summary["source"] == "none" and not read_validity_info(tmp_path / "l1c.tif")["screened"]
    with pytest.raises(InputError, match="B8A"):
        write_validity(toa, tmp_path / "x.tif", validity_cfg(source="s2cloudless"), "l1c", source)
    assert not (tmp_path / "x.tif").exists()


@pytest.mark.skipif(not T33UUU.exists(), reason="real test data absent")
def test_real_s2cloudless_on_l1c_bands_flags_the_thin_cloud(tmp_path):
    scene = scene_stack_like(tmp_path / "scene.tif", T33UUU / "T33UUU_20170216T102101_B02.jp2")
    source = {"type": "band_files", "path": str(T33UUU)}
    # At 60 m (4 s here; the README's 20 m / 4 / 2 takes 24 s and gives 9.11 %: docs/clouds.md).
    s2c = {"threshold": 0.6, "average_over": 2, "dilation_size": 1, "resolution": 60}
    cfg = validity_cfg(s2cloudless=s2c)
    out = tmp_path / "validity.tif"
    summary = write_validity(scene, out, cfg, "t33uuu", source)  # auto: no SCL -> s2cloudless
    assert summary["source"] == "s2cloudless"
    codes = read1(out)
    assert codes.shape == (768, 1536) and set(np.unique(codes)) == {CLEAR, CLOUD}
    # The data README: 9.1 % of pixels above 0.6 (20 m grid, average_over 4, dilation 2).
    assert 0.07 < summary["cloud_fraction"] < 0.11
    with rasterio.open(out) as src:
        assert json.loads(src.tags()["S2CLOUDLESS"])["licence"] == "CC BY-SA 4.0"


@pytest.mark.skipif(not T29UNU.exists(), reason="real test data absent")
def test_real_cloudy_l2a_chips_and_prediction_mask_sen2cor_clouds(tmp_path):
    """Real 60 m L2A bands and SCL: cloud/shadow/cirrus pixels carry label 0 in the chips and come
    out of prediction as Not observed, exactly where SCL says 3, 8, 9 or 10."""
    from test_predict import PointwiseModel, metadata

    bands = ["B02", "B03", "B04", "B8A"]
    window = Window(86, 172, 256, 256)  # 42 % cloud, shadow or cirrus
    stack = []
    for band in bands:
        with rasterio.open(T29UNU / f"T29UNU_20221005T115411_{band}_60m.tif") as src:
            stack.append(src.read(1, window=window))
            grid = Grid(src.crs, src.window_transform(window), 256, 256)
    scene = write_raster(
        tmp_path / "scene.tif", np.stack(stack), grid,
        descriptions=bands, scales=[1e-4] * 4, offsets=[-0.1] * 4,
    )  # fmt: skip
    scl = T29UNU / "T29UNU_20221005T115411_SCL_60m.tif"
    validity = tmp_path / "validity.tif"
    write_validity(scene, validity, validity_cfg(), "t29unu", None, scl_path=scl)
    with rasterio.open(scl) as src:
        scl_codes = src.read(1, window=window)
    cloudy = np.isin(scl_codes, [3, 8, 9, 10])
    assert 0.2 < cloudy.mean() < 0.9  # the crop really is cloudy
    classes = ClassTable.from_config(
        [{"index": i, "name": f"c{i}", "codes": [i]} for i in (1, 2, 3)]
    )
    mask = write_raster(tmp_path / "mask.tif", np.ones((256, 256), np.uint8), grid)
    tile_scene(scene, mask, "t29unu", tmp_path / "chips", 64, CONFIG["chips"], classes,
               validity_path=validity)  # fmt: skip
    masks = np.load(tmp_path / "chips" / "masks.npy")
    index = read_chip_index(tmp_path / "chips" / "index.parquet")
    for row in index.itertuples():
        window = (slice(row.row_off, row.row_off + 64), slice(row.col_off, row.col_off + 64))
        np.testing.assert_array_equal(masks[row.store_index] == 0, cloudy[window])
        assert row.cloud_fraction == pytest.approx(cloudy[window].mean())
        assert row.nodata_fraction == 0.0  # clouds are not no data: the no-data filter keeps them
    # The training loss ignores them: no gradient reaches the logits of a cloud pixel.
    mixed = int(np.argmin(np.abs(index["cloud_fraction"].to_numpy() - 0.5)))
    target = torch.from_numpy(masks[mixed].astype(np.int64) - 1)[None]  # as training/data.py
    logits = torch.randn(1, 3, 64, 64, requires_grad=True)
    CombinedLoss({"cross_entropy": 1, "dice": 1, "focal": 1})(logits, target).backward()
    on_cloud = torch.from_numpy(masks[mixed] == 0)
    assert 0 < on_cloud.float().mean() < 1
    assert (logits.grad[0][:, on_cloud] == 0).all() and (logits.grad[0][:, ~on_cloud] != 0).any()
    meta = dict(metadata(), bands=bands, resolution=60.0)
    out = tmp_path / "prediction.tif"
    predict_scene_with_model(
        PointwiseModel(), meta, scene, out, dict(CONFIG["prediction"], confidence=True),
        device="cpu", progress=False, validity_path=validity,
    )  # fmt: skip
    predicted = read1(out)
    np.testing.assert_array_equal(predicted == NOT_OBSERVED, cloudy)
    assert np.isin(predicted[~cloudy], [1, 2, 3]).all()
    assert (read1(confidence_path(out))[cloudy] == 0).all()


# --- synthetic cloud, chips, file source ---------------------------------------------------

L1C_BANDS = list(ALL_BANDS)  # the 13 bands of an L1C product
L2A_ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


def demo_like_scene(height: int = 192, width: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """13-band reflectance (C, H, W) of demo spectra in blocks (forest, crop, sea) and a bright,
    flat-spectrum cloud pasted in the middle (bool (H, W))."""
    rng = np.random.default_rng(5)
    names = ["broadleaf", "green_crop", "sea"]
    labels = np.kron(rng.integers(0, 3, (height // 32, width // 32)), np.ones((32, 32), int))
    spectra = np.array([SPECTRA[n] for n in names])  # (3, 12) in L2A band order
    reflectance = np.empty((13, height, width), np.float32)
    for i, band in enumerate(L1C_BANDS):
        values = spectra[:, L2A_ORDER.index(band)] if band != "B10" else np.full(3, 0.002)
        reflectance[i] = values[labels] + rng.normal(0, 0.005, (height, width))
    cloud = np.zeros((height, width), bool)
    cloud[60:130, 50:140] = True
    reflectance[:, cloud] = 0.55  # bright and flat over the spectrum
    reflectance[L1C_BANDS.index("B10"), cloud] = 0.03
    return reflectance, cloud


def test_synthetic_cloud_in_demo_spectra_is_predicted_not_observed(tmp_path):
    from test_predict import BANDS, PointwiseModel, metadata, write_scene

    reflectance, cloud = demo_like_scene()
    stored = np.clip(np.round(reflectance / 1e-4), 1, 65535).astype(np.uint16)
    grid = Grid(CRS_UTM, Affine(10, 0, 500000, 0, -10, 4600000), 192, 192)
    product = write_raster(tmp_path / "l1c.tif", stored, grid, descriptions=L1C_BANDS)
    source = {"type": "geotiff", "path": str(product), "scale": 1e-4}
    dn = np.clip(np.round((reflectance + 0.1) / 1e-4), 1, 65535).astype(np.uint16)
    scene = write_scene(tmp_path / "scene.tif", dn[[L1C_BANDS.index(b) for b in BANDS]])
    validity = tmp_path / "validity.tif"
    summary = write_validity(scene, validity, validity_cfg(), "demo", source)
    assert summary["source"] == "s2cloudless"
    codes = read1(validity)
    assert (codes[cloud] == CLOUD).mean() > 0.99  # the detector finds the pasted cloud
    assert (codes[~cloud] == CLOUD).mean() < 0.15  # and little else (dilation widens it)
    cfg = dict(CONFIG["prediction"], confidence=True)
    model = PointwiseModel()
    plain = predict_scene_with_model(
        model, metadata(), scene, tmp_path / "plain.tif", cfg, device="cpu", progress=False
    )
    assert np.isin(read1(tmp_path / "plain.tif")[cloud], [1, 2, 3]).all()  # the problem
    assert plain["not_observed_pixels"] == 0
    out = tmp_path / "screened.tif"
    predict_scene_with_model(
        model, metadata(), scene, out, cfg, device="cpu", progress=False, validity_path=validity
    )
    predicted = read1(out)
    assert (predicted[cloud] == NOT_OBSERVED).all()
    np.testing.assert_array_equal(predicted == NOT_OBSERVED, codes == CLOUD)
    assert (read1(confidence_path(out))[cloud] == 0).all()
    with rasterio.open(out) as src:
        assert src.colormap(1)[NOT_OBSERVED][:3] == (255, 0, 255)
        assert json.loads(src.tags(1)["NOT_OBSERVED"])["name"] == NOT_OBSERVED_NAME
    assert NOT_OBSERVED_NAME in Path(f"{out}.aux.xml").read_text()


def test_validity_file_is_warped_mapped_and_checked(tmp_path):
    grid = Grid(CRS_UTM, Affine(10, 0, 500000, 0, -10, 4600000), 64, 64)
    scene = write_raster(tmp_path / "scene.tif", np.full((1, 64, 64), 100, np.uint16), grid)
    coarse = Grid(CRS_UTM, Affine(20, 0, 500000, 0, -20, 4600000), 32, 32)
    values = np.zeros((32, 32), np.uint8)
    values[:8, :8] = 4  # Fmask: cloud
    values[8:16, :8] = 2  # Fmask: shadow
    values[-1, -1] = 255  # Fmask: fill
    fmask = write_raster(tmp_path / "fmask.tif", values, coarse, nodata=None)
    cfg = validity_cfg(
        source="file",
        files={"s": str(fmask)},
        file_map={"0": 1, "1": 1, "2": 3, "3": 5, "4": 2, "255": 0},
    )
    summary = write_validity(scene, tmp_path / "v.tif", cfg, "s", None)
    codes = read1(tmp_path / "v.tif")
    assert summary["source"] == "file"
    assert (codes[:16, :16] == CLOUD).all() and (codes[16:32, :16] == SHADOW).all()
    assert (codes[-2:, -2:] == NODATA).all() and (codes == CLEAR).sum() == 64 * 64 - 512 - 4
    with pytest.raises(InputError, match="255"):
        write_validity(
            scene, tmp_path / "w.tif", validity_cfg(source="file", files={"s": str(fmask)}), "s"
        )
    assert not (tmp_path / "w.tif").exists()


def test_chips_over_cloud_get_label_0_a_cloud_fraction_and_the_filter_threshold(tmp_path):
    grid = Grid(CRS_UTM, Affine(10, 0, 500000, 0, -10, 4600000), 64, 64)
    scene = write_raster(tmp_path / "scene.tif", np.full((2, 64, 64), 500, np.uint16), grid)
    mask = write_raster(tmp_path / "mask.tif", np.full((64, 64), 2, np.uint8), grid)
    codes = np.full((64, 64), CLEAR, np.uint8)
    codes[:32, :32] = CLOUD  # chip 0 all cloud
    codes[:32, 32:48] = SHADOW  # chip 1 half shadow
    codes[32:, 32:] = SNOW  # chip 3 snow: observed
    file = write_raster(tmp_path / "codes.tif", codes, grid, nodata=None)
    validity = tmp_path / "validity.tif"
    write_validity(scene, validity, validity_cfg(source="file", files={"s": str(file)}), "s")
    classes = ClassTable.from_config([{"index": 1, "name": "a", "codes": [1]},
                                      {"index": 2, "name": "b", "codes": [2]}])  # fmt: skip
    tile_scene(scene, mask, "s", tmp_path / "chips", 32, CONFIG["chips"], classes,
               validity_path=validity)  # fmt: skip
    masks = np.load(tmp_path / "chips" / "masks.npy")
    index = read_chip_index(tmp_path / "chips" / "index.parquet")
    assert (masks[0] == 0).all() and (masks[1][:, :16] == 0).all() and (masks[1][:, 16:] == 2).all()
    assert (masks[3] == 2).all()
    assert index["cloud_fraction"].tolist() == [1.0, 0.5, 0.0, 0.0]
    assert index["px_0"].tolist() == [1024, 512, 0, 0]
    assert index["nodata_fraction"].tolist() == [0.0, 0.0, 0.0, 0.0]
    keep, reasons, _ = filter_decisions(index, CONFIG["filter"], classes)
    assert keep.tolist() == [False, True, True, True]  # default: cloudy chips stay; no label: out
    assert reasons.iloc[0] == "nodata"  # a chip without any labelled pixel
    stricter = dict(CONFIG["filter"], max_cloud_fraction=0.4)
    keep, reasons, counts = filter_decisions(index, stricter, classes)
    assert keep.tolist() == [False, False, True, True] and counts["cloud"] == 2
    assert reasons.iloc[1] == "cloud"
    with pytest.raises(InputError, match="max_cloud_fraction"):
        filter_decisions(index.drop(columns="cloud_fraction"), stricter, classes)


def test_evaluation_leaves_cloud_out_and_reports_cloud_fraction(tmp_path):
    from s2landcover.evaluate import evaluate_model
    from test_evaluate import CLASSES as EVAL_CLASSES
    from test_evaluate import K, run_stage, write_synthetic_run

    run = write_synthetic_run(tmp_path)
    with rasterio.open(run["scene"]) as src:
        grid = Grid(src.crs, src.transform, src.width, src.height)
    codes = np.full((grid.height, grid.width), CLEAR, np.uint8)
    codes[50:120, 40:200] = CLOUD
    codes[120:140, 40:200] = SHADOW
    file = write_raster(tmp_path / "codes.tif", codes, grid, nodata=None)
    validity = tmp_path / "validity" / "demo.tif"
    validity.parent.mkdir()
    write_validity(run["scene"], validity, validity_cfg(files={"demo": str(file)}), "demo")
    evaluate_model(
        {"demo": run["prediction"]}, {"demo": run["mask"]}, {"demo": run["scene"]}, run["split"],
        run["model_dir"], tmp_path / "evaluation", EVAL_CLASSES,
        CONFIG["evaluation"], window_size=64, validity={"demo": validity},
    )  # fmt: skip
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    invalid = invalid_pixels(read1(validity))
    reference = np.where(invalid, 0, run["mask_array"])
    np.testing.assert_array_equal(
        metrics["areas"]["whole_scene"]["confusion_matrix"],
        confusion_matrix(reference, run["pred_array"], K),
    )
    observed = (codes != NODATA) & (read1(run["scene"]) > 0)
    fraction = float(np.isin(codes, [CLOUD, SHADOW])[observed].mean())
    scene = metrics["clouds"]["scenes"]["demo"]
    assert metrics["clouds"]["screened"] and scene["source"] == "file"
    assert scene["cloud_fraction"] == pytest.approx(fraction, abs=1e-6)
    html = (tmp_path / "evaluation" / "report.html").read_text()
    assert f"{100 * fraction:.1f}" in html and "Clouds" in html
    run_stage(tmp_path, run)  # without validity rasters the report says so
    html = (tmp_path / "evaluation" / "report.html").read_text()
    assert "Clouds were not screened" in html
    assert not json.loads((tmp_path / "evaluation" / "metrics.json").read_text())["clouds"][
        "screened"
    ]


def test_tile_rejects_a_validity_raster_on_another_grid(tmp_path):
    grid = Grid(CRS_UTM, Affine(10, 0, 500000, 0, -10, 4600000), 64, 64)
    other = Grid(CRS_UTM, Affine(10, 0, 500010, 0, -10, 4600000), 64, 64)
    scene = write_raster(tmp_path / "scene.tif", np.full((1, 64, 64), 9, np.uint16), grid)
    mask = write_raster(tmp_path / "mask.tif", np.ones((64, 64), np.uint8), grid)
    validity = write_raster(tmp_path / "v.tif", np.ones((64, 64), np.uint8), other)
    classes = ClassTable.from_config([{"index": 1, "name": "a", "codes": [1]}])
    with pytest.raises(InputError, match="validity raster"):
        tile_scene(scene, mask, "s", tmp_path / "chips", 32, CONFIG["chips"], classes,
                   validity_path=validity)  # fmt: skip
    assert not (tmp_path / "chips").exists()
