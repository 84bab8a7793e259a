"""Tests of the evaluation figures and the HTML report: readable, non-trivial, class colours."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from s2landcover.classes import ClassTable, hex_to_rgb
from s2landcover.config import validate_config
from s2landcover.evaluate import area_metrics, confusion_counts
from s2landcover.plots import (
    SampleChip,
    class_rgb,
    confusion_matrix_figure,
    figure_png,
    overview_figure,
    percentile_limits,
    row_normalised,
    sample_chips_figure,
    training_curves_figure,
    true_colour,
)
from s2landcover.report import WHOLE_SCENE_NOTE, report_html

CLASSES = ClassTable.from_config(validate_config({})["classes"])
K = CLASSES.num_classes
NAMES = list(CLASSES.names)


def figure_texts(figure) -> list[str]:
    """Every text drawn in a figure: titles, tick labels, annotations, legend entries."""
    figure.canvas.draw()
    return [t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_text"))]


def png_pixels(png: bytes) -> np.ndarray:
    """(h, w, 3) uint8 pixels of PNG bytes."""
    return (imread(io.BytesIO(png))[..., :3] * 255).round().astype(np.uint8)


def pixel_at_axes_centre(figure, axes, pixels: np.ndarray, dx: float = 0.5) -> np.ndarray:
    """Colour of the rendered PNG at a point of an axes (``dx``: fraction of the axes width)."""
    box = axes.get_position()  # figure fraction, origin bottom left
    height, width = pixels.shape[:2]
    col = int((box.x0 + dx * box.width) * width)
    row = int((1 - (box.y0 + 0.5 * box.height)) * height)
    return pixels[row, col]


def test_percentile_limits_use_valid_pixels_only():
    rng = np.random.default_rng(0)
    reflectance = rng.uniform(0.02, 0.2, (3, 50, 50)).astype(np.float32)
    valid = np.ones((50, 50), dtype=bool)
    valid[:, :25] = False
    reflectance[:, ~valid] = -0.1  # stored 0 (no data) with the L2A offset
    limits = percentile_limits(reflectance, valid)
    for band in range(3):
        expected = np.percentile(reflectance[band][valid], [2, 98])
        np.testing.assert_allclose(limits[band], expected)
    image = true_colour(reflectance, valid, limits)
    assert image.shape == (50, 50, 3)
    assert (image[~valid] == 1.0).all()  # no data white
    shown = image[valid]
    assert 0.3 < np.median(shown) < 0.7  # neither black nor saturated
    assert (shown <= 0.0).mean() < 0.05 and (shown >= 1.0).mean() < 0.05


def test_percentile_limits_of_empty_scene_fall_back():
    limits = percentile_limits(np.zeros((3, 4, 4)), np.zeros((4, 4), dtype=bool))
    assert (limits[:, 1] > limits[:, 0]).all()


def test_class_rgb_uses_class_table_colours():
    labels = np.array([[0, 1, 2], [3, 4, 255]], dtype=np.uint8)
    image = class_rgb(labels, CLASSES)
    for value in (1, 2, 3, 4):
        r, c = np.argwhere(labels == value)[0]
        expected = np.array(hex_to_rgb(CLASSES.colors[value - 1])) / 255
        np.testing.assert_allclose(image[r, c], expected)
    np.testing.assert_allclose(image[0, 0], 1.0)  # no data white
    np.testing.assert_allclose(image[1, 2], 1.0)  # unknown value white


def test_confusion_matrix_figure_shows_names_and_row_shares():
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 500, (K, K))
    counts[2] = 0  # a class without reference pixels
    figure = confusion_matrix_figure({"validation chips": counts, "test chips": counts.T}, NAMES)
    texts = figure_texts(figure)
    assert all(name in texts for name in NAMES)
    shares = row_normalised(counts)
    assert f"{shares[0, 0]:.2f}" in texts
    np.testing.assert_allclose(np.nansum(shares, axis=1)[[0, 1, 3]], 1.0)
    assert np.isnan(shares[2]).all()
    pixels = png_pixels(figure_png(figure))
    assert pixels.std() > 10  # not a uniform image


def test_sample_chips_figure_colours_and_legend():
    size = 30
    samples = []
    for index in (1, 4, 6):
        reference = np.full((size, size), index, dtype=np.uint8)
        prediction = np.full((size, size), index % K + 1, dtype=np.uint8)
        rgb = np.random.default_rng(index).uniform(0, 1, (size, size, 3))
        samples.append(SampleChip(f"chip {index}", rgb, reference, prediction))
    figure = sample_chips_figure(samples, CLASSES)
    texts = figure_texts(figure)
    assert all(f"{i} {name}" in texts for i, name in enumerate(NAMES, start=1))
    assert "no data" in texts
    assert "ground truth" in texts
    png = figure_png(figure)
    pixels = png_pixels(png)
    axes = figure.axes
    for row, index in enumerate((1, 4, 6)):
        truth = pixel_at_axes_centre(figure, axes[3 * row + 1], pixels)
        predicted = pixel_at_axes_centre(figure, axes[3 * row + 2], pixels)
        np.testing.assert_allclose(truth, hex_to_rgb(CLASSES.colors[index - 1]), atol=2)
        np.testing.assert_allclose(predicted, hex_to_rgb(CLASSES.colors[index % K]), atol=2)


def test_overview_figure_panels_keep_class_colours():
    prediction = np.repeat(np.arange(1, K + 1, dtype=np.uint8), 20)[None, :].repeat(40, axis=0)
    reference = np.full_like(prediction, 2)
    rgb = np.full((*prediction.shape, 3), 0.5)
    figure = overview_figure(rgb, prediction, reference, CLASSES, title="scene x")
    texts = figure_texts(figure)
    assert "scene x" in texts and "reference mask" in texts and "1 Forest" in texts
    pixels = png_pixels(figure_png(figure))
    first = pixel_at_axes_centre(figure, figure.axes[1], pixels, dx=0.5 / K)
    np.testing.assert_allclose(first, hex_to_rgb(CLASSES.colors[0]), atol=2)
    last = pixel_at_axes_centre(figure, figure.axes[1], pixels, dx=1 - 0.5 / K)
    np.testing.assert_allclose(last, hex_to_rgb(CLASSES.colors[-1]), atol=2)
    ref = pixel_at_axes_centre(figure, figure.axes[2], pixels)
    np.testing.assert_allclose(ref, hex_to_rgb(CLASSES.colors[1]), atol=2)


def test_training_curves_tolerate_missing_columns():
    table = pd.DataFrame(
        {"epoch": [1, 2, 3], "train_loss": [1.0, 0.7, 0.5], "val_iou_Forest": [0.2, 0.4, 0.5]}
    )
    figure = training_curves_figure(table, NAMES, CLASSES.colors)
    texts = figure_texts(figure)
    assert "train loss" in texts and "Forest" in texts
    assert "not recorded" in texts  # the val mIoU / accuracy panel has nothing to draw
    line = next(line for line in figure.axes[2].get_lines() if line.get_label() == "Forest")
    assert line.get_color() == CLASSES.colors[0]
    assert png_pixels(figure_png(figure)).std() > 10


def test_report_html_gathers_numbers_note_and_images():
    rng = np.random.default_rng(4)
    reference = rng.integers(0, K + 1, (40, 40))
    prediction = rng.integers(0, K + 1, (40, 40))
    area = area_metrics(confusion_counts(reference, prediction, K), NAMES)
    metrics = {
        "classes": [
            {"index": i + 1, "name": n, "color": c}
            for i, (n, c) in enumerate(zip(NAMES, CLASSES.colors, strict=True))
        ],
        "areas": {"val": area, "test": area, "train": area, "whole_scene": area},
        "scenes": {"demo": {"val": area, "test": area, "whole_scene": area}},
    }
    figure = confusion_matrix_figure({"val": np.asarray(area["confusion_matrix"])}, NAMES)
    png = figure_png(figure)
    html = report_html(
        metrics, {"confusion_matrix.png": png, "overview_demo.png": png}, title="run"
    )
    assert WHOLE_SCENE_NOTE in html
    assert f"{area['miou']:.3f}" in html
    assert "Whole scene (includes training areas)" in html
    assert all(name in html for name in NAMES)
    embedded = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(embedded) == 2 and base64.b64decode(embedded[0]) == png


def test_report_html_shows_dash_for_undefined_metrics():
    empty = area_metrics(np.zeros((K + 1, K + 1), dtype=np.int64), NAMES)
    assert np.isnan(empty["miou"])
    html = report_html({"areas": {"val": empty}}, {}, title="empty")
    assert "&ndash;" in html


@pytest.mark.parametrize("k", [2, 12])
def test_confusion_matrix_figure_scales_with_class_count(k):
    names = [f"class number {i}" for i in range(1, k + 1)]
    figure = confusion_matrix_figure({"val": np.eye(k, dtype=int) * 10 + 1}, names)
    texts = figure_texts(figure)
    assert all(name in texts for name in names)
    assert png_pixels(figure_png(figure)).std() > 10
