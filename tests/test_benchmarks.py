"""The prepared GPU benchmark runs (on the CPU, tiny sizes): it cannot rot between GPU sessions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.slow
def test_gpu_benchmark_smoke_mode_writes_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_gpu

    out = tmp_path / "gpu.md"
    bench_gpu.main(["--smoke", "--device", "cpu", "--out", str(out)])
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    cases = [row.split("|")[1].strip() for row in rows[1:]]
    assert len(cases) == 5, table
    assert sum(case.startswith("network only") for case in cases) == 2
    assert sum(case.startswith("predict_scene") for case in cases) == 2
    assert cases[-1].startswith("training")
    for row in rows[1:]:
        value = float(row.split("|")[2].split()[0].rstrip(","))
        assert value > 0, row
    assert "device cpu" in table
    sys.modules.pop("bench_gpu", None)


@pytest.mark.slow
def test_full_size_benchmark_runs_every_stage_at_toy_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make bench-full` at toy size: every stage runs through its s2lc command and gets a row with
    its wall time, peak RSS and disk written; the scratch folder is removed at the end."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_full

    out, work = tmp_path / "full.md", tmp_path / "work"
    args = ["--size", "200", "--tile", "64", "--nice", "0", "--work", str(work), "--out", str(out)]
    assert bench_full.main(args) == 0
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    stages = [row.split("|")[1].strip() for row in rows[1:]]
    assert stages[2:8] == [
        "ingest",
        "validity (SCL)",
        "downsample-mask",
        "tile",
        "filter",
        "split",
    ], table
    assert stages[-1] == "predict" and len(stages) == 10, table
    for row in rows[1:]:
        cells = [cell.strip().replace(",", "") for cell in row.split("|")[2:7]]
        wall, peak_tree, peak_largest, written, outputs = (float(cell) for cell in cells)
        assert wall > 0 and peak_tree > 0 and peak_largest > 0, row
        assert written >= 0 and outputs > 0, row
    assert "Stages above 8 GiB peak RSS: none" in table
    assert "predict --config config.yaml" in table  # the command of each stage, as run
    assert not work.exists()
    sys.modules.pop("bench_full", None)


@pytest.mark.slow
def test_backends_benchmark_smoke_mode_measures_and_compares_each_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmarks/bench_predict_backends.py at tiny sizes: every backend gets a row with its speed
    and its agreement with eager float32; a backend whose package is missing gets a row saying so
    (ONNX Runtime and OpenVINO are benchmark-only packages, absent from the project's dependencies);
    float32 backends agree exactly, bf16 closely."""
    import importlib.util

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_predict_backends as bench

    monkeypatch.setitem(bench.BACKENDS, "openvino bf16", "no_such_package_s2lc")
    out = tmp_path / "backends.md"
    backends = "eager bf16 NHWC,onnxruntime fp32,openvino fp32,openvino bf16"
    args = ["--smoke", "--shapes", "1x64,2x32", "--rounds", "1", "--batches", "1"]
    assert bench.main([*args, "--backends", backends, "--out", str(out)]) == 0
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in out.read_text().splitlines()
        if line.startswith("| ") and "---" not in line and not line.startswith("| backend")
    }
    assert list(rows) == ["eager fp32 NCHW", *backends.split(",")]
    assert rows["openvino bf16"] == ["skipped: no_such_package_s2lc not installed"]
    for name in ("onnxruntime fp32", "openvino fp32"):
        package = bench.BACKENDS[name]
        if importlib.util.find_spec(package) is None:
            assert rows[name] == [f"skipped: {package} not installed"]
            continue
        assert len(rows[name]) == 9, rows[name]
        for shape in range(2):
            mpxs, _, agree, diff = rows[name][4 * shape : 4 * shape + 4]
            assert float(mpxs) > 0 and float(agree) == 100.0 and float(diff) < 1e-3, rows[name]
    reference, default = rows["eager fp32 NCHW"], rows["eager bf16 NHWC"]
    assert reference[2] == reference[6] == "100.000" and float(reference[3]) == 0.0
    assert default[1] == default[5] == "1.00"  # the ratios are to today's default
    assert float(default[2]) >= 90.0 and float(default[3]) > 0.0  # bf16 rounds the logits
    sys.modules.pop("bench_predict_backends", None)


def test_readers_benchmark_cuts_every_window_in_both_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench_readers' measured child on a tiny scene: every window of the grid, normalised on the
    host and as stored values, with one and with two reader threads."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_readers

    from s2landcover.config import validate_config
    from s2landcover.predict import window_grid

    scene = tmp_path / "scene.tif"
    bench_readers.write_scene(scene, 1200, 1700)
    grid = window_grid(validate_config({})["prediction"], 300, 1200, 1700, "cpu")
    assert grid.count > 2  # several rows and columns of windows
    counts = {
        (normalise, readers): bench_readers.child(scene, normalise, readers)["windows"]
        for normalise in (True, False)
        for readers in (1, 2)
    }
    assert set(counts.values()) == {grid.count}, counts
    sys.modules.pop("bench_readers", None)


def test_host_benchmark_device_stand_in_writes_every_row_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench_predict_host --device-stand-in (in its own process: it patches the predict module):
    the prediction's machinery with the device's share replaced writes the stand-in's class rows,
    each once and in place, and its readers only decode and mask (as on CUDA: no host
    normalisation, no window cuts)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_predict_host
    import numpy as np
    import rasterio
    from bench_predict import write_stack_scene

    scene, out = tmp_path / "scene.tif", tmp_path / "out.tif"
    write_stack_scene(scene, 700, 1100)
    settings = {"window": 256, "batch_size": 20}  # a CPU would cap it at 16 windows of 256 px
    figures = bench_predict_host.measure(scene, out, settings, 1, on_device=True)
    with rasterio.open(out) as dataset:
        classes = dataset.read(1)
    band = bench_predict_host.class_band(1100, 6)
    assert np.array_equal(classes, band[np.arange(700) % bench_predict_host.CLASS_TILE])
    assert figures["windows"] > 4
    assert figures["batch_size"] == 20  # as on CUDA: not capped to the CPU's window pixels
    assert "readers: no-data mask" in figures["phases"]  # the readers ran, in this tree's code
    assert "reader: decode, mask" in figures["phases"]  # as on CUDA: the device cuts windows
    assert "reader: decode, normalise, cut" not in figures["phases"]
    assert "readers: normalise" not in figures["phases"]
    sys.modules.pop("bench_predict_host", None)
    sys.modules.pop("bench_predict", None)
