"""The prediction network through a compiler or another runtime (``prediction.backend``).

On a CPU the network is the cost of prediction. Measured on this project's 2-core CPU (AVX-512
BF16) with the default run's trained resnet34 U-Net on 1 x 1024^2 and 4 x 512^2 windows of the demo
scene (docs/benchmarks/predict.md, "Backends"), against PyTorch eager with bf16 autocast and
channels-last (the CPU default): ``torch.compile`` (inductor, frozen weights) with bf16 autocast
ran 1.4-2.1x faster and OpenVINO with its bf16 inference hint 1.7-2.5x, both agreeing with eager
float32 on 99.96 % of pixels; whole-scene prediction of a 3,000^2 scene ran 1.8x and 2.1x. Each
costs a build before the first window (inductor: 20-40 s per window shape under load, a C++
compiler needed; OpenVINO: a conversion of the network, 40-65 s under load), which only a scene
of many windows pays back: hence ``eager`` stays the default.

- ``eager``: the PyTorch module as it is (the default).
- ``compile``: :func:`torch.compile` with inductor, static shapes and ``freezing`` (weights folded
  as constants, convolution + batch norm fused, weights pre-packed for oneDNN), under autocast
  ``dtype``. Needs a working C++ compiler on a CPU.
- ``openvino``: the network converted by ``openvino.convert_model`` and compiled for the CPU, with
  the inference precision hint bf16 when ``dtype`` is bf16 (AVX-512 BF16 / AMX), else f32. Needs
  the optional package ``openvino``; CPU only.

Every backend returns a callable ``batch (B, C, H, W) float32 -> logits (B, K, H, W) float32`` for
batches of the shape it was built for; a smaller last batch (``B`` less than the built batch) is
padded with zeros to the built batch, so nothing recompiles.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch
from torch import nn

from s2landcover.errors import InputError

log = logging.getLogger(__name__)

BACKENDS = ("eager", "compile", "openvino")

Network = Callable[[torch.Tensor], torch.Tensor]


def _check_batch(batch: torch.Tensor, shape: tuple[int, int, int, int], backend: str) -> int:
    """The number of windows in ``batch``; raises ValueError for a shape the build does not fit."""
    if (
        batch.dim() != 4
        or tuple(batch.shape[1:]) != shape[1:]
        or not 0 < batch.shape[0] <= shape[0]
    ):
        raise ValueError(
            f"{backend} network built for batches of {shape} (B, C, H, W) got {tuple(batch.shape)}"
        )
    return int(batch.shape[0])


def _padded(batch: torch.Tensor, size: int) -> torch.Tensor:
    """``batch`` with zero windows appended up to ``size`` windows."""
    if batch.shape[0] == size:
        return batch
    pad = batch.new_zeros((size - batch.shape[0], *batch.shape[1:]))
    return torch.cat([batch, pad])


def _memory_format(model: nn.Module) -> torch.memory_format:
    """channels_last when the network's first 4-d weight is stored so, else contiguous."""
    for parameter in model.parameters():
        if parameter.dim() == 4:
            if parameter.is_contiguous(memory_format=torch.channels_last):
                return torch.channels_last
            break
    return torch.contiguous_format


def _compiled(
    model: nn.Module, shape: tuple[int, int, int, int], dtype: torch.dtype | None
) -> Network:
    device = next(model.parameters()).device
    # the input in the network's memory format, always: another layout would recompile
    layout = _memory_format(model)
    compiled = torch.compile(model, dynamic=False, options={"freezing": True})

    def run(batch: torch.Tensor) -> torch.Tensor:
        n = _check_batch(batch, shape, "compile")
        x = _padded(batch, shape[0]).contiguous(memory_format=layout)
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            return compiled(x)[:n].float()

    return run


def _openvino(
    model: nn.Module, shape: tuple[int, int, int, int], dtype: torch.dtype | None, threads: int
) -> Network:
    try:
        import openvino as ov
    except ImportError:
        raise InputError(
            "prediction.backend is 'openvino' but the openvino package is not installed; "
            "install it (pip install openvino) or use backend: eager"
        ) from None
    if next(model.parameters()).device.type != "cpu":
        raise InputError("prediction.backend 'openvino' runs on a CPU only; use eager or compile")
    if dtype not in (None, torch.float32, torch.bfloat16):
        raise InputError(f"prediction.backend 'openvino': no {dtype} on a CPU; bf16 or float32")
    # traced in float32 even when built under the caller's autocast (OpenVINO cannot convert
    # autocast's casts); the precision is the plugin's hint
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        converted = ov.convert_model(model, example_input=torch.zeros(shape))
    hint = "bf16" if dtype == torch.bfloat16 else "f32"
    compiled = ov.Core().compile_model(
        converted,
        "CPU",
        {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
         "PERFORMANCE_HINT": "LATENCY"},
    )  # fmt: skip
    request = compiled.create_infer_request()

    def run(batch: torch.Tensor) -> torch.Tensor:
        n = _check_batch(batch, shape, "openvino")
        x = _padded(batch.detach().float(), shape[0]).contiguous().numpy()
        logits = request.infer({0: x})[0]
        return torch.from_numpy(logits[:n].copy())

    return run


def network_for_backend(
    model: nn.Module,
    batch_shape: tuple[int, int, int, int],
    dtype: torch.dtype | None,
    backend: str = "eager",
    threads: int | None = None,
) -> Network:
    """The network of ``model`` run through ``backend``, for batches of ``batch_shape``.

    Args:
        model: the network in eval mode, on its device (channels-last or not).
        batch_shape: (B, C, H, W): windows per batch, bands, window height and width in pixels;
            batches of fewer windows are padded to B.
        dtype: the autocast dtype of prediction (``torch.bfloat16``) or None for float32.
        backend: one of :data:`BACKENDS` (see the module docstring).
        threads: CPU threads of the OpenVINO runtime (default: torch's thread count).

    Returns:
        A callable mapping a float32 batch (b <= B, C, H, W) to float32 logits (b, K, H, W); the
        build (compilation, conversion) happens here, before the first batch.

    Raises:
        InputError: for an unknown backend, OpenVINO not installed, or OpenVINO on a GPU.
    """
    if backend not in BACKENDS:
        raise InputError(f"prediction.backend is {backend!r}; expected one of {list(BACKENDS)}")
    if backend == "eager":
        return model
    started = time.perf_counter()
    if backend == "compile":
        network = _compiled(model, batch_shape, dtype)
        network(torch.zeros(batch_shape, device=next(model.parameters()).device))  # compiles
    else:
        network = _openvino(model, batch_shape, dtype, threads or torch.get_num_threads())
    log.info(
        "%s network built for batches of %s in %.1f s",
        backend, batch_shape, time.perf_counter() - started,
    )  # fmt: skip
    return network
