"""prediction.backend: compiled and exported networks give the eager network's logits."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from torch import nn

from s2landcover.errors import InputError
from s2landcover.inference_backends import network_for_backend

SHAPE = (2, 4, 32, 32)


def small_network() -> nn.Module:
    """Convolution, batch norm (with non-trivial statistics), ReLU, 1x1 convolution: 4 -> 3."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 3, 1)
    )
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_eager_is_the_network_itself() -> None:
    net = small_network()
    assert network_for_backend(net, SHAPE, None, "eager") is net


def test_unknown_backend_is_an_input_error_naming_it() -> None:
    with pytest.raises(InputError, match=r"'tensorrt'.*eager"):
        network_for_backend(small_network(), SHAPE, None, "tensorrt")


def test_openvino_missing_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(InputError, match="openvino package is not installed"):
        network_for_backend(small_network(), SHAPE, None, "openvino")


@pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None,
    reason="openvino is an optional package (prediction.backend: openvino)",
)
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_openvino_gives_the_eager_logits_also_for_a_short_last_batch(
    dtype: torch.dtype | None,
) -> None:
    net = small_network()
    # built as prediction may build it: inside its autocast (which OpenVINO cannot convert)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
        run = network_for_backend(net, SHAPE, dtype, "openvino", threads=1)
    x = torch.randn(SHAPE)
    with torch.inference_mode():
        expected = net(x)
    tolerance = 1e-4 if dtype is None else 0.1
    for batch in (x, x[:1]):  # the last batch of a scene may have fewer windows
        logits = run(batch)
        assert logits.dtype == torch.float32 and logits.shape == (len(batch), 3, 32, 32)
        assert torch.allclose(logits, expected[: len(batch)], atol=tolerance), (
            (logits - expected[: len(batch)]).abs().max()
        )
    with pytest.raises(ValueError, match="built for batches"):
        run(torch.randn(3, 4, 32, 32))


@pytest.mark.slow
def test_compiled_network_gives_the_eager_logits_channels_last_and_short_batch() -> None:
    """torch.compile (inductor, frozen weights: needs a C++ compiler) on a channels-last network,
    fed as prediction feeds it: a channels-last view of a (B, H, W, C) buffer."""
    net = small_network().to(memory_format=torch.channels_last)
    run = network_for_backend(net, SHAPE, None, "compile")
    x = torch.randn(SHAPE[0], 32, 32, 4).permute(0, 3, 1, 2)
    with torch.inference_mode():
        expected = net(x)
        for batch in (x, x[:1]):
            logits = run(batch)
            assert logits.shape == (len(batch), 3, 32, 32)
            assert torch.allclose(logits, expected[: len(batch)], atol=1e-4)
