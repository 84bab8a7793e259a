"""Figures of the evaluation: confusion matrix, training curves, sample chips, scene overviews.

Functions take arrays and plain values and return :class:`matplotlib.figure.Figure` objects drawn
with the Agg canvas (no display, no pyplot global state); :func:`figure_png` turns one into PNG
bytes, which :mod:`s2landcover.io.evaluation_io` writes. Class colours always come from the class
table of the config (index 0 = no data, drawn white).
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from s2landcover.classes import ClassTable

NODATA_LABEL = "no data"
FALLBACK_LIMITS = (0.0, 0.3)  # reflectance range shown when a scene has no valid pixel
SIDE_BY_SIDE_CLASSES = 7  # more classes: confusion matrix panels stacked vertically


def new_figure(width: float, height: float) -> Figure:
    """A ``width`` x ``height`` inch figure on an Agg canvas (renders without a display)."""
    figure = Figure(figsize=(width, height), facecolor="white")
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes (white background)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


# --- images ---------------------------------------------------------------------------------------


def percentile_limits(
    reflectance: np.ndarray, valid: np.ndarray, low: float = 2.0, high: float = 98.0
) -> np.ndarray:
    """(3, 2) per-band (low, high) percentiles of reflectance over the valid pixels only.

    No-data pixels would otherwise drag the low end to the fill value and make the image pale.
    """
    limits = np.empty((reflectance.shape[0], 2), dtype=float)
    for band in range(reflectance.shape[0]):
        values = reflectance[band][valid]
        if values.size == 0:
            limits[band] = FALLBACK_LIMITS
            continue
        lo, hi = np.percentile(values, [low, high])
        limits[band] = (lo, hi if hi > lo else lo + 1e-6)
    return limits


def true_colour(reflectance: np.ndarray, valid: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """(h, w, 3) image in 0..1 of (3, h, w) red/green/blue reflectance stretched to ``limits``.

    No-data pixels are white, like no data in the class maps.
    """
    lo = limits[:, 0][:, None, None]
    hi = limits[:, 1][:, None, None]
    image = np.clip((reflectance - lo) / (hi - lo), 0.0, 1.0).transpose(1, 2, 0)
    image[~valid] = 1.0
    return image


def class_rgb(labels: np.ndarray, classes: ClassTable) -> np.ndarray:
    """(h, w, 3) image of class indices in the class table's colours (0 and unknown: white)."""
    palette = classes.rgb_array()
    index = np.where(labels <= classes.num_classes, labels, 0).astype(np.intp)
    return palette[index]


def legend_handles(classes: ClassTable, with_nodata: bool = True) -> list[Patch]:
    """Legend patches: one per class in its colour, then no data (white, outlined)."""
    handles = [
        Patch(facecolor=color, edgecolor="0.3", label=f"{index} {name}")
        for index, name, color in zip(classes.indices, classes.names, classes.colors, strict=True)
    ]
    if with_nodata:
        handles.append(Patch(facecolor="white", edgecolor="0.3", label=NODATA_LABEL))
    return handles


def _add_legend(figure: Figure, classes: ClassTable) -> None:
    handles = legend_handles(classes)
    ncol = _legend_columns(len(handles))
    figure.legend(
        handles=handles,
        loc="lower center",
        ncol=ncol,
        frameon=False,
        fontsize=10,
        bbox_to_anchor=(0.5, 0.005),
        handlelength=1.6,
        handleheight=1.2,
    )


def _legend_columns(entries: int, most: int = 5) -> int:
    # As few rows as possible with at most ``most`` entries each, rows balanced.
    return math.ceil(entries / math.ceil(entries / most))


def _legend_height(classes: ClassTable) -> float:
    entries = classes.num_classes + 1
    rows = math.ceil(entries / _legend_columns(entries))
    return 0.3 + 0.28 * rows


def _show(axes, image: np.ndarray, title: str | None = None) -> None:
    axes.imshow(image, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    if title:
        axes.set_title(title, fontsize=10)


# --- figures --------------------------------------------------------------------------------------


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Confusion matrix divided by its row sums (share of each reference class); empty rows NaN."""
    matrix = np.asarray(matrix, dtype=float)
    sums = matrix.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sums > 0, matrix / sums, np.nan)


def confusion_matrix_figure(
    matrices: Mapping[str, np.ndarray], class_names: Sequence[str]
) -> Figure:
    """Row-normalised confusion matrices (a panel per area), class names on the axes, values shown.

    ``matrices`` maps a panel title to a K x K count matrix (rows = reference, cols = prediction).
    A reference class without pixels shows as a grey row. Panels sit side by side for up to
    :data:`SIDE_BY_SIDE_CLASSES` classes and one above the other beyond, so that cells keep a
    readable size; long class names wrap.
    """
    k = len(class_names)
    labels = [textwrap.fill(name, 20) for name in class_names]
    panels = list(matrices.items())
    columns = len(panels) if k <= SIDE_BY_SIDE_CLASSES else 1
    rows = math.ceil(len(panels) / columns)
    cell = 0.55  # inches
    label_space = 0.9 + 0.07 * max(len(line) for label in labels for line in label.split("\n"))
    label_space = max(label_space, 0.9 + 0.05 * max(len(name) for name in class_names))
    panel_side = cell * k + label_space
    figure = new_figure(columns * panel_side + 1.2, rows * (panel_side + 0.5) + 0.5)
    figure.set_layout_engine("constrained")
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    image = None
    for position, axes in enumerate(axes_grid.ravel()):
        if position >= len(panels):
            axes.set_visible(False)
            continue
        title, counts = panels[position]
        shares = row_normalised(counts)
        image = axes.imshow(np.ma.masked_invalid(shares), cmap="Blues", vmin=0, vmax=1)
        axes.set_facecolor("0.85")
        for r in range(k):
            for c in range(k):
                if np.isfinite(shares[r, c]):
                    axes.text(
                        c,
                        r,
                        f"{shares[r, c]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if shares[r, c] > 0.55 else "black",
                    )
        axes.set_xticks(
            range(k), class_names, rotation=45, ha="right", rotation_mode="anchor", fontsize=9
        )
        axes.set_yticks(range(k), labels, fontsize=9)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("reference class")
        axes.set_title(f"{title}: {int(np.asarray(counts).sum()):,} px", fontsize=10)
    if image is not None:
        colorbar = figure.colorbar(image, ax=axes_grid.ravel().tolist(), shrink=0.8 / rows)
        colorbar.set_label("share of the reference class")
    figure.suptitle("Confusion matrix, normalised by reference class (rows sum to 1)", fontsize=11)
    return figure


BASELINE_STYLES = {  # series name -> (label, bar colour)
    "model": ("model", "#2b6cb0"),
    "pixel": ("pixel baseline", "#a0a0a0"),
    "majority": ("majority class", "#e0b000"),
}


def baseline_comparison_figure(
    series: Mapping[str, Mapping[str, Mapping[str, float]]], class_names: Sequence[str]
) -> Figure:
    """IoU per class and mIoU of the model beside the baselines, a panel per area.

    ``series`` maps an area title to ``{series name: {class name or "mIoU": IoU}}`` with series
    names from :data:`BASELINE_STYLES` (``model``, ``pixel``, ``majority``); a missing or NaN value
    draws no bar. Bars are grouped by class, the mIoU group last.
    """
    groups = [*class_names, "mIoU"]
    figure = new_figure(max(6.0, 1.0 + 0.9 * len(groups)) * len(series) ** 0.5 + 1, 3.6)
    axes_list = figure.subplots(1, max(1, len(series)), squeeze=False).ravel()
    if not series:  # neither a validation nor a test area with pixels: nothing to compare on
        axes_list[0].set_axis_off()
        axes_list[0].text(0.5, 0.5, "no validation or test pixels", ha="center", va="center")
    for axes, (title, by_series) in zip(axes_list, series.items(), strict=False):
        names = [n for n in BASELINE_STYLES if n in by_series]
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            label, color = BASELINE_STYLES[name]
            values = [by_series[name].get(g, math.nan) for g in groups]
            positions = np.arange(len(groups)) + (i - (len(names) - 1) / 2) * width
            axes.bar(positions, np.nan_to_num(values, nan=0.0), width, label=label, color=color)
        axes.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize=9)
        axes.set_ylim(0, 1.15)  # room for the legend above the bars
        axes.set_yticks(np.linspace(0, 1, 6))
        axes.set_ylabel("IoU")
        axes.set_title(title, fontsize=10)
        axes.grid(axis="y", alpha=0.3)
        axes.legend(fontsize=8, loc="upper center", ncols=len(names), frameon=False)
    figure.suptitle("The model beside the baselines, on the same pixels", fontsize=11)
    figure.set_layout_engine("constrained")
    return figure


def training_curves_figure(
    table: pd.DataFrame, class_names: Sequence[str], colors: Sequence[str] = ()
) -> Figure:
    """Curves of ``metrics.csv`` (a row per epoch): losses, val mIoU / accuracy, per-class IoU.

    Missing columns are skipped (a panel says so when it has nothing to draw). ``colors`` gives the
    class colours for the per-class lines.
    """
    epochs = table["epoch"].to_numpy() if "epoch" in table.columns else np.arange(1, len(table) + 1)
    figure = new_figure(15, 4.3)
    axes = figure.subplots(1, 3)

    def plot(ax, column: str, label: str, **style) -> bool:
        if column not in table.columns or table[column].isna().all():
            return False
        ax.plot(
            epochs, table[column].to_numpy(dtype=float), "o-", label=label, markersize=3, **style
        )
        return True

    panels = [
        (axes[0], "loss", [("train_loss", "train loss"), ("val_loss", "validation loss")]),
        (axes[1], "validation score", [("val_miou", "mIoU"), ("val_accuracy", "overall accuracy")]),
    ]
    for ax, ylabel, columns in panels:
        drawn = [plot(ax, column, label) for column, label in columns]
        _finish_curve_axes(ax, ylabel, any(drawn), epochs)
    _loss_scale(axes[0], table)
    drawn = []
    for i, name in enumerate(class_names):
        style = {"color": colors[i]} if i < len(colors) else {}
        drawn.append(plot(axes[2], f"val_iou_{name}", name, **style))
    _finish_curve_axes(axes[2], "validation IoU per class", any(drawn), epochs)
    axes[1].set_ylim(0, 1)
    axes[2].set_ylim(0, 1)
    figure.suptitle("Training curves (metrics.csv)", fontsize=11)
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.13, top=0.88, wspace=0.22)
    return figure


def _loss_scale(ax, table: pd.DataFrame) -> None:
    """Log scale on the loss axis when every loss is positive (one validation spike then does not
    flatten the rest); otherwise the axis is clipped to the losses' 1-95 % percentile range
    widened by a quarter, so a spike runs off the top."""
    values = np.concatenate(
        [table[c].to_numpy(dtype=float) for c in ("train_loss", "val_loss") if c in table.columns]
        or [np.array([])]
    )
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    if (values > 0).all():
        ax.set_yscale("log")
        ax.set_ylabel("loss (log scale)")
        return
    low, high = np.percentile(values, [1, 95])
    pad = 0.25 * (high - low) or 1.0
    ax.set_ylim(low - pad, high + pad)
    ax.set_ylabel("loss (clipped at the 95th percentile)")


def _finish_curve_axes(ax, ylabel: str, drawn: bool, epochs: np.ndarray) -> None:
    ax.set_xlabel("epoch")
    if 0 < len(epochs) <= 15:  # few epochs (a single one too): a tick on each, nothing between
        ax.set_xticks(epochs)
        ax.set_xlim(float(np.min(epochs)) - 0.5, float(np.max(epochs)) + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(
            0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="0.4"
        )


@dataclass
class SampleChip:
    """A chip to show: title, true-colour image (h, w, 3 in 0..1), both class maps (h, w)."""

    title: str
    true_colour: np.ndarray
    reference: np.ndarray
    prediction: np.ndarray


def chip_accuracy(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Share of pixels with reference and prediction both not 0 that agree (NaN when none)."""
    valid = (reference > 0) & (prediction > 0)
    return float((reference[valid] == prediction[valid]).mean()) if valid.any() else float("nan")


def sample_chips_figure(
    samples: Sequence[SampleChip], classes: ClassTable, split: str = "val"
) -> Figure:
    """One row per chip: Sentinel-2 true colour | ground truth | prediction, with a class legend."""
    legend = _legend_height(classes)
    panel = 2.7
    rows = max(1, len(samples))
    figure = new_figure(3 * panel + 0.4, rows * (panel + 0.35) + legend + 1.0)
    axes = np.atleast_2d(figure.subplots(rows, 3, squeeze=False))
    if not samples:
        for ax in axes[0]:
            ax.set_axis_off()
        axes[0, 1].text(0.5, 0.5, "no chips to show", ha="center", va="center")
    for row, sample in enumerate(samples):
        accuracy = chip_accuracy(sample.reference, sample.prediction)
        _show(axes[row, 0], sample.true_colour, f"{sample.title}\ntrue colour (B04 B03 B02)")
        _show(axes[row, 1], class_rgb(sample.reference, classes), "ground truth")
        text = "prediction" if math.isnan(accuracy) else f"prediction ({accuracy:.0%} agree)"
        _show(axes[row, 2], class_rgb(sample.prediction, classes), text)
    height = figure.get_figheight()
    figure.subplots_adjust(
        left=0.02,
        right=0.98,
        top=1 - 0.95 / height,
        bottom=(legend + 0.05) / height,
        hspace=0.35,
        wspace=0.05,
    )
    figure.suptitle(
        f"Sample {split} chips (true colour: 2-98 % stretch of the scene's valid pixels)",
        fontsize=11,
        y=1 - 0.15 / height,
    )
    _add_legend(figure, classes)
    return figure


def overview_figure(
    true_colour_image: np.ndarray,
    prediction: np.ndarray,
    reference: np.ndarray,
    classes: ClassTable,
    title: str,
) -> Figure:
    """A whole scene, decimated: true colour | prediction | reference mask, with a class legend."""
    rows, cols = prediction.shape
    legend = _legend_height(classes)
    panel_width = 5.0
    panel_height = panel_width * rows / max(cols, 1)
    figure = new_figure(3 * panel_width + 0.4, panel_height + legend + 0.9)
    axes = figure.subplots(1, 3)
    _show(axes[0], true_colour_image, "true colour (B04 B03 B02)")
    _show(axes[1], class_rgb(prediction, classes), "prediction")
    _show(axes[2], class_rgb(reference, classes), "reference mask")
    height = figure.get_figheight()
    figure.subplots_adjust(
        left=0.01, right=0.99, top=1 - 0.7 / height, bottom=(legend + 0.05) / height, wspace=0.04
    )
    figure.suptitle(title, fontsize=12)
    _add_legend(figure, classes)
    return figure
