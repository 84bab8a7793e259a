"""Whole-scene prediction: window grid, blending, streaming accumulator, output, errors, seams."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rio_cogeo.cogeo import cog_validate
from scipy.ndimage import gaussian_filter
from torch import nn

from raster_helpers import assert_reflected, write_scene_stack
from s2landcover import predict as predict_module
from s2landcover.classes import ClassTable
from s2landcover.config import validate_config
from s2landcover.errors import InputError
from s2landcover.io.checkpoints import save_model_checkpoint
from s2landcover.models import build_segmentation_model
from s2landcover.predict import (
    InputNormalization,
    WindowGrid,
    blend_rows,
    blend_weights,
    confidence_path,
    model_from_checkpoint,
    predict_scene,
    predict_scene_with_model,
    stitch_in_memory,
    window_batches,
    window_starts,
)

BANDS = ["B02", "B03", "B04", "B08"]
SCALE, OFFSET = 1e-4, -0.1
TILE = 64
CLASSES = ClassTable.from_config(
    [
        {"index": 1, "name": "Forest", "codes": [10], "color": "#1b6e2a"},
        {"index": 2, "name": "Bare soil", "codes": [60], "color": "#b3a58c"},
        {"index": 3, "name": "Water", "codes": [80], "color": "#2171b5", "water": True},
    ]
)
# Reflectance per class (rows) and band: separable classes, so a few dozen steps learn them.
CLASS_REFLECTANCE = np.array(
    [[0.03, 0.05, 0.03, 0.30], [0.15, 0.18, 0.20, 0.25], [0.05, 0.04, 0.02, 0.01]]
)
MEAN = CLASS_REFLECTANCE.mean(axis=0).tolist()
STD = (CLASS_REFLECTANCE.std(axis=0) + 0.02).tolist()


def prediction_cfg(**overrides: object) -> dict:
    cfg = validate_config({})["prediction"]
    cfg.update(overrides)
    return cfg


def synthetic_scene(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(stored uint16 (4, H, W), classes (H, W) in 1..3): smooth blobs of classes, noisy spectra."""
    rng = np.random.default_rng(seed)
    fields = np.stack([gaussian_filter(rng.normal(size=(height, width)), 6) for _ in range(3)])
    classes = fields.argmax(axis=0) + 1
    reflectance = CLASS_REFLECTANCE[classes - 1].transpose(2, 0, 1)
    reflectance = reflectance + rng.normal(0, 0.01, size=reflectance.shape)
    stored = np.clip((reflectance - OFFSET) / SCALE, 1, 65535).astype(np.uint16)
    return stored, classes.astype(np.uint8)


def write_scene(
    path: Path,
    stored: np.ndarray,
    names: list[str] = BANDS,
    resolution: float = 10.0,
    scales: list[float] | None = None,
    offsets: list[float] | None = None,
) -> Path:
    """A scene stack per the contract (64 px tiles), scale/offset per band."""
    return write_scene_stack(
        path, stored, names, resolution=resolution, scales=scales, offsets=offsets, block=64
    )


def metadata(encoder: str = "resnet18") -> dict:
    return {
        "task": "segmentation",
        "architecture": "Unet",
        "encoder": encoder,
        "bands": BANDS,
        "scales": [SCALE] * 4,
        "offsets": [OFFSET] * 4,
        "mean": MEAN,
        "std": STD,
        "classes": CLASSES.to_dict(),
        "tile_size": TILE,
        "resolution": 10.0,
    }


def normalized(stored: np.ndarray) -> np.ndarray:
    reflectance = stored.astype(np.float32) * SCALE + OFFSET
    image = (reflectance - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[
        :, None, None
    ]
    image[:, np.all(stored == 0, axis=0)] = 0
    return image.astype(np.float32)


class PointwiseModel(nn.Module):
    """A 1x1 convolution: its logits at a pixel depend on that pixel only (so blending is exact)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SpectralContextModel(nn.Module):
    """A deterministic, spatially varying stand-in for a trained network (training a U-Net takes
    minutes on a shared 2-core CPU): a nearest-class-mean classifier of the spectra (1x1 conv,
    score_k = 2 m_k . x - |m_k|^2 in normalised units) smoothed over 9 x 9 pixels with zero padding,
    so that, like a CNN, its logits depend on context and degrade at window edges."""

    def __init__(self) -> None:
        super().__init__()
        means = (CLASS_REFLECTANCE - np.array(MEAN)) / np.array(STD)
        self.score = nn.Conv2d(4, 3, 1)
        self.smooth = nn.Conv2d(3, 3, 9, padding=4, groups=3, bias=False)
        with torch.no_grad():
            self.score.weight.copy_(torch.tensor(2 * means, dtype=torch.float32)[:, :, None, None])
            self.score.bias.copy_(torch.tensor(-(means**2).sum(axis=1), dtype=torch.float32))
            self.smooth.weight.fill_(1 / 81)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.smooth(self.score(x))


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    model = build_segmentation_model("Unet", "resnet18", 4, 3)
    path = tmp_path_factory.mktemp("models") / "random.pt"
    save_model_checkpoint(path, model.state_dict(), metadata())
    return path


@pytest.fixture(scope="module")
def scene_with_nodata(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    stored, _ = synthetic_scene(seed=3, height=200, width=300)
    stored[:, :30, :50] = 0  # no-data corner
    stored[:, 150:, 280:] = 0
    path = write_scene(tmp_path_factory.mktemp("scenes") / "scene.tif", stored)
    return path, stored


# ------------------------------------------------------------------------------------- grid


def test_window_grid_pads_only_axes_smaller_than_the_window() -> None:
    grid = WindowGrid.for_scene(40, 500, window=128, stride=96)
    assert (grid.window_height, grid.window_width) == (64, 128)  # 40 -> next multiple of 32
    assert grid.row_starts == (0,)
    assert grid.col_starts[-1] == 500 - 128


@pytest.mark.parametrize("kind", ["hann", "cosine", "uniform"])
def test_blend_weights_are_positive_symmetric_and_peak_in_the_centre(kind: str) -> None:
    weights = blend_weights(64, 64, kind)
    assert weights.min() > 0
    np.testing.assert_allclose(weights, weights[::-1, ::-1], rtol=1e-6)
    assert weights[32, 32] == weights.max()
    if kind != "uniform":
        assert weights[0, 0] < 0.01 * weights[32, 32]


# ------------------------------------------------------------------- accumulator exactness


def run_blend(model: nn.Module, stored: np.ndarray, grid: WindowGrid, **kwargs: object) -> tuple:
    norm = InputNormalization((SCALE,) * 4, (OFFSET,) * 4, tuple(MEAN), tuple(STD), 0)
    bands = [(r, stored[:, r : r + grid.window_height]) for r in grid.row_starts]
    rows: list = []
    kwargs = {"precision": "float32", "layout": "contiguous", **kwargs}  # exact float32 sums
    blend_rows(
        model, window_batches(bands, grid, norm, 3), grid, 3, rows.append, confidence=True, **kwargs
    )
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    return np.concatenate([r[1] for r in rows]), np.concatenate([r[2] for r in rows])


def test_streamed_blend_of_a_pointwise_model_equals_the_whole_image_computation() -> None:
    stored, _ = synthetic_scene(seed=1, height=150, width=170)
    stored[:, :10, :10] = 0
    model = PointwiseModel().eval()
    grid = WindowGrid.for_scene(150, 170, window=64, stride=40)
    classes, confidence = run_blend(model, stored, grid)
    with torch.inference_mode():
        direct = model(torch.from_numpy(normalized(stored))[None])[0]
    expected = (direct.argmax(0) + 1).numpy().astype(np.uint8)
    expected[:10, :10] = 0
    np.testing.assert_array_equal(classes, expected)
    expected_conf = (torch.softmax(direct, 0).amax(0) * 255).round().numpy()
    assert np.abs(confidence[10:, 10:].astype(int) - expected_conf[10:, 10:]).max() <= 1
    assert (confidence[:10, :10] == 0).all()


def test_streamed_blend_equals_the_in_memory_stitcher(random_checkpoint: Path) -> None:
    model, _ = model_from_checkpoint(random_checkpoint)
    stored, _ = synthetic_scene(seed=2, height=130, width=200)
    grid = WindowGrid.for_scene(130, 200, window=64, stride=48)
    classes, confidence = run_blend(model, stored, grid)
    blended = stitch_in_memory(model, normalized(stored), grid, 3)
    np.testing.assert_array_equal(classes, blended.argmax(0) + 1)
    expected_conf = (torch.softmax(torch.from_numpy(blended), 0).amax(0) * 255).round().numpy()
    assert np.abs(confidence.astype(int) - expected_conf).max() <= 1


def test_tta_of_an_equivariant_model_changes_nothing() -> None:
    stored, _ = synthetic_scene(seed=4, height=96, width=80)
    grid = WindowGrid.for_scene(96, 80, window=64, stride=48)
    plain, _ = run_blend(PointwiseModel().eval(), stored, grid)
    with_tta, _ = run_blend(PointwiseModel().eval(), stored, grid, tta=True)
    np.testing.assert_array_equal(plain, with_tta)


class DtypeRecordingModel(SpectralContextModel):
    """The spectral stand-in that records the dtype and memory layout its convolutions see."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.dtype, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.score(x)
        self.seen.append((scores.dtype, x.is_contiguous(memory_format=torch.channels_last)))
        return self.smooth(scores)


@pytest.mark.parametrize(
    ("precision", "layout", "native_bf16", "expected"),
    [("auto", "auto", True, (torch.bfloat16, True)),
     ("auto", "auto", False, (torch.float32, True)),
     ("auto", "contiguous", False, (torch.float32, False)),
     ("float32", "auto", True, (torch.float32, True)),
     ("float32", "contiguous", True, (torch.float32, False)),
     ("bfloat16", "auto", False, (torch.bfloat16, True)),
     ("bfloat16", "channels_last", True, (torch.bfloat16, True))],
)  # fmt: skip
def test_precision_sets_the_cpu_autocast_and_layout(
    precision: str,
    layout: str,
    native_bf16: bool,
    expected: tuple[torch.dtype, bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """auto: bf16 on a CPU only where it computes bf16 natively; channels-last unless contiguous."""
    monkeypatch.setattr(predict_module, "cpu_has_native_bf16", lambda: native_bf16)
    stored, _ = synthetic_scene(seed=6, height=96, width=120)
    grid = WindowGrid.for_scene(96, 120, window=64, stride=48)
    model = DtypeRecordingModel().eval()
    run_blend(model, stored, grid, precision=precision, layout=layout)
    assert set(model.seen) == {expected}


def test_unknown_layout_is_an_input_error() -> None:
    stored, _ = synthetic_scene(seed=6, height=64, width=64)
    grid = WindowGrid.for_scene(64, 64, window=64, stride=48)
    with pytest.raises(InputError, match=r"prediction\.layout"):
        run_blend(PointwiseModel().eval(), stored, grid, layout="nhwc")


def test_bfloat16_agrees_with_float32_and_names_its_precision(
    scene_with_nodata: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    scene, stored = scene_with_nodata
    outputs = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / f"{precision}.tif"
        summary = predict_scene_with_model(
            SpectralContextModel(), metadata(), scene, out,
            prediction_cfg(window=64, overlap=0.25, precision=precision), progress=False,
        )  # fmt: skip
        assert summary["precision"] == precision
        with rasterio.open(out) as dst:
            outputs[precision] = dst.read(1)
    valid = ~np.all(stored == 0, axis=0)
    agreement = (outputs["float32"] == outputs["bfloat16"])[valid].mean()
    assert agreement >= 0.99
    np.testing.assert_array_equal(outputs["bfloat16"][~valid], 0)


def test_unknown_precision_is_an_input_error(
    scene_with_nodata: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    with pytest.raises(InputError, match=r"prediction\.precision"):
        predict_scene_with_model(
            SpectralContextModel(), metadata(), scene_with_nodata[0], tmp_path / "x.tif",
            {**prediction_cfg(), "precision": "fp8"}, progress=False,
        )  # fmt: skip
    assert not (tmp_path / "x.tif").exists()


# ----------------------------------------------------------------------------- the output file


def test_output_is_a_cog_on_the_scene_grid_with_colours(
    random_checkpoint: Path, scene_with_nodata: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    scene, stored = scene_with_nodata
    out = tmp_path / "pred" / "scene.tif"
    summary = predict_scene(
        random_checkpoint,
        scene,
        out,
        prediction_cfg(window=128, margin=16, confidence=True),
        progress=False,
    )
    assert summary["windows"] > 1 and summary["width"] == 300
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.width, dst.height) == (
            src.crs,
            src.transform,
            src.width,
            src.height,
        )
        assert dst.count == 1 and dst.dtypes[0] == "uint8" and dst.nodata == 0
        classes = dst.read(1)
        assert dst.colormap(1)[1] == (0x1B, 0x6E, 0x2A, 255)
        assert dst.colormap(1)[3] == (0x21, 0x71, 0xB5, 255)
        assert json.loads(dst.tags(1)["CLASS_NAMES"]) == ["no data", "Forest", "Bare soil", "Water"]
        assert dst.overviews(1), "no overviews"
        assert dst.profile["tiled"] and dst.compression.name.lower() == "zstd"
        assert "PREDICTOR" not in dst.tags(ns="IMAGE_STRUCTURE")  # none for class codes
    nodata = np.all(stored == 0, axis=0)
    assert (classes[nodata] == 0).all()
    assert classes[~nodata].min() >= 1 and classes[~nodata].max() <= 3
    is_valid, errors, _ = cog_validate(str(out))
    assert is_valid, errors
    assert "Water" in Path(f"{out}.aux.xml").read_text()
    with rasterio.open(confidence_path(out)) as conf:
        confidence = conf.read(1)
        assert conf.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"  # continuous values
    assert (confidence[nodata] == 0).all() and confidence[~nodata].min() >= 255 // 3
    assert cog_validate(str(confidence_path(out)))[0]
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "scene.qml",
        "scene.tif",
        "scene.tif.aux.xml",
        "scene_confidence.qml",
        "scene_confidence.tif",
    ]  # no stage or temporary files left


class InputRecordingModel(PointwiseModel):
    """The pointwise model that keeps a float32 copy of every input batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[np.ndarray] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().float().cpu().numpy().copy())
        return super().forward(x)


def network_inputs(scene: Path, out: Path, cfg: dict) -> tuple[np.ndarray, WindowGrid]:
    """Every window the network receives predicting ``scene`` (row-major), and the window grid."""
    model = InputRecordingModel().eval()
    predict_scene_with_model(model, metadata(), scene, out, cfg, progress=False)
    with rasterio.open(scene) as src:
        grid = predict_module.window_grid(cfg, TILE, src.height, src.width)
    return np.concatenate(model.inputs), grid


# Per model band (B02, B03, B04, B08): the stored values re-encoded as k * stored + d, with scale
# SCALE / k and offset OFFSET - d * SCALE / k, so that the reflectance stays the same.
RECODE_K = {"B02": 2, "B03": 3, "B04": 5, "B08": 1}
RECODE_D = {"B02": 100, "B03": 7, "B04": 0, "B08": 250}


def test_bands_are_matched_by_name_not_position(
    scene_with_nodata: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """A scene whose bands are in another order than the model's, plus an extra band, each band
    with its own scale and offset: the network receives exactly the input of the model's bands
    taken by name with their own scale/offset (taking scales by position breaks this)."""
    scene, stored = scene_with_nodata
    order = [2, 0, 3, 1]  # file order B04, B02, B08, B03, then B11
    names = [BANDS[i] for i in order] + ["B11"]
    nodata = np.all(stored == 0, axis=0)
    recoded = []
    for name in names[:4]:
        band = stored[BANDS.index(name)].astype(np.int64) * RECODE_K[name] + RECODE_D[name]
        recoded.append(np.where(nodata, 0, band))
    permuted = np.stack([*recoded, stored[0].astype(np.int64) * 3]).astype(np.uint16)
    scales = [SCALE / RECODE_K[n] for n in names[:4]] + [1.0]
    offsets = [OFFSET - RECODE_D[n] * SCALE / RECODE_K[n] for n in names[:4]] + [0.0]
    assert len(set(scales)) == 5 and len(set(offsets)) == 5
    permuted_scene = write_scene(
        tmp_path / "permuted.tif", permuted, names=names, scales=scales, offsets=offsets
    )
    cfg = prediction_cfg(window=64, overlap=0.25, precision="float32", layout="contiguous")
    inputs, grid = network_inputs(permuted_scene, tmp_path / "b.tif", cfg)
    image = normalized(stored)  # the by-name result: model bands, the scene's SCALE/OFFSET
    expected = np.stack(
        [
            image[:, r : r + grid.window_height, c : c + grid.window_width]
            for r in grid.row_starts
            for c in grid.col_starts
        ]
    )
    assert inputs.shape == expected.shape
    np.testing.assert_allclose(inputs, expected, rtol=1e-5, atol=1e-4)
    plain_inputs, _ = network_inputs(scene, tmp_path / "a.tif", cfg)
    np.testing.assert_allclose(plain_inputs, expected, rtol=1e-5, atol=1e-5)
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))


def test_a_scene_smaller_than_the_window_is_padded_by_reflection(
    random_checkpoint: Path, tmp_path: Path
) -> None:
    """40 x 50 px scene, window 128: one 64 x 64 window whose rows 40.. and columns 50.. mirror
    the scene (zero padding would feed the network no-data pixels there)."""
    stored, _ = synthetic_scene(seed=5, height=40, width=50)
    scene = write_scene(tmp_path / "small.tif", stored)
    out = tmp_path / "small_pred.tif"
    predict_scene(random_checkpoint, scene, out, prediction_cfg(window=128), progress=False)
    with rasterio.open(out) as dst:
        assert (dst.width, dst.height) == (50, 40)
        assert dst.read(1).min() >= 1
    cfg = prediction_cfg(window=128, precision="float32", layout="contiguous")
    inputs, grid = network_inputs(scene, tmp_path / "recorded.tif", cfg)
    assert inputs.shape == (1, 4, 64, 64) and (grid.row_starts, grid.col_starts) == ((0,), (0,))
    assert_reflected(inputs[0], normalized(stored))


def test_in_memory_stitcher_pads_by_reflection_too() -> None:
    stored, _ = synthetic_scene(seed=7, height=40, width=50)
    image = normalized(stored)
    grid = WindowGrid.for_scene(40, 50, window=128, stride=96)
    model = InputRecordingModel().eval()
    stitch_in_memory(model, image, grid, 3)
    assert_reflected(np.concatenate(model.inputs)[0], image)


# --------------------------------------------------------------------------------- bad input


def assert_no_output(folder: Path) -> None:
    assert [p.name for p in folder.iterdir()] == [], "output or temporary files left behind"


def test_missing_band_is_an_input_error(random_checkpoint: Path, tmp_path: Path) -> None:
    stored, _ = synthetic_scene(seed=6, height=64, width=64)
    scene = write_scene(tmp_path / "three.tif", stored[:3], names=["B02", "B03", "B04"])
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match="B08"):
        predict_scene(
            random_checkpoint, scene, tmp_path / "out" / "p.tif", prediction_cfg(), progress=False
        )
    assert_no_output(tmp_path / "out")


def test_other_resolution_is_an_input_error(random_checkpoint: Path, tmp_path: Path) -> None:
    stored, _ = synthetic_scene(seed=6, height=64, width=64)
    scene = write_scene(tmp_path / "20m.tif", stored, resolution=20.0)
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match=r"20 x 20 m pixels.*10 m"):
        predict_scene(
            random_checkpoint, scene, tmp_path / "out" / "p.tif", prediction_cfg(), progress=False
        )
    assert_no_output(tmp_path / "out")


@pytest.mark.parametrize("kind", ["foreign", "corrupt", "truncated", "wrong_weights"])
def test_bad_checkpoint_is_an_input_error(
    kind: str, random_checkpoint: Path, scene_with_nodata: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    checkpoint = tmp_path / "model.pt"
    if kind == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, checkpoint)
    elif kind == "corrupt":
        checkpoint.write_bytes(np.random.default_rng(0).bytes(1000))
    elif kind == "truncated":
        checkpoint.write_bytes(random_checkpoint.read_bytes()[:5000])
    else:
        model = build_segmentation_model("Unet", "resnet18", 4, 5)  # 5 classes, metadata says 3
        save_model_checkpoint(checkpoint, model.state_dict(), metadata())
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match="checkpoint"):
        predict_scene(
            checkpoint,
            scene_with_nodata[0],
            tmp_path / "out" / "p.tif",
            prediction_cfg(),
            progress=False,
        )
    assert_no_output(tmp_path / "out")


# --------------------------------------------------------------------------------- no seams


def seam_figures(model: nn.Module, scene: Path, folder: Path, cfg: dict) -> dict[str, float]:
    """Agreement between the unshifted grid and the grid shifted by half a window, and the rate of
    class changes between neighbouring pixels across window borders and elsewhere."""
    results = {}
    with rasterio.open(scene) as src:
        grid = predict_module.window_grid(cfg, TILE, src.height, src.width)
    window = grid.window_height
    assert grid.window_width == window
    for shift in (0, window // 2):
        out = folder / f"shift{shift}.tif"
        summary = predict_scene_with_model(
            model, metadata(), scene, out, cfg, progress=False, grid_shift=shift
        )
        with rasterio.open(out) as dst:
            results[shift] = dst.read(1)
    classes = results[0]
    height, width = classes.shape
    assert summary["window_height"] == window

    def border_flags(starts: tuple[int, ...], length: int) -> np.ndarray:
        """flags[i]: the pixel pair (i, i + 1) straddles a window start or end."""
        edges = {s for s in starts if s > 0} | {s + window for s in starts if s + window < length}
        flags = np.zeros(length - 1, dtype=bool)
        flags[[e - 1 for e in edges]] = True
        return flags

    col_change = classes[:, 1:] != classes[:, :-1]
    row_change = classes[1:, :] != classes[:-1, :]
    at_col_border = border_flags(grid.col_starts, width)
    at_row_border = border_flags(grid.row_starts, height)
    border = np.concatenate(
        [col_change[:, at_col_border].ravel(), row_change[at_row_border].ravel()]
    )
    other = np.concatenate(
        [col_change[:, ~at_col_border].ravel(), row_change[~at_row_border].ravel()]
    )
    return {
        "agreement": float((results[0] == results[window // 2]).mean()),
        "border_rate": float(border.mean()),
        "other_rate": float(other.mean()),
        "border_pairs": border.size,
    }


@pytest.fixture(scope="module")
def seam_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    stored, truth = synthetic_scene(seed=11, height=384, width=384)
    return write_scene(tmp_path_factory.mktemp("seams") / "scene.tif", stored), truth


def test_no_seams_half_window_shift_and_border_change_rate(
    seam_scene: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """Default blending (Hann) with a margin instead of an overlap fraction, scaled to this small
    scene (windows of 128 px sharing 2 x 16 px, as 1024 px windows share 2 x 32 px at most):
    shifting the window grid by half a window changes < 0.5 % of pixels, and classes change no
    more often across window borders than elsewhere. (With the former overlap 0.25 at window 64:
    agreement 99.95 %; border changes 4.20 %, elsewhere 4.96 %; unblended control: 23.9 % vs
    4.7 %.)"""
    cfg = prediction_cfg(window=128, margin=16)
    figures = seam_figures(SpectralContextModel().eval(), seam_scene[0], tmp_path, cfg)
    message = ", ".join(
        f"{k} {v:.4%}" if k != "border_pairs" else f"{k} {v}" for k, v in figures.items()
    )
    print(message)
    assert figures["agreement"] >= 0.995, message
    # "No higher than elsewhere", allowing two binomial standard errors of sampling noise.
    noise = 2 * np.sqrt(
        figures["other_rate"] * (1 - figures["other_rate"]) / figures["border_pairs"]
    )
    assert figures["border_rate"] <= figures["other_rate"] + noise, message


def test_the_seam_measure_sees_seams_of_unblended_windows(
    seam_scene: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """Control: touching windows with uniform weights (no blending) show the padding artefacts of
    the network at window borders, so the measure above can fail."""
    cfg = prediction_cfg(window=64, overlap=0.0, blend="uniform")
    figures = seam_figures(SpectralContextModel().eval(), seam_scene[0], tmp_path, cfg)
    assert figures["border_rate"] > 1.5 * figures["other_rate"], figures


# ------------------------------------------------------------- window auto and margin (issue 20)


def test_defaults_are_auto_window_and_a_margin_not_an_overlap_fraction() -> None:
    cfg = prediction_cfg()
    assert (cfg["window"], cfg["overlap"], cfg["margin"]) == ("auto", None, 64)
    assert cfg["precision"] == "auto" and cfg["layout"] == "auto"
    assert predict_module.window_side(cfg, 300, "cpu") == 1024


@pytest.mark.parametrize(("length", "margin"), [(1500, 32), (10980, 32), (5000, 64), (700, 32)])
def test_margin_grid_fits_the_axis_and_gives_every_pixel_its_margin(
    length: int, margin: int
) -> None:
    """Windows of at most 1024 px, as few as 1024 px windows need, the smallest such side; every
    pixel lies >= margin px inside some window (scene edges excepted)."""
    grid = WindowGrid.with_margin(length, length, 1024, margin)
    side = grid.window_height
    assert side % 32 == 0 and side <= 1024 and grid.window_width == side
    fixed = window_starts(length, 1024, 1024 - 2 * margin) if length > 1024 else [0]
    assert len(grid.row_starts) == len(fixed)
    if length > 1024:  # one step smaller would need another window
        smaller = window_starts(length, side - 32, side - 32 - 2 * margin)
        assert len(smaller) > len(fixed)
    inside = np.zeros(length, dtype=int)
    for start in grid.row_starts:
        lo = margin if start > 0 else 0
        hi = side - margin if start + side < length else side
        inside[start + lo : start + hi] = 1
    assert inside.all()


def test_1500_px_scene_uses_two_832_px_windows_per_axis() -> None:
    grid = predict_module.window_grid(prediction_cfg(), 300, 1500, 1500)
    assert (grid.window_height, grid.window_width) == (832, 832)
    assert grid.row_starts == (0, 668) and grid.col_starts == (0, 668)


def test_overlap_fraction_keeps_the_former_square_grid() -> None:
    grid = predict_module.window_grid(prediction_cfg(window=None, overlap=0.25), 300, 1500, 1500)
    assert (grid.window_height, grid.window_width) == (320, 320)
    assert grid.row_starts[1] == 240


def test_margin_too_large_for_the_window_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"prediction\.margin"):
        predict_module.window_grid(prediction_cfg(window=64, margin=32), 300, 500, 500)


def test_window_must_be_auto_null_or_a_multiple_of_32() -> None:
    from s2landcover.config import ConfigError

    with pytest.raises(ConfigError, match=r"prediction\.window"):
        validate_config({"prediction": {"window": "big"}})
    with pytest.raises(ConfigError, match=r"prediction\.window"):
        validate_config({"prediction": {"window": 100}})
