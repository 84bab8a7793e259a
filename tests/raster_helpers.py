"""Raster helpers shared by the tests: small GeoTIFFs and scene stacks per the contracts, and a
check of reflection padding. The fixtures built on them are in conftest.py."""

from __future__ import annotations

import numpy as np


def assert_reflected(padded: np.ndarray, image: np.ndarray) -> None:
    """``padded`` (..., H', W') is ``image`` (..., H, W) padded at the bottom/right by reflection
    (about the edge pixel or about the edge, both reflections; zeros or edge copies fail)."""
    height, width = image.shape[-2:]
    pads = [(0, 0)] * (image.ndim - 2) + [
        (0, padded.shape[-2] - height),
        (0, padded.shape[-1] - width),
    ]
    assert padded.shape[-2] > height or padded.shape[-1] > width, "nothing was padded"
    errors = {
        mode: float(np.abs(padded - np.pad(image, pads, mode=mode)).max())
        for mode in ("symmetric", "reflect")
    }
    assert min(errors.values()) < 1e-4, f"padding is no reflection: max differences {errors}"
