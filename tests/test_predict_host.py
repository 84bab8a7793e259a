"""Host side of whole-scene prediction: reader threads, the normalisation and argmax shortcuts,
errors in reader threads, reading the checkpoint once (issue 20)."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch

from s2landcover import predict as predict_module
from s2landcover.errors import InputError
from s2landcover.io import checkpoints
from s2landcover.predict import (
    InputNormalization,
    WindowGrid,
    argmax_planes,
    normalise_row_band,
    pinned_host_array,
    predict_scene,
    predict_scene_with_model,
    window_batches,
)
from s2landcover.radiometry import network_input_into, valid_pixels
from test_predict import (
    MEAN,
    OFFSET,
    SCALE,
    STD,
    SpectralContextModel,
    metadata,
    prediction_cfg,
    synthetic_scene,
    write_scene,
)

CFG = {"window": 96, "margin": 16, "confidence": True, "batch_size": 3}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    stored, _ = synthetic_scene(seed=5, height=230, width=310)
    stored[:, :40, :60] = 0  # no data
    stored[0, 100:110, 100:200] = 0  # one band at the no-data value: valid (dark) pixels
    return write_scene(tmp_path_factory.mktemp("host") / "scene.tif", stored)


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("prediction-reader")]


def read_outputs(out: Path) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(out) as dst, rasterio.open(out.with_name(f"{out.stem}_confidence.tif")) as c:
        return dst.read(1), c.read(1)


def test_reader_threads_give_the_single_reader_output(scene: Path, tmp_path: Path) -> None:
    outputs = {}
    for readers in (1, 3):
        out = tmp_path / f"r{readers}" / "p.tif"
        summary = predict_scene_with_model(
            SpectralContextModel(), metadata(), scene, out, prediction_cfg(**CFG),
            progress=False, readers=readers,
        )  # fmt: skip
        assert summary["windows"] > 6  # several rows and columns of windows
        outputs[readers] = read_outputs(out)
    assert np.array_equal(outputs[1][0], outputs[3][0])
    assert np.array_equal(outputs[1][1], outputs[3][1])
    assert not reader_threads()


def test_window_batches_are_the_former_per_window_arithmetic_for_any_worker_count() -> None:
    """Batches equal, value for value, radiometry.network_input_into per window (the arithmetic
    before issue 20), with no-data pixels zeroed, whatever the number of workers."""
    stored, _ = synthetic_scene(seed=2, height=100, width=150)
    stored[:, :20, :30] = 0
    stored[1, 50:60, :] = 0  # one band only: valid
    grid = WindowGrid.with_margin(100, 150, 64, 8)
    norm = InputNormalization((SCALE,) * 4, (OFFSET,) * 4, tuple(MEAN), tuple(STD), 0.0)
    gain, bias = norm.gain_bias()
    bands = [(r, stored[:, r : r + grid.window_height]) for r in grid.row_starts]
    expected = []
    for _, band in bands:
        valid = valid_pixels(band, 0.0)
        for col_off in grid.col_starts:
            cols = slice(col_off, col_off + grid.window_width)
            out = np.empty((grid.window_height, grid.window_width, 4), np.float32)
            expected.append(network_input_into(band[:, :, cols], gain, bias, out, valid[:, cols]))
    for workers in (1, 2, 3):
        got = [
            window.copy()
            for _, batch, _ in window_batches(iter(bands), grid, norm, 2, workers=workers)
            for window in batch
        ]
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            assert np.array_equal(a, b)  # bitwise, sign of zero aside (-0.0 == 0.0)


def test_device_window_batches_are_the_host_batches_value_for_value() -> None:
    """Windows cut, batched and normalised on the inference device (device_window_batches over
    stored_row_bands) equal the host's batches bitwise (sign of zero included), in the same order
    and with the same valid masks, for uint16 values above 2^15 (the signed view of their bits)
    and for uint8 and int16 scenes; batches of 5 windows span two bands of rows."""
    from s2landcover.predict import device_window_batches, stored_row_bands

    grid = WindowGrid.with_margin(100, 150, 64, 8)
    assert len(grid.col_starts) == 3 and len(grid.row_starts) >= 2
    for dtype, high in ((np.uint16, 65535), (np.uint8, 255), (np.int16, 30000)):
        stored = np.random.default_rng(3).integers(0, high, (4, 100, 150), endpoint=True)
        stored = stored.astype(dtype)
        stored[:, :20, :30] = 0
        stored[1, 50:60, :] = 0  # one band only: valid
        norm = InputNormalization((SCALE,) * 4, (OFFSET,) * 4, tuple(MEAN), tuple(STD), 0.0)
        bands = [(r, stored[:, r : r + grid.window_height]) for r in grid.row_starts]
        host = list(window_batches(iter(bands), grid, norm, 5))
        on_device = list(
            device_window_batches(stored_row_bands(iter(bands), grid, 0.0), grid, norm, 5, "cpu")
        )
        assert len(host) == len(on_device) > 1
        for (offsets, expected, valids), (got_offsets, got, got_valid) in zip(
            host, on_device, strict=True
        ):
            assert offsets == got_offsets
            assert got.dtype == torch.float32
            assert got.shape[1:] == (4, grid.window_height, grid.window_width)  # band-first
            got = got.permute(0, 2, 3, 1).contiguous()  # as the host's: channels last
            assert np.array_equal(got.numpy().view(np.int32), expected.view(np.int32)), dtype
            assert np.array_equal(got_valid.numpy(), np.stack(valids))


def test_read_row_bands_cycles_its_buffers_with_the_fresh_arrays_values(tmp_path: Path) -> None:
    """With n buffers the bands are read into n arrays in turn (the last, shorter band a
    contiguous prefix of one), value for value the fresh arrays of buffers=0."""
    from s2landcover.io.prediction_writer import inspect_scene_bands, read_row_bands

    stored, _ = synthetic_scene(seed=4, height=70, width=50)
    scene = inspect_scene_bands(write_scene(tmp_path / "s.tif", stored), metadata()["bands"])
    starts = [0, 20, 40, 60]  # 30 rows each, the last clipped to 10
    fresh = [(r, band.copy()) for r, band in read_row_bands(scene, starts, 30)]
    made: list[np.ndarray] = []

    def allocate(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        made.append(np.empty(shape, dtype))
        return made[-1]

    bases = []
    for (r, band), (r0, expected) in zip(
        read_row_bands(scene, starts, 30, buffers=3, allocate=allocate), fresh, strict=True
    ):
        assert r == r0 and band.flags.c_contiguous
        assert np.array_equal(band, expected)
        bases.append(next(i for i, m in enumerate(made) if np.shares_memory(band, m)))
    assert fresh[-1][1].shape == (4, 10, 50)
    assert len(made) == 3 and bases == [0, 1, 2, 0]


def test_cutting_on_the_device_gives_the_same_map(scene: Path, tmp_path: Path) -> None:
    """predict_scene_with_model with the windows cut, normalised and batched on the inference
    device (the CUDA default; here forced on the CPU) writes the same classes and confidence."""
    outputs = {}
    for on_device in (False, True):
        out = tmp_path / str(on_device) / "p.tif"
        summary = predict_scene_with_model(
            SpectralContextModel(), metadata(), scene, out, prediction_cfg(**CFG),
            progress=False, normalise_on_device=on_device,
        )  # fmt: skip
        assert summary["normalised_on"] == ("device" if on_device else "host")
        outputs[on_device] = read_outputs(out)
    assert np.array_equal(outputs[False][0], outputs[True][0])
    assert np.array_equal(outputs[False][1], outputs[True][1])


def test_device_batches_spanning_more_bands_than_the_readers_buffers(tmp_path: Path) -> None:
    """A scene one window wide: a batch of 8 windows holds windows of 8 bands of rows while the
    reader cycles 4 buffers; the batches must not share memory with them (same map)."""
    stored, _ = synthetic_scene(seed=6, height=600, width=96)
    narrow = write_scene(tmp_path / "narrow.tif", stored)
    cfg = prediction_cfg(**{**CFG, "batch_size": 8})
    outputs = {}
    for on_device in (False, True):
        out = tmp_path / str(on_device) / "p.tif"
        summary = predict_scene_with_model(
            SpectralContextModel(), metadata(), narrow, out, cfg,
            progress=False, normalise_on_device=on_device,
        )  # fmt: skip
        assert summary["windows"] > 8 and summary["window_width"] == 96
        outputs[on_device] = read_outputs(out)
    assert np.array_equal(outputs[False][0], outputs[True][0])
    assert np.array_equal(outputs[False][1], outputs[True][1])


def test_normalise_row_band_zeroes_only_pixels_without_data() -> None:
    stored = np.array([[[0, 5], [0, 7]], [[0, 0], [3, 9]]], dtype=np.uint16)  # (2, 2, 2)
    valid = valid_pixels(stored, 0)
    out = normalise_row_band(
        stored, np.array([2, 3], np.float32), np.array([1, 1], np.float32), valid
    )
    assert out[:, 0, 0].tolist() == [0, 0]  # every band at no data
    assert out[:, 1, 0].tolist() == [1, 10]  # one band at the no-data value: data
    assert out[:, 0, 1].tolist() == [11, 1]


@pytest.mark.parametrize(
    ("dtype", "nodata"),
    [("uint16", 0.0), ("uint16", 0), ("uint16", 65535.0), ("uint16", -1.0), ("uint16", 0.5),
     ("uint16", None), ("int16", -32768.0), ("float32", 0.0)],
)  # fmt: skip
def test_valid_pixels_compares_in_the_stored_type_by_the_one_rule(
    dtype: str, nodata: float | None
) -> None:
    """The band-by-band comparison in the stored integer type is the rule: a pixel has data
    unless every band equals nodata (all valid when nodata is None)."""
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if dtype != "float32" else None
    low, high = (info.min, info.max) if info is not None else (0, 3)
    stored = rng.integers(low, high, size=(3, 40, 50), endpoint=True).astype(dtype)
    stored[:, :10] = 0 if nodata is None else (nodata if dtype == "float32" else low)
    if nodata is not None and float(nodata).is_integer() and info is not None:
        if low <= nodata <= high:
            stored[:, 20:25, :] = nodata
            stored[1, 22, :] = 7  # one band with data
    rule = np.ones(stored.shape[1:], bool) if nodata is None else (stored != nodata).any(axis=0)
    assert np.array_equal(valid_pixels(stored, nodata), rule)


def test_argmax_planes_is_numpys_argmax_first_of_equals() -> None:
    rng = np.random.default_rng(1)
    for k in (1, 2, 6, 17):
        planes = rng.integers(0, 3, size=(k, 30, 40)).astype(np.float32)  # many ties
        assert np.array_equal(argmax_planes(planes), planes.argmax(axis=0))


class FailingCall:
    """``function`` that raises on its ``fail_at``-th call (0-based), from any thread."""

    def __init__(self, function: Any, fail_at: int) -> None:
        self.function = function
        self.calls = 0
        self.fail_at = fail_at
        self.lock = threading.Lock()

    def __call__(self, *args: object, **kwargs: object) -> Any:
        with self.lock:
            call = self.calls
            self.calls += 1
        if call == self.fail_at:
            raise RuntimeError("reader failure for the test")
        return self.function(*args, **kwargs)


@pytest.mark.parametrize(
    ("readers", "on_device", "readers_work"),
    [(1, False, "normalise_row_band"), (3, False, "normalise_row_band"),
     (2, True, "valid_pixels")],  # on the device path the readers only decode and mask
)  # fmt: skip
def test_an_error_in_a_reader_thread_reaches_the_caller_leaves_nothing_and_stops_the_readers(
    readers: int,
    on_device: bool,
    readers_work: str,
    scene: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failing = FailingCall(getattr(predict_module, readers_work), 2)
    monkeypatch.setattr(predict_module, readers_work, failing)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(RuntimeError, match="reader failure for the test"):
        predict_scene_with_model(
            SpectralContextModel(), metadata(), scene, out_dir / "p.tif", prediction_cfg(**CFG),
            progress=False, readers=readers, normalise_on_device=on_device,
        )  # fmt: skip
    assert failing.calls == 3
    assert sorted(p.name for p in out_dir.iterdir()) == []  # no output, stage or temporary file
    assert not reader_threads()


class FailingModel(SpectralContextModel):
    """Raises on its second batch: the readers must stop although they did nothing wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches += 1
        if self.batches == 2:
            raise RuntimeError("network failure for the test")
        return super().forward(x)


@pytest.mark.parametrize("on_device", [False, True])
def test_an_error_of_the_network_stops_the_reader_threads(
    on_device: bool, scene: Path, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="network failure for the test"):
        predict_scene_with_model(
            FailingModel(), metadata(), scene, tmp_path / "p.tif", prediction_cfg(**CFG),
            progress=False, readers=3, normalise_on_device=on_device,
        )  # fmt: skip
    assert not reader_threads()
    assert not (tmp_path / "p.tif").exists()


def test_readers_below_one_is_an_input_error(scene: Path, tmp_path: Path) -> None:
    from s2landcover.errors import InputError

    with pytest.raises(InputError, match="readers"):
        predict_scene_with_model(
            SpectralContextModel(), metadata(), scene, tmp_path / "p.tif", prediction_cfg(),
            progress=False, readers=0,
        )  # fmt: skip


def test_predict_scene_reads_the_checkpoint_once(
    scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s2landcover.io.checkpoints import save_model_checkpoint
    from s2landcover.models import build_segmentation_model

    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    save_model_checkpoint(path, build_segmentation_model("Unet", "resnet18", 4, 3).state_dict(),
                          metadata())  # fmt: skip
    reads = []
    original = checkpoints.load_model_checkpoint

    def counting(p: str | Path) -> tuple:
        reads.append(p)
        return original(p)

    monkeypatch.setattr(checkpoints, "load_model_checkpoint", counting)
    predict_scene(path, scene, tmp_path / "p.tif", prediction_cfg(**CFG), progress=False)
    assert len(reads) == 1


def test_pinned_host_array_falls_back_to_plain_memory_without_cuda() -> None:
    array = pinned_host_array((2, 3, 4))
    assert isinstance(array, np.ndarray) and array.shape == (2, 3, 4)
    assert array.dtype == np.float32 and array.flags.writeable
    stored = pinned_host_array((2, 3), np.uint16)
    assert stored.shape == (2, 3) and stored.dtype == np.uint16 and stored.flags.writeable


def test_cpu_batches_are_capped_in_pixels_and_do_not_change_the_output(
    scene: Path, tmp_path: Path
) -> None:
    from s2landcover.predict import CPU_BATCH_PIXELS, effective_batch_size

    assert effective_batch_size(4, 1024, 1024, "cpu") == 1
    assert effective_batch_size(4, 320, 320, "cpu") == 4
    assert effective_batch_size(64, 320, 320, "cpu") == CPU_BATCH_PIXELS // 320**2
    assert effective_batch_size(4, 1024, 1024, "cuda") == 4  # GPUs: as configured
    assert effective_batch_size("auto", 1024, 1024, "cpu") == 1  # auto on a CPU: 4, capped
    assert effective_batch_size("auto", 320, 320, "cpu") == 4
    for wrong in ("big", 0, True):
        with pytest.raises(InputError, match=r"prediction\.batch_size"):
            effective_batch_size(wrong, 320, 320, "cpu")  # type: ignore[arg-type]
    outputs = []
    for batch_size in (1, 5):
        out = tmp_path / f"b{batch_size}" / "p.tif"
        summary = predict_scene_with_model(
            SpectralContextModel(), metadata(), scene, out,
            prediction_cfg(**{**CFG, "batch_size": batch_size}), progress=False,
        )  # fmt: skip
        assert summary["batch_size"] == batch_size
        outputs.append(read_outputs(out))
    assert np.array_equal(outputs[0][0], outputs[1][0])
    assert np.array_equal(outputs[0][1], outputs[1][1])


def test_auto_batch_size_on_a_gpu_fills_its_share_of_free_memory_within_the_input_cap() -> None:
    """``batch_size: auto`` on CUDA: half the free memory at the measured bytes per window, at
    most GPU_BATCH_INPUT_BYTES of float32 input (pinned host buffers), at least one window."""
    from s2landcover.predict import GPU_BATCH_INPUT_BYTES, GPU_MEMORY_SHARE, device_batch_size

    gib = 2**30
    window_input = 4 * 4 * 1024 * 1024  # 4 bands, 1,024^2, float32: 16 MiB
    # 80 GiB free, 1 GiB per window: 40 by memory, 16 by input -> 16
    assert device_batch_size(80 * gib, gib, window_input) == GPU_BATCH_INPUT_BYTES // window_input
    # 10 GiB free, 1 GiB per window: 5 by memory
    assert device_batch_size(10 * gib, gib, window_input) == int(10 * GPU_MEMORY_SHARE)
    assert device_batch_size(gib // 4, gib, window_input) == 1  # too little: still one window
    assert device_batch_size(80 * gib, gib // 8, 10 * 4 * 1024 * 1024) == 6  # 10 bands: input cap


def test_cpu_accumulator_weights_by_blocks_of_rows_as_one_product() -> None:
    """The CPU accumulator's blockwise multiply-add equals ``sum += logits * weights`` bitwise,
    for channels-last (strided) logits and windows taller than a block and cut by the scene."""
    from s2landcover.predict import HOST_ADD_ROWS, RowBandAccumulator, blend_weights

    rng = np.random.default_rng(4)
    k, h, w, width = 5, 2 * HOST_ADD_ROWS + 22, 90, 200
    accumulator = RowBandAccumulator(k, h, width, "cpu")
    expected = np.zeros((k, h, width), np.float32)
    weights = blend_weights(h, w)
    for col_off in (0, 70, 150):  # the last window reaches past the scene's width
        logits = np.ascontiguousarray(rng.normal(size=(h, w, k)).astype(np.float32))
        view = logits.transpose(2, 0, 1)  # (K, h, w), channels-last memory
        accumulator.add(view, weights, np.ones((h, w), bool), 0, col_off)
        cut = min(w, width - col_off)
        expected[:, :, col_off : col_off + cut] += view[:, :, :cut] * weights[:, :cut]
    assert np.array_equal(accumulator.logit_sum, expected)


@pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None,
    reason="openvino is an optional package (prediction.backend: openvino)",
)
def test_prediction_through_the_openvino_backend_maps_the_eager_classes(
    scene: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """prediction.backend reaches the network: the OpenVINO-built network (float32) maps the
    scene as eager PyTorch does, and the summary says which backend ran."""
    outputs, summaries = {}, {}
    caplog.set_level("INFO", logger="s2landcover.inference_backends")
    for backend in ("eager", "openvino"):
        out = tmp_path / backend / "p.tif"
        summaries[backend] = predict_scene_with_model(
            SpectralContextModel(), metadata(), scene, out,
            prediction_cfg(**CFG, precision="float32", backend=backend), progress=False,
        )  # fmt: skip
        outputs[backend] = read_outputs(out)[0]
    assert summaries["openvino"]["backend"] == "openvino"
    assert "openvino network built for batches of (3, 4, 96, 96)" in caplog.text
    assert np.mean(outputs["eager"] == outputs["openvino"]) >= 0.999


def test_a_backend_with_tta_on_non_square_windows_falls_back_to_eager(
    scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A built network takes one window shape; tta's rotations swap the sides of a non-square
    window, so prediction says so and runs eager (never a shape error mid-scene)."""
    built = []

    def record(model, shape, dtype, backend="eager", threads=None):
        built.append((backend, shape))
        return model

    monkeypatch.setattr(predict_module, "network_for_backend", record)
    # one window fitted to the 230 x 310 px scene: 256 x 320 px
    cfg = prediction_cfg(**{**CFG, "window": 1024}, tta=True, backend="compile")
    with caplog.at_level("WARNING"):
        summary = predict_scene_with_model(
            SpectralContextModel(), metadata(), scene, tmp_path / "p.tif", cfg, progress=False
        )
    assert (summary["window_height"], summary["window_width"]) == (256, 320)
    assert built == [("eager", (3, 4, 256, 320))] and summary["backend"] == "eager"
    assert "predicting with eager PyTorch instead" in caplog.text


@pytest.mark.parametrize(
    ("tta", "confidence", "overrides"),
    [
        (False, True, {}),
        (True, True, {}),
        (False, False, {}),
        (False, True, {"window": None, "overlap": 0.25, "margin": None}),  # 320 px at 0.25
        (False, True, {"layout": "contiguous"}),  # logits as planes (NCHW), not channels-last
    ],
)
def test_own_pixels_taken_directly_agree_with_the_blend(
    scene: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tta: bool,
    confidence: bool,
    overrides: dict,
) -> None:
    """Pixels one window alone covers take its argmax / softmax directly (HOST_OWN_PIXELS_DIRECT):
    the classes and confidence equal the weighted blend's (the path before), up to the rounding of
    w l / w: classes on >= 99.99 % of pixels, confidence within 1 on all and equal on >= 99.9 %;
    no-data pixels 0 in both; on a scene with no data, several window rows and columns."""
    cfg = prediction_cfg(**{**CFG, "tta": tta, "confidence": confidence, **overrides})
    if overrides.get("overlap"):  # 320 px windows need a larger scene for several of them
        stored, _ = synthetic_scene(seed=7, height=700, width=800)
        stored[:, 300:420, :] = 0
        scene = write_scene(tmp_path / "large.tif", stored)
    results = {}
    for direct in (False, True):
        monkeypatch.setattr(predict_module, "HOST_OWN_PIXELS_DIRECT", direct)
        out = tmp_path / f"d{direct}" / "p.tif"
        summary = predict_scene_with_model(
            SpectralContextModel(), metadata(), scene, out, cfg, progress=False
        )
        assert summary["windows"] >= 6
        with rasterio.open(out) as dst:
            results[direct] = [dst.read(1)]
        if confidence:
            results[direct].append(read_outputs(out)[1])
    before, after = results[False], results[True]
    assert (before[0] == 0).sum() > 1000  # the no-data corner
    assert np.array_equal(before[0] == 0, after[0] == 0)
    assert (before[0] == after[0]).mean() >= 0.9999
    if confidence:
        difference = np.abs(before[1].astype(int) - after[1].astype(int))
        assert difference.max() <= 1
        assert (difference == 0).mean() >= 0.999
        assert np.array_equal(before[1] == 0, after[1] == 0)


def test_exclusive_ranges_are_the_pixels_of_one_window_only() -> None:
    grid = WindowGrid.with_margin(1000, 700, 256, 16)
    for starts, size, length in (
        (grid.row_starts, grid.window_height, grid.height),
        (grid.col_starts, grid.window_width, grid.width),
    ):
        cover = np.zeros(length, int)
        for start in starts:
            cover[start : start + size] += 1
        own = np.zeros(length, int)
        for first, stop in predict_module.exclusive_ranges(starts, size, length).values():
            own[first:stop] += 1
        assert np.array_equal(own == 1, cover == 1)


def test_count_values_is_bincount() -> None:
    values = np.random.default_rng(3).integers(0, 9, (37, 53)).astype(np.uint8)
    values[0, :5] = 255  # not observed: not counted among 0 .. n - 1
    expected = np.bincount(values.ravel(), minlength=256)[:7]
    assert np.array_equal(predict_module.count_values(values, 7), expected)


def accumulate(accumulator, grid: WindowGrid, k: int, seed: int, confidence: bool) -> tuple:
    """Random channels-last logits of every window of ``grid`` through ``accumulator``; no data
    in a corner: (classes, confidence) of the whole scene."""
    from s2landcover.predict import blend_weights

    rng = np.random.default_rng(seed)
    weights = blend_weights(grid.window_height, grid.window_width)
    valid_scene = np.ones((grid.height + grid.window_height, grid.width + grid.window_width), bool)
    valid_scene[:30, :25] = False
    rows = []
    for row_off, col_off in grid.windows():
        if row_off > accumulator.top:
            rows.append(accumulator.release(row_off, confidence))
        logits = rng.normal(size=(grid.window_height, grid.window_width, k)).astype(np.float32)
        valid = valid_scene[row_off : row_off + grid.window_height, col_off:][
            :, : grid.window_width
        ]
        accumulator.add(logits.transpose(2, 0, 1), weights, valid, row_off, col_off)
    rows.append(accumulator.release(grid.height, confidence))
    assert [r[0] for r in rows] == [0, *grid.row_starts[1:]]  # every row once, in order
    classes = np.concatenate([r[1] for r in rows])
    conf = np.concatenate([r[2] for r in rows]) if confidence else None
    assert classes.shape == (grid.height, grid.width)
    return classes, conf


@pytest.mark.parametrize(
    "grid",
    [
        WindowGrid.with_margin(300, 410, 96, 16),  # the last window covered 3 times on both axes
        WindowGrid.with_margin(330, 430, 96, 16),  # pairwise, last overlaps larger
        WindowGrid.with_margin(70, 410, 96, 16),  # one window row, padded below the scene
        WindowGrid.for_scene(200, 260, 64, 32),  # overlap 0.5: windows touch pairwise
        WindowGrid.for_scene(200, 260, 64, 16),  # overlap 0.75: 4 windows on a pixel
        WindowGrid.for_scene(200, 260, 64, 48, shift=20),  # shifted starts (the seam test's)
    ],
)
def test_strip_accumulator_gives_the_whole_band_blend(grid: WindowGrid) -> None:
    """HostStripAccumulator (shared strips only) maps what RowBandAccumulator (the whole band)
    does: the same classes on every pixel (the shared pixels' sums are added in the same order,
    one window's own pixels are its argmax), confidence within 1 (the rounding of w l / w),
    0 without data; and it holds a fraction of the band's float memory."""
    from s2landcover.predict import HostStripAccumulator, RowBandAccumulator

    k = 5
    strip = HostStripAccumulator(k, grid, confidence=True)
    band = RowBandAccumulator(k, grid.window_height, grid.width, "cpu")
    classes, conf = accumulate(strip, grid, k, seed=11, confidence=True)
    expected, expected_conf = accumulate(band, grid, k, seed=11, confidence=True)
    assert np.array_equal(classes, expected)
    assert (classes[:30, :25] == 0).all() and (conf[:30, :25] == 0).all()
    assert np.abs(conf.astype(int) - expected_conf.astype(int)).max() <= 1
    floats = sum(
        a.nbytes
        for a in (strip._upper.sums, strip._lower.sums, strip._col_sums)
        if a.dtype == np.float32
    )
    assert floats < band.logit_sum.nbytes


def test_strip_accumulator_refuses_windows_out_of_order() -> None:
    from s2landcover.predict import HostStripAccumulator

    grid = WindowGrid.with_margin(300, 300, 96, 16)
    strip = HostStripAccumulator(3, grid)
    logits = np.zeros((3, 96, 96), np.float32)
    weights, valid = np.ones((96, 96), np.float32), np.ones((96, 96), bool)
    with pytest.raises(ValueError, match="row order"):
        strip.add(logits, weights, valid, grid.row_starts[1], 0)
