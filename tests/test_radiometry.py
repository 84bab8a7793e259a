"""Radiometry and validity: one arithmetic and one no-data rule for every stage."""

from __future__ import annotations

import numpy as np

from s2landcover.radiometry import (
    InputNormalization,
    network_input_into,
    nodata_pixels,
    to_network_input,
    to_reflectance,
    valid_pixels,
)


def test_reflectance_uses_each_bands_own_scale_and_offset() -> None:
    stored = np.array([[[1000, 2000]], [[1000, 2000]], [[500, 0]]], dtype=np.uint16)
    reflectance = to_reflectance(stored, [1e-4, 1e-3, 1e-4], [-0.1, 0.0, 0.0])
    assert reflectance.dtype == np.float32
    np.testing.assert_allclose(reflectance[:, 0, 0], [0.0, 1.0, 0.05], atol=1e-6)
    np.testing.assert_allclose(reflectance[:, 0, 1], [0.1, 2.0, 0.0], atol=1e-6)
    np.testing.assert_array_equal(stored[:, 0, 0], [1000, 1000, 500])  # input untouched


def test_no_data_is_every_band_at_the_nodata_value_not_one() -> None:
    stored = np.array([[[0, 0, 5]], [[0, 7, 5]]], dtype=np.uint16)
    np.testing.assert_array_equal(nodata_pixels(stored, 0), [[True, False, False]])
    assert not nodata_pixels(stored, None).any()


def test_network_input_standardises_and_zeroes_no_data() -> None:
    rng = np.random.default_rng(0)
    stored = rng.integers(1, 10000, (4, 5, 6), dtype=np.uint16)
    stored[:, 0, 0] = 0
    stored[2, 1, 1] = 0  # one band at the nodata value: still valid data
    scales, offsets = [1e-4, 1e-4, 2e-4, 1e-3], [-0.1, 0.0, 0.0, 0.0]
    mean, std = [0.1, 0.2, 0.3, 0.4], [0.05, 0.1, 0.2, 0.3]
    image, valid = to_network_input(stored, scales, offsets, mean, std, nodata=0)
    expected = (
        stored * np.array(scales)[:, None, None]
        + np.array(offsets)[:, None, None]
        - np.array(mean)[:, None, None]
    ) / np.array(std)[:, None, None]
    assert not valid[0, 0] and valid[1, 1] and valid.sum() == 29
    np.testing.assert_allclose(image[:, valid], expected[:, valid], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(image[:, 0, 0], 0)


def test_input_into_a_buffer_agrees_with_the_array_form_and_writes_in_place() -> None:
    rng = np.random.default_rng(1)
    stored = rng.integers(1, 10000, (4, 6, 7), dtype=np.uint16)
    stored[:, 2, 3] = 0
    stored[1, 4, 4] = 0  # one band at the nodata value: valid
    norm = InputNormalization(
        (1e-4, 1e-4, 2e-4, 1e-3),
        (-0.1, 0.0, 0.0, -0.1),
        (0.1, 0.2, 0.3, 0.4),
        (0.05, 0.1, 0.2, 0.3),
        0,
    )
    expected, valid = to_network_input(stored, *map(list, (norm.scales, norm.offsets)),
                                       norm.mean, norm.std, norm.nodata)  # fmt: skip
    np.testing.assert_array_equal(valid, valid_pixels(stored, 0))
    buffer = np.full((2, 6, 7, 4), np.nan, dtype=np.float32)  # a reused batch buffer
    gain, bias = norm.gain_bias()
    written = network_input_into(stored, gain, bias, buffer[1], valid)
    assert written.base is buffer  # no copy: the caller's buffer holds the result
    np.testing.assert_allclose(buffer[1].transpose(2, 0, 1), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(buffer[1][2, 3], 0)
    assert np.isnan(buffer[0]).all()  # the rest of the buffer untouched
