"""The prediction network on a CPU through other backends: compiled and exported models, measured.

For a trained U-Net checkpoint, times the bare network (no reading, blending or writing) on
windows of the default CPU prediction size (``1x1024`` and ``4x512`` by default: batch x side px)
through each backend, and checks each against PyTorch eager float32 on windows cut from a real
scene:

- ``eager fp32 NCHW``: PyTorch eager, float32, contiguous (the reference of the agreement);
- ``eager fp32 NHWC``: the same in channels-last memory;
- ``eager bf16 NHWC``: bf16 autocast, channels last (today's CPU default where the CPU has native
  bf16: ``prediction.precision: auto``, ``layout: auto``);
- ``eager bf16-weights NHWC``: the network's weights and input cast to bf16 once (no autocast,
  which casts every weight on every call; every layer computes in bf16);
- ``compile fp32 NHWC`` / ``compile bf16 NHWC``: ``torch.compile`` (inductor, static shapes,
  ``freezing`` on: weights folded as constants and pre-packed for oneDNN), one compiled graph per
  shape;
- ``onnxruntime fp32``: the model exported to ONNX (TorchScript exporter, opset 17), ONNX Runtime's
  CPU provider, all graph optimisations;
- ``onnxruntime int8``: the same ONNX model statically quantised (QDQ, per-channel int8 weights,
  uint8 activations calibrated by min/max on the scene's windows);
- ``openvino fp32`` / ``openvino bf16``: the model converted by ``openvino.convert_model``, compiled
  for the CPU with the inference precision hint f32 or bf16 (AVX-512 BF16 / AMX), latency hint.

Each backend runs in its own process (its thread pool cannot spin against another's), built one
after another; the build time (export/convert/compile plus the first call) is reported apart.
Timings are interleaved: each round runs every backend once per shape, and the table gives the
median seconds over the rounds as network megapixels per second. Agreement: the share of pixels
whose argmax equals the reference's and the largest absolute logit difference, over all the
windows cut from the scene (the first batch of each shape is the timed one).

Example (the default run's model and scene; 2 threads, niced: the ratios are what counts):

    nice -n 10 python benchmarks/bench_predict_backends.py --threads 2 --rounds 5 \\
        --checkpoint results/models/size300/unet-resnet34/model.pt \\
        --scene results/scenes/demo.tif --out /tmp/backends.md

``--smoke``: a tiny random-weight U-Net on random input at tiny sizes (the test suite's run);
backends whose package is not installed get a row saying so.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE = "eager fp32 NCHW"
DEFAULT = "eager bf16 NHWC"
# backend -> the package it needs (None: torch only)
BACKENDS: dict[str, str | None] = {
    "eager fp32 NCHW": None,
    "eager fp32 NHWC": None,
    "eager bf16 NHWC": None,
    "eager bf16-weights NHWC": None,
    "compile fp32 NHWC": None,
    "compile bf16 NHWC": None,
    "onnxruntime fp32": "onnxruntime",
    "onnxruntime int8": "onnxruntime",
    "openvino fp32": "openvino",
    "openvino bf16": "openvino",
}
PACKAGES = ("torch", "onnx", "onnxruntime", "openvino", "segmentation-models-pytorch")

Shape = tuple[int, int, int, int]  # (B, C, H, W)
Run = Callable[[np.ndarray], np.ndarray]  # (B, H, W, C) float32 -> logits (B, K, H, W) float32


def parse_shape(text: str, channels: int) -> Shape:
    """``"4x512"`` -> (4, channels, 512, 512)."""
    batch, side = (int(v) for v in text.lower().split("x"))
    return (batch, channels, side, side)


def shape_label(shape: Shape) -> str:
    return f"{shape[0]} x {shape[2]}"


# --------------------------------------------------------------------------------------------
# Backends: build(model, shape, workdir, calibration) -> callable on a (B, H, W, C) float32 batch,
# the layout in which prediction cuts its windows (s2landcover.predict.window_batches).


def _eager(model: Any, bf16: bool, channels_last: bool) -> Run:
    import torch

    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).permute(0, 3, 1, 2)  # channels-last view
        if not channels_last:
            x = x.contiguous()
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return model(x).float().numpy()

    return run


def _eager_bf16_weights(model: Any) -> Run:
    import torch

    model = model.to(dtype=torch.bfloat16, memory_format=torch.channels_last)

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(torch.bfloat16)
        with torch.inference_mode():
            return model(x).float().numpy()

    return run


def _compiled(model: Any, bf16: bool) -> Run:
    import torch
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    model = model.to(memory_format=torch.channels_last)
    compiled = torch.compile(model, dynamic=False)

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).permute(0, 3, 1, 2)
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return compiled(x).float().numpy()

    return run


def _nchw(batch: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def _export_onnx(model: Any, shape: Shape, path: Path) -> None:
    import torch

    torch.onnx.export(
        model, (torch.zeros(shape),), str(path), dynamo=False, opset_version=17,
        input_names=["x"], output_names=["logits"],
        dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "logits": {0: "b", 2: "h", 3: "w"}},
    )  # fmt: skip


def _onnxruntime(
    model: Any, shape: Shape, workdir: Path, threads: int, calibration: Sequence[np.ndarray] | None
) -> Run:
    import onnxruntime as ort

    path = workdir / "model.onnx"
    if not path.exists():
        _export_onnx(model, shape, path)
    if calibration is not None:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter([{"x": _nchw(b)} for b in calibration])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.items, None)

        quantized = workdir / "model.int8.onnx"
        if not quantized.exists():
            prepared = workdir / "model.pre.onnx"
            quant_pre_process(str(path), str(prepared))
            quantize_static(
                str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )  # fmt: skip
        path = quantized
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {"x": _nchw(batch)})[0]

    return run


_OV_MODELS: dict[int, Any] = {}


def _openvino(model: Any, shape: Shape, threads: int, precision: str) -> Run:
    import openvino as ov
    import torch

    # convert once per process, then fix the input shape per compiled model
    if id(model) not in _OV_MODELS:
        _OV_MODELS[id(model)] = ov.convert_model(model, example_input=torch.zeros(shape))
    converted = _OV_MODELS[id(model)].clone()
    converted.reshape({0: ov.PartialShape(list(shape))})
    compiled = ov.Core().compile_model(
        converted, "CPU",
        {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
         "PERFORMANCE_HINT": "LATENCY"},
    )  # fmt: skip
    request = compiled.create_infer_request()

    def run(batch: np.ndarray) -> np.ndarray:
        return request.infer({0: _nchw(batch)})[0].copy()

    return run


def build(
    backend: str,
    model: Any,
    shape: Shape,
    workdir: Path,
    threads: int,
    calibration: Sequence[np.ndarray] | None = None,
) -> Run:
    """The callable of ``backend`` for batches of ``shape`` (B, C, H, W)."""
    if backend == "eager fp32 NCHW":
        return _eager(model, bf16=False, channels_last=False)
    if backend == "eager fp32 NHWC":
        return _eager(model, bf16=False, channels_last=True)
    if backend == "eager bf16 NHWC":
        return _eager(model, bf16=True, channels_last=True)
    if backend == "eager bf16-weights NHWC":
        return _eager_bf16_weights(model)
    if backend == "compile fp32 NHWC":
        return _compiled(model, bf16=False)
    if backend == "compile bf16 NHWC":
        return _compiled(model, bf16=True)
    if backend == "onnxruntime fp32":
        return _onnxruntime(model, shape, workdir, threads, None)
    if backend == "onnxruntime int8":
        return _onnxruntime(model, shape, workdir, threads, calibration)
    if backend == "openvino fp32":
        return _openvino(model, shape, threads, "f32")
    if backend == "openvino bf16":
        return _openvino(model, shape, threads, "bf16")
    raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")


# --------------------------------------------------------------------------------------------
# Model and input


def tiny_model(channels: int, classes: int) -> Any:
    """A small random-weight smp U-Net (smoke mode), the same in every process (seeded)."""
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(0)

    return smp.Unet(
        "resnet18", encoder_weights=None, in_channels=channels, classes=classes,
        encoder_depth=3, decoder_channels=(32, 16, 8),
    ).eval()  # fmt: skip


def load_model(checkpoint: Path | None, channels: int) -> tuple[Any, dict[str, Any]]:
    """(network in eval mode, checkpoint metadata) or the tiny model with stand-in metadata."""
    if checkpoint is None:
        return tiny_model(channels, 3), {"bands": ["b"] * channels}
    from s2landcover.predict import model_from_checkpoint

    return model_from_checkpoint(checkpoint)


def scene_windows(
    scene: Path | None, metadata: dict[str, Any], shapes: Sequence[Shape], per_shape: int
) -> dict[Shape, list[np.ndarray]]:
    """Per shape, ``per_shape`` batches (B, H, W, C) float32 of windows spread over the scene,
    normalised as prediction does (the scene's scales/offsets, the model's mean/std); random
    standard-normal input without a scene."""
    rng = np.random.default_rng(0)
    if scene is None:
        return {
            s: [rng.standard_normal((s[0], s[2], s[3], s[1]), dtype=np.float32)
                for _ in range(per_shape)]
            for s in shapes
        }  # fmt: skip
    import rasterio
    from rasterio.windows import Window

    from s2landcover.io.prediction_writer import inspect_scene_bands
    from s2landcover.radiometry import InputNormalization, network_input_into

    bands = inspect_scene_bands(scene, list(metadata["bands"]))
    norm = InputNormalization(
        scales=bands.scales, offsets=bands.offsets, mean=tuple(metadata["mean"]),
        std=tuple(metadata["std"]), nodata=bands.nodata,
    )  # fmt: skip
    gain, bias = norm.gain_bias()
    out: dict[Shape, list[np.ndarray]] = {}
    with rasterio.open(scene) as src:
        for shape in shapes:
            b, c, h, w = shape
            if h > src.height or w > src.width:
                raise SystemExit(f"--scene {scene} ({src.height} x {src.width}) < window {h}x{w}")
            n = b * per_shape
            # window origins on a regular grid over the scene, row-major
            side = int(np.ceil(np.sqrt(n)))
            rows = np.linspace(0, src.height - h, side).round().astype(int)
            cols = np.linspace(0, src.width - w, side).round().astype(int)
            origins = [(r, q) for r in rows for q in cols][:n]
            batches = []
            for i in range(per_shape):
                batch = np.empty((b, h, w, c), dtype=np.float32)
                for j, (r, q) in enumerate(origins[i * b : (i + 1) * b]):
                    stored = src.read(indexes=list(bands.indexes), window=Window(q, r, w, h))
                    network_input_into(stored, gain, bias, batch[j])
                batches.append(batch)
            out[shape] = batches
    return out


# --------------------------------------------------------------------------------------------
# One process per backend


def worker(conn: Any, backend: str, args: dict[str, Any]) -> None:
    """Build ``backend`` for every shape, then answer ``("time", shape, calls)`` (seconds per
    call) and ``("outputs", shape)`` (logits of every batch of that shape) until ``("stop",)``."""
    import torch

    torch.set_num_threads(args["threads"])
    try:
        model, _ = load_model(args["checkpoint"], args["channels"])
        inputs: dict[Shape, list[np.ndarray]] = args["inputs"]
        runs: dict[Shape, Run] = {}
        build_s: dict[Shape, float] = {}
        workdir = Path(args["workdir"]) / backend.replace(" ", "_")
        workdir.mkdir(parents=True, exist_ok=True)
        calibration = [b for batches in inputs.values() for b in batches]
        for shape, batches in inputs.items():
            started = time.perf_counter()
            runs[shape] = build(backend, model, shape, workdir, args["threads"], calibration)
            runs[shape](batches[0])  # the first call compiles where the backend compiles lazily
            build_s[shape] = time.perf_counter() - started
        conn.send(("ready", build_s))
    except Exception as error:  # reported as the backend's row
        conn.send(("failed", f"{type(error).__name__}: {str(error)[:300]}"))
        return
    while True:
        message = conn.recv()
        if message[0] == "stop":
            return
        if message[0] == "time":
            _, shape, calls = message
            seconds = []
            for _ in range(calls):
                started = time.perf_counter()
                runs[shape](inputs[shape][0])
                seconds.append(time.perf_counter() - started)
            conn.send(seconds)
        elif message[0] == "outputs":
            shape = message[1]
            conn.send([np.asarray(runs[shape](b), dtype=np.float32) for b in inputs[shape]])


def compare(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> tuple[float, float]:
    """(per cent of pixels whose argmax over the classes, axis 1, equals the reference's, largest
    absolute logit difference) over batches of logits (B, K, H, W)."""
    if len(outputs) != len(reference):
        raise ValueError(f"{len(outputs)} batches of logits against {len(reference)}")
    same = total = 0
    diff = 0.0
    for out, ref in zip(outputs, reference, strict=True):
        same += int((out.argmax(1) == ref.argmax(1)).sum())
        total += ref.shape[0] * ref.shape[2] * ref.shape[3]
        diff = max(diff, float(np.abs(out - ref).max()))
    return 100.0 * same / total, diff


def table_rows(
    backends: Sequence[str],
    shapes: Sequence[Shape],
    seconds: dict[tuple[str, Shape], list[float]],
    agreement: dict[tuple[str, Shape], tuple[float, float]],
    build_s: dict[str, dict[Shape, float]],
    notes: dict[str, str],
) -> list[str]:
    """The Markdown table: per shape network Mpx/s (median seconds per call), the ratio to
    today's default backend, agreement with the reference; the build time per shape."""
    columns = "Mpx/s | x default | argmax agreement % | max abs logit diff"
    rows = [
        "| backend | " + " | ".join(f"{shape_label(s)}: {columns}" for s in shapes)
        + " | build + first call s |",
        "|---|" + "---:|" * (4 * len(shapes) + 1),
    ]  # fmt: skip
    for name in backends:
        if name in notes:
            rows.append(f"| {name} | {notes[name]} |")
            continue
        cells = []
        for shape in shapes:
            b, _, h, w = shape
            median = statistics.median(seconds[(name, shape)])
            base = seconds.get((DEFAULT, shape))
            ratio = f"{statistics.median(base) / median:.2f}" if base else "-"
            agree, diff = agreement[(name, shape)]
            cells += [f"{b * h * w / 1e6 / median:.2f}", ratio, f"{agree:.3f}", f"{diff:.3g}"]
        builds = " / ".join(f"{build_s[name][s]:.1f}" for s in shapes)
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {builds} |")
    return rows


# --------------------------------------------------------------------------------------------
# End to end: predict_scene_with_model with the network through s2landcover.inference_backends


def mosaic_scene(scene: Path, out: Path, repeat: int) -> Path:
    """``scene`` mirrored ``repeat`` x ``repeat`` times (no seams at the joins), same bands,
    scales, offsets and no-data value: a larger real-looking scene."""
    import rasterio

    with rasterio.open(scene) as src:
        data = src.read()
        profile = src.profile
        descriptions, scales, offsets = src.descriptions, src.scales, src.offsets
    rows = []
    for i in range(repeat):
        tiles = [data[:, :: (-1) ** i, :: (-1) ** j] for j in range(repeat)]
        rows.append(np.concatenate(tiles, axis=2))
    data = np.concatenate(rows, axis=1)
    profile.update(height=data.shape[1], width=data.shape[2], tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate")  # fmt: skip
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = descriptions
        dst.scales, dst.offsets = scales, offsets
    return out


class BackendNetwork:
    """Stands for the network in :func:`s2landcover.predict.predict_scene_with_model`: builds the
    backend on the first batch (for its shape: the effective batch size and window that
    predict.py gives the network) and calls it (what the hook in predict.py does once the window
    grid is known)."""

    def __init__(self, model: Any, backend: str, dtype: Any) -> None:
        self.model, self.backend, self.dtype = model, backend, dtype
        self.network: Any = None
        self.build_s = 0.0

    def to(self, *args: Any, **kwargs: Any) -> BackendNetwork:
        self.model = self.model.to(*args, **kwargs)
        return self

    def eval(self) -> BackendNetwork:
        return self

    def __call__(self, x: Any) -> Any:
        if self.network is None:
            from s2landcover.inference_backends import network_for_backend

            started = time.perf_counter()
            shape = tuple(x.shape)
            self.network = network_for_backend(self.model, shape, self.dtype, self.backend)
            self.build_s = time.perf_counter() - started
        return self.network(x)


def end_to_end_worker(conn: Any, backend: str, args: dict[str, Any]) -> None:
    """Answer ``("predict", out_path)`` with (seconds, build seconds) of one whole-scene
    prediction at the default settings until ``("stop",)``."""
    import torch

    from s2landcover.config import validate_config
    from s2landcover.predict import autocast_dtype, predict_scene_with_model

    torch.set_num_threads(args["threads"])
    model, metadata = load_model(args["checkpoint"], args["channels"])
    cfg = validate_config({})["prediction"]
    dtype = autocast_dtype(torch.device("cpu"), cfg["precision"])
    network = BackendNetwork(model, backend, dtype)
    conn.send("ready")
    while True:
        message = conn.recv()
        if message[0] == "stop":
            return
        started = time.perf_counter()
        predict_scene_with_model(network, metadata, args["scene"], message[1], cfg, "cpu",
                                 progress=False)  # fmt: skip
        conn.send((time.perf_counter() - started, network.build_s))
        network.build_s = 0.0


def end_to_end(args: argparse.Namespace, backends: Sequence[str]) -> list[str]:
    """Rows: whole-scene Mpx/s per backend (median of the rounds after the first), the first
    run with its build, agreement of the class maps with eager's."""
    import rasterio

    rows = [
        "| backend | scene Mpx/s | x eager | first run s (of which build) | class agreement % |",
        "|---|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        scene = args.scene
        if args.mosaic > 1:
            scene = mosaic_scene(args.scene, Path(tmp) / "mosaic.tif", args.mosaic)
        with rasterio.open(scene) as src:
            mpx = src.height * src.width / 1e6
            rows.insert(0, f"Scene {scene.name}: {src.height} x {src.width} px\n")
        worker_args = {"threads": args.threads, "checkpoint": args.checkpoint,
                       "channels": 0, "scene": scene}  # fmt: skip
        context = mp.get_context("spawn")
        conns, procs = {}, []
        for name in backends:
            parent, child = context.Pipe()
            proc = context.Process(target=end_to_end_worker, args=(child, name, worker_args))
            proc.start()
            child.close()  # so that a worker's death ends recv()
            parent.recv()
            conns[name] = parent
            procs.append(proc)
        seconds: dict[str, list[float]] = {name: [] for name in backends}
        first: dict[str, tuple[float, float]] = {}
        for r in range(args.rounds + 1):
            for name in backends:
                conns[name].send(("predict", Path(tmp) / f"{name}.tif"))
                wall, build_s = conns[name].recv()
                if r == 0:
                    first[name] = (wall, build_s)
                else:
                    seconds[name].append(wall)
            print(f"end to end: round {r} of {args.rounds} done", file=sys.stderr, flush=True)
        for conn in conns.values():
            conn.send(("stop",))
        for proc in procs:
            proc.join(timeout=60)
        with rasterio.open(Path(tmp) / f"{backends[0]}.tif") as src:
            reference = src.read(1)
        for name in backends:
            with rasterio.open(Path(tmp) / f"{name}.tif") as src:
                agree = 100.0 * float((src.read(1) == reference).mean())
            median = statistics.median(seconds[name])
            ratio = statistics.median(seconds[backends[0]]) / median
            rows.append(
                f"| {name} | {mpx / median:.2f} | {ratio:.2f} | "
                f"{first[name][0]:.1f} ({first[name][1]:.1f}) | {agree:.3f} |"
            )
    return rows


def versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="trained model.pt (omit with --smoke)")
    parser.add_argument("--scene", type=Path, help="scene stack to cut the windows from")
    parser.add_argument("--shapes", default="1x1024,4x512", help="batch x side, comma separated")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--calls", type=int, default=1, help="timed calls per backend and round")
    parser.add_argument("--batches", type=int, default=2, help="batches per shape for agreement")
    parser.add_argument("--smoke", action="store_true", help="tiny random U-Net, random input")
    parser.add_argument("--out", type=Path, help="write the Markdown table there too")
    parser.add_argument("--workdir", type=Path, help="exported models (default: a temp folder)")
    parser.add_argument(
        "--end-to-end", default="",
        help="instead: whole-scene prediction at the default settings with these "
        "prediction.backend values (comma separated, the first is the reference), e.g. "
        "eager,compile,openvino",
    )  # fmt: skip
    parser.add_argument("--mosaic", type=int, default=1, help="end to end: scene mirrored n x n")
    args = parser.parse_args(argv)
    if not args.smoke and (args.checkpoint is None or args.scene is None):
        parser.error("--checkpoint and --scene are required without --smoke")
    if args.end_to_end:
        started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load_start = os.getloadavg()[0]
        rows = end_to_end(args, [b.strip() for b in args.end_to_end.split(",") if b.strip()])
        table = (
            f"- Date: {started_at}; load average {load_start:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end; {args.threads} threads; {args.rounds} "
            f"interleaved rounds after a first run, medians\n- Software: {versions()}\n\n"
            + "\n".join(rows) + "\n"
        )  # fmt: skip
        print(table)
        if args.out is not None:
            args.out.write_text(table)
        return 0
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for name in backends:
        if name not in BACKENDS:
            parser.error(f"unknown backend {name!r}; expected some of {list(BACKENDS)}")
    if REFERENCE not in backends:
        backends.insert(0, REFERENCE)

    model, metadata = load_model(None if args.smoke else args.checkpoint, 4)
    channels = len(metadata["bands"])
    del model
    shapes = [parse_shape(s, channels) for s in args.shapes.split(",")]
    inputs = scene_windows(None if args.smoke else args.scene, metadata, shapes, args.batches)
    load_start = os.getloadavg()
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        worker_args = {
            "threads": args.threads, "inputs": inputs, "workdir": tmp,
            "checkpoint": None if args.smoke else args.checkpoint, "channels": channels,
        }  # fmt: skip
        context = mp.get_context("spawn")
        conns: dict[str, Any] = {}
        procs: list[Any] = []
        notes: dict[str, str] = {}
        build_s: dict[str, dict[Shape, float]] = {}
        for name in backends:
            package = BACKENDS[name]
            if package is not None and importlib.util.find_spec(package) is None:
                notes[name] = f"skipped: {package} not installed"
                continue
            parent, child = context.Pipe()
            proc = context.Process(target=worker, args=(child, name, worker_args), daemon=True)
            proc.start()
            child.close()  # so that a worker's death ends recv()
            try:
                status, payload = parent.recv()  # one build at a time: build times are their own
            except EOFError:
                status, payload = "failed", f"worker died (exit code {proc.exitcode})"
            if status == "failed":
                notes[name] = f"failed: {payload}"
                proc.join()
                continue
            print(f"built {name}: " + ", ".join(f"{v:.1f} s" for v in payload.values()),
                  file=sys.stderr, flush=True)  # fmt: skip
            conns[name], build_s[name] = parent, payload
            procs.append(proc)
        if REFERENCE not in conns:
            raise SystemExit(f"the reference backend failed: {notes.get(REFERENCE)}")

        seconds: dict[tuple[str, Shape], list[float]] = {}
        for r in range(args.rounds):
            for shape in shapes:
                order = list(conns)
                order = order[r % len(order) :] + order[: r % len(order)]
                for name in order:
                    conns[name].send(("time", shape, args.calls))
                    seconds.setdefault((name, shape), []).extend(conns[name].recv())
            print(f"round {r + 1} of {args.rounds} done", file=sys.stderr, flush=True)
        agreement: dict[tuple[str, Shape], tuple[float, float]] = {}
        for shape in shapes:
            conns[REFERENCE].send(("outputs", shape))
            reference = conns[REFERENCE].recv()
            for name in conns:
                conns[name].send(("outputs", shape))
                outputs = conns[name].recv()
                agreement[(name, shape)] = compare(outputs, reference)
        for conn in conns.values():
            conn.send(("stop",))
        for proc in procs:
            proc.join(timeout=60)
    load_end = os.getloadavg()

    header = [
        f"- Date: {started_at}; load average {load_start[0]:.1f} at the start, "
        f"{load_end[0]:.1f} at the end; {args.threads} threads; {args.rounds} interleaved rounds "
        f"x {args.calls} call(s), medians; CPU: {platform.processor() or platform.machine()}",
        f"- Model: {'tiny random U-Net (smoke)' if args.smoke else args.checkpoint}; "
        f"windows from {'random input' if args.smoke else args.scene}",
        f"- Software: {versions()}",
        "",
    ]
    lines = header + table_rows(backends, shapes, seconds, agreement, build_s, notes)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out is not None:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
