"""Radiometry and validity: stored band values -> reflectance -> network input, one no-data rule.

One place for the arithmetic every stage that looks at band values shares (training, prediction,
the pixel classifier, evaluation's true-colour figures):

- **reflectance** = stored * scale + offset, per band, with the GDAL scale/offset the scene stack
  records (L2A baseline >= 04.00: scale 1e-4, offset -0.1; data at x1000: scale 1e-3);
- **network input** = (reflectance - mean) / std with the training split's per-band statistics;
- **no data**: a pixel is no data where *every* band holds the stack's nodata value. One band at
  the nodata value is a valid (dark) observation: ingest keeps valid zeros off the nodata value, so
  a zero in one band only is real data, and treating it as missing would punch holes in water and
  shadows. Clouds are not no data: they are the validity raster's business
  (:mod:`s2landcover.validity`).

All functions take band-first arrays (C, ...) and return float32; units are reflectance (0..1,
slightly negative for dark pixels with the baseline-04.00 offset) or standard scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _per_band(values: Sequence[float], ndim: int) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape((-1,) + (1,) * (ndim - 1))


def to_reflectance(
    stored: np.ndarray, scales: Sequence[float], offsets: Sequence[float]
) -> np.ndarray:
    """Stored values (C, ...) -> reflectance float32: ``stored * scale + offset`` per band."""
    image = stored.astype(np.float32)
    image *= _per_band(scales, stored.ndim)
    image += _per_band(offsets, stored.ndim)
    return image


def nodata_pixels(stored: np.ndarray, nodata: float | None) -> np.ndarray:
    """Bool (...) of the pixels where every band equals ``nodata`` (all False when None)."""
    if nodata is None:
        return np.zeros(stored.shape[1:], dtype=bool)
    return (stored == nodata).all(axis=0)


def to_network_input(
    stored: np.ndarray,
    scales: Sequence[float],
    offsets: Sequence[float],
    mean: Sequence[float],
    std: Sequence[float],
    nodata: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stored values (C, H, W) -> (network input float32 (C, H, W), valid bool (H, W)).

    Input = (stored * scale + offset - mean) / std, computed in place on one float32 copy (this
    runs on every band of rows of a scene); no-data pixels are set to 0, the band mean.
    """
    image = to_reflectance(stored, scales, offsets)
    image -= _per_band(mean, image.ndim)
    image /= _per_band(std, image.ndim)
    valid = ~nodata_pixels(stored, nodata)
    if nodata is not None:
        np.copyto(image, np.float32(0), where=~valid[None])
    return image, valid
