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

Two forms of the one affine map stored -> network input: :func:`to_network_input` returns a new
band-first array (training, classification), :func:`network_input_into` writes straight into a
caller's channels-last buffer in one fused pass ``stored * gain + bias`` (whole-scene prediction,
which reuses its batch buffers: no float copy of the scene's rows). Both take the validity of
:func:`valid_pixels`; they agree to float32 rounding (tests/test_radiometry.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


def valid_pixels(stored: np.ndarray, nodata: float | None) -> np.ndarray:
    """Bool (...) of the pixels with data: some band differs from ``nodata`` (all True when None).

    The one no-data rule (see the module docstring); :func:`nodata_pixels` is its complement.
    """
    if nodata is None:
        return np.ones(stored.shape[1:], dtype=bool)
    if (
        np.issubdtype(stored.dtype, np.integer)
        and float(nodata).is_integer()
        and np.iinfo(stored.dtype).min <= nodata <= np.iinfo(stored.dtype).max
    ):
        # the same rule in the stored integer type, band by band: NumPy would compare a Python
        # float with integer values in float64 through a (C, ...) temporary, 3x slower
        value = stored.dtype.type(int(nodata))
        valid = np.not_equal(stored[0], value)
        differs = np.empty_like(valid)
        for band in stored[1:]:
            np.logical_or(valid, np.not_equal(band, value, out=differs), out=valid)
        return valid
    return (stored != nodata).any(axis=0)


def nodata_pixels(stored: np.ndarray, nodata: float | None) -> np.ndarray:
    """Bool (...) of the pixels where every band equals ``nodata`` (all False when None)."""
    return ~valid_pixels(stored, nodata)


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
    valid = valid_pixels(stored, nodata)
    if nodata is not None:
        np.copyto(image, np.float32(0), where=~valid[None])
    return image, valid


@dataclass(frozen=True)
class InputNormalization:
    """How a scene's stored values become network input: the scene's GDAL scales/offsets per band
    (stored -> reflectance), the model's per-band mean/std of reflectance (-> standard scores) and
    the scene's nodata value (None: every pixel has data)."""

    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    nodata: float | None

    def gain_bias(self) -> tuple[np.ndarray, np.ndarray]:
        """(gain, bias), float32 per band: network input = stored * gain + bias, that is
        ``(stored * scale + offset - mean) / std`` with gain = scale / std and bias =
        (offset - mean) / std (computed in float64, then rounded once)."""
        std = np.asarray(self.std, dtype=np.float64)
        gain = np.asarray(self.scales, dtype=np.float64) / std
        bias = (np.asarray(self.offsets, dtype=np.float64) - np.asarray(self.mean)) / std
        return gain.astype(np.float32), bias.astype(np.float32)


def network_input_into(
    stored: np.ndarray,
    gain: np.ndarray,
    bias: np.ndarray,
    out: np.ndarray,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Network input of stored values (C, h, w) written into ``out`` (h, w, C) float32, in place.

    One fused pass ``stored * gain + bias`` (:meth:`InputNormalization.gain_bias`) straight from
    the stored integers into the caller's (reused) channels-last buffer: no float copy of
    ``stored``. ``valid`` (h, w) from :func:`valid_pixels`: pixels without data are set to 0, the
    band mean, as in :func:`to_network_input` (None: all pixels have data). Returns ``out``.
    """
    np.multiply(stored.transpose(1, 2, 0), gain, out=out, casting="unsafe")
    out += bias
    if valid is not None:
        out *= valid[:, :, None]
    return out
