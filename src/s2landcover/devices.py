"""Which device a stage computes on: one rule for prediction, chip classification and training.

- Inference (``predict``, ``classify-chips``): :func:`choose_device` turns ``--device`` into a
  :class:`torch.device`. Unset or ``auto``: CUDA when present, else the CPU. A CUDA device asked for
  on a machine without CUDA is an :class:`~s2landcover.errors.InputError` (not a torch traceback
  half-way through the run).
- Training (Lightning): :func:`trains_on_cuda` says whether an ``accelerator`` setting ends on
  CUDA under the same rule (``auto`` takes CUDA when present); :func:`lightning_devices` turns the
  ``devices`` setting into Lightning's form.
"""

from __future__ import annotations

from typing import Any

import torch

from s2landcover.errors import InputError

AUTO = "auto"
CUDA_ACCELERATORS = ("auto", "gpu", "cuda")  # Lightning accelerators that run on CUDA if present


def choose_device(device: str | None = None) -> torch.device:
    """The inference device for ``device`` (``cpu``, ``cuda``, ``cuda:1``; None or ``auto``: CUDA
    when present, else the CPU).

    Raises:
        InputError: for a CUDA device on a machine without CUDA, or a name torch does not know.
    """
    if device is None or device == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise InputError(
            f"--device {device!r} is not a device name; expected auto, cpu, cuda or cuda:N "
            f"({error})"
        ) from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine; use cpu")
    return chosen


def trains_on_cuda(accelerator: str) -> bool:
    """Whether Lightning's ``accelerator`` (``auto``, ``cpu``, ``gpu``, ``cuda``) runs on CUDA here:
    ``auto`` / ``gpu`` / ``cuda`` when CUDA is present (the rule of :func:`choose_device`)."""
    return accelerator in CUDA_ACCELERATORS and torch.cuda.is_available()


def lightning_devices(devices: Any) -> Any:
    """Lightning's ``devices``: ``'4'`` -> 4 (a count); ``'0,1'`` and ``'auto'`` stay strings."""
    if isinstance(devices, str) and devices.strip().isdigit():
        return int(devices)
    return devices
