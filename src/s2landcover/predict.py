"""Whole-scene prediction: overlapping windows, blended logits, streamed to a land-cover COG.

A scene (the stack of ``results/scenes/{scene}.tif``) is cut into windows of at most ``window``
pixels (``auto``: 1,024, each axis fitted to the smallest multiple of 32 that needs no more
windows) whose neighbours share ``2 * margin`` pixels (64 by default), or, with ``overlap`` set,
into square windows that share that fraction (the former grid; ``window: null`` = the tile size
rounded up to 32). Every window's logits are weighted by a smooth window
(Hann by default: high in the centre, near zero at the edges) and summed; each pixel's blended
logits are the weighted mean over the windows covering it, so the class of a pixel near a window
edge is decided mostly by the neighbouring window that sees it near its centre: no seams.

Edges: the last window of a row or column is shifted inside the scene (it overlaps its neighbour
more) instead of reaching past the scene and being zero-padded; only a scene smaller than a window
along an axis is padded, by reflection, up to the next multiple of 32. Pixels where every band holds
the scene's no-data value are set to 0 after normalisation (the band mean, as in training) and get
class 0 in the output.

Streaming: windows are visited row by row. A reader thread reads one band of rows (window height x
scene width) per window row (GDAL decoding its compressed blocks on ``readers`` threads), normalises
it once, band-first, and cuts it into channels-last windows, batched (the normalisation by blocks
of rows and the window copies run on ``readers`` threads too); on a CUDA device the reader only
decodes each band of rows into one of 4 pinned host buffers and masks its pixels without data,
and the band goes to the device whole (copied without blocking), where the windows are cut,
batched, normalised and put channels-last (:func:`device_window_batches`). The main thread runs the
network (``torch.inference_mode``; bf16/fp16 autocast and channels_last where they pay) and adds
the weighted logits into a row-band accumulator (K x window height x scene width, float32, on the
inference device; on a CPU only the strips windows share: :class:`HostStripAccumulator`). When
the next window row starts at row r, every row above r is final: its classes (argmax + 1) go to
a writer thread that streams them, with their overviews, into a tiled GeoTIFF, copied to a COG
at the end. Peak memory therefore grows with the window and the scene width, never with the scene
height: about ``4 * (K + 1) * window * width`` bytes for the accumulator (on a CPU the shared
strips only), ``(2 + 4) * C * window * width`` for the read and normalised row band (on CUDA
``4 * 2 * C * window * width``: the 4 pinned bands of stored values), the queued batches (on a
CPU at most 2^20 window pixels each: :func:`effective_batch_size`; on CUDA none on the host) and
the network's activations.

Logit channel ``i`` is class ``i + 1``; the output holds 1..K and 0 where the scene has no data.

With a validity raster (:mod:`s2landcover.validity`, ``validity_path``), pixels it codes cloud,
cloud shadow, cirrus or no data (where the scene has data) are written as
:data:`~s2landcover.classes.NOT_OBSERVED` (255, "Not observed", its own colour in the colour table
and category names) and get confidence 0: the network's class there would describe the cloud.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch import nn

from s2landcover.classes import NOT_OBSERVED, ClassTable
from s2landcover.devices import choose_device
from s2landcover.errors import InputError
from s2landcover.inference_backends import network_for_backend
from s2landcover.radiometry import InputNormalization, valid_pixels
from s2landcover.windows import window_starts

log = logging.getLogger(__name__)

SIDE_MULTIPLE = 32  # smp U-Nets (5 down-samplings) need sides divisible by 32
BLEND_KINDS = ("hann", "cosine", "uniform")
CONFIDENCE_SUFFIX = "_confidence"


# --------------------------------------------------------------------------------------------
# Window grid and blend weights


def round_up(value: int, multiple: int = SIDE_MULTIPLE) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


# ``prediction.window: auto``: the largest window side on each device kind (px). A U-Net is fully
# convolutional: windows need not be the size of the training chips, and larger windows waste less
# work on overlaps (docs/benchmarks/predict.md measures 512 / 768 / 1024 on this project's CPU).
AUTO_WINDOW = {"cpu": 1024, "cuda": 1024}
# ``prediction.margin`` default: context (px) every pixel has on all sides in at least one window.
DEFAULT_MARGIN = 64


def window_side(
    prediction_cfg: Mapping[str, Any], tile_size: int, device: torch.device | str = "cpu"
) -> int:
    """Largest window side in pixels, a multiple of 32.

    ``prediction.window``: an integer (rounded up to 32); null: the model's tile size rounded up
    to 32 (300 -> 320, the behaviour before ``auto``); ``auto`` (the default):
    :data:`AUTO_WINDOW` of the device kind (the grid may then use a smaller side per axis that
    covers the scene with as many windows: :func:`fitted_window`).
    """
    window = prediction_cfg["window"]
    if window == "auto":
        return AUTO_WINDOW.get(torch.device(device).type, AUTO_WINDOW["cpu"])
    if isinstance(window, str):
        raise InputError(f"prediction.window is {window!r}; expected an integer, null or 'auto'")
    return round_up(int(window or tile_size))


def window_stride(window: int, overlap: float) -> int:
    """Distance between window starts for an overlap fraction (0 = windows touch)."""
    if not 0 <= overlap < 1:
        raise InputError(f"prediction.overlap is {overlap}; expected a fraction in [0, 1)")
    return max(1, round(window * (1 - overlap)))


def margin_stride(window: int, margin: int) -> int:
    """Distance between window starts when neighbouring windows share ``2 * margin`` px: every
    pixel then lies at least ``margin`` px inside one of the windows covering it."""
    if margin < 0 or 2 * margin >= window:
        raise InputError(
            f"prediction.margin is {margin} px; expected 0 <= margin < window / 2 = {window // 2}"
        )
    return window - 2 * margin


def fitted_window(length: int, window: int, margin: int) -> int:
    """The smallest side (a multiple of 32, <= ``window``) that covers an axis of ``length`` px
    with as few windows as ``window`` itself does, neighbours sharing ``2 * margin`` px.

    A 1,500 px axis needs two 1,024 px windows at margin 64 (they would share 548 px); two windows
    of 832 px cover it sharing 164 px: 1.11x the axis instead of 1.37x.
    """
    if length <= window:
        return min(window, round_up(length))
    stride = margin_stride(window, margin)
    count = len(window_starts(length, window, stride))
    needed = -(-(length - 2 * margin) // count) + 2 * margin
    return min(window, round_up(needed))


@dataclass(frozen=True)
class WindowGrid:
    """The windows over a scene of ``height`` x ``width`` pixels (scene pixel coordinates).

    ``window_height`` / ``window_width`` are the sides the network sees: the window, or (along an
    axis shorter than the window) that axis rounded up to 32 and filled by reflection.
    """

    height: int
    width: int
    window_height: int
    window_width: int
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]

    @classmethod
    def for_scene(
        cls, height: int, width: int, window: int, stride: int, shift: int = 0
    ) -> WindowGrid:
        """The grid for a scene; ``shift`` moves the inner window starts by that many pixels along
        both axes (0 in production; half a window to test for seams)."""
        window_height = min(window, round_up(height))
        window_width = min(window, round_up(width))
        return cls._of_sides(height, width, window_height, window_width, stride, stride, shift)

    @classmethod
    def with_margin(
        cls, height: int, width: int, window: int, margin: int, shift: int = 0
    ) -> WindowGrid:
        """The grid of windows of at most ``window`` px per side whose neighbours share ``2 *
        margin`` px; each axis gets the smallest side that needs no more windows
        (:func:`fitted_window`), so the sides may differ (the blend weights follow them)."""
        window_height = fitted_window(height, window, margin)
        window_width = fitted_window(width, window, margin)
        row_stride = margin_stride(window_height, margin) if height > window_height else 1
        col_stride = margin_stride(window_width, margin) if width > window_width else 1
        return cls._of_sides(
            height, width, window_height, window_width, row_stride, col_stride, shift
        )

    @classmethod
    def _of_sides(
        cls,
        height: int,
        width: int,
        window_height: int,
        window_width: int,
        row_stride: int,
        col_stride: int,
        shift: int,
    ) -> WindowGrid:
        """The grid of windows of the given sides and strides (:func:`window_starts` per axis)."""
        return cls(
            height=height,
            width=width,
            window_height=window_height,
            window_width=window_width,
            row_starts=tuple(window_starts(height, window_height, row_stride, shift)),
            col_starts=tuple(window_starts(width, window_width, col_stride, shift)),
        )

    @property
    def count(self) -> int:
        """Number of windows."""
        return len(self.row_starts) * len(self.col_starts)

    def windows(self) -> Iterator[tuple[int, int]]:
        """(row_off, col_off) of every window, row by row."""
        for row in self.row_starts:
            for col in self.col_starts:
                yield row, col


def window_grid(
    prediction_cfg: Mapping[str, Any],
    tile_size: int,
    height: int,
    width: int,
    device: torch.device | str = "cpu",
    shift: int = 0,
) -> WindowGrid:
    """The window grid of a ``height`` x ``width`` px scene for the ``prediction`` settings.

    ``overlap`` null (the default): windows of at most :func:`window_side` px whose neighbours
    share ``2 * margin`` px (``margin`` default :data:`DEFAULT_MARGIN`), fitted per axis
    (:meth:`WindowGrid.with_margin`); ``overlap`` a fraction: square windows of exactly
    :func:`window_side` px, neighbours sharing that fraction (the behaviour before margins).
    """
    window = window_side(prediction_cfg, tile_size, device)
    overlap = prediction_cfg["overlap"]
    if overlap is None:
        margin = prediction_cfg["margin"]
        margin = DEFAULT_MARGIN if margin is None else int(margin)
        return WindowGrid.with_margin(height, width, window, margin, shift=shift)
    stride = window_stride(window, float(overlap))
    return WindowGrid.for_scene(height, width, window, stride, shift=shift)


def blend_weights_1d(length: int, kind: str = "hann") -> np.ndarray:
    """Weights along one window axis (float32, all > 0 so that every pixel has weight).

    ``hann``: sin^2(pi (i + 0.5) / n); ``cosine``: sin(pi (i + 0.5) / n); ``uniform``: 1.
    Sampling at pixel centres keeps the edge weights small but positive.
    """
    centres = (np.arange(length, dtype=np.float64) + 0.5) / length
    if kind == "hann":
        weights = np.sin(np.pi * centres) ** 2
    elif kind == "cosine":
        weights = np.sin(np.pi * centres)
    elif kind == "uniform":
        weights = np.ones(length)
    else:
        raise InputError(f"prediction.blend is {kind!r}; expected one of {list(BLEND_KINDS)}")
    return weights.astype(np.float32)


def blend_weights(height: int, width: int, kind: str = "hann") -> np.ndarray:
    """2-D weight window (height, width), the outer product of the 1-D weights."""
    return np.outer(blend_weights_1d(height, kind), blend_weights_1d(width, kind)).astype(
        np.float32
    )


# --------------------------------------------------------------------------------------------
# Network input and inference


def pad_to(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad the last two axes at the bottom/right to (height, width) by reflection (symmetric, so
    that a one-pixel axis also works)."""
    pad_h, pad_w = height - array.shape[-2], width - array.shape[-1]
    if pad_h <= 0 and pad_w <= 0:
        return array
    pads = [(0, 0)] * (array.ndim - 2) + [(0, max(0, pad_h)), (0, max(0, pad_w))]
    return np.pad(array, pads, mode="symmetric")


def dihedral_transforms() -> list[tuple[int, bool]]:
    """The 8 flips/rotations of a square as (quarter turns, horizontal flip)."""
    return [(k, flip) for k in range(4) for flip in (False, True)]


def infer_logits(
    model: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, tta: bool = False
) -> torch.Tensor:
    """Logits (B, K, H, W) float32 of a normalised batch (B, C, H, W); with ``tta`` the mean of the
    logits over the 8 flips/rotations, each mapped back to the original orientation."""
    if not tta:
        return model(batch).float()
    total: torch.Tensor | None = None
    for turns, flip in dihedral_transforms():
        x = torch.rot90(batch, turns, dims=(2, 3)) if turns else batch
        x = torch.flip(x, dims=(3,)) if flip else x
        y = model(x).float()
        y = torch.flip(y, dims=(3,)) if flip else y
        y = torch.rot90(y, -turns, dims=(2, 3)) if turns else y
        total = y if total is None else total + y
    assert total is not None
    return total / len(dihedral_transforms())


# --------------------------------------------------------------------------------------------
# Accumulators: blended logits of overlapping windows, finished rows out


# Rows per block when a CPU accumulator weights and adds a window: (K, 64, w) float32 of weighted
# logits (1.5 MB for K = 6 and 1,024 px) stay in the cache between the multiply and the add.
HOST_ADD_ROWS = 64

# On a CPU, windows are blended by :class:`HostStripAccumulator`: pixels one window alone covers
# take that window's argmax and softmax directly, only the shared strips are summed (tests set it
# False to compare with the whole-band blend of :class:`RowBandAccumulator`).
HOST_OWN_PIXELS_DIRECT = True


def add_weighted(
    target: np.ndarray, logits: np.ndarray, weights: np.ndarray, scratch: np.ndarray
) -> None:
    """``target += logits * weights`` ((K, h, w) += (K, h, w) x (h, w), float32), by blocks of
    :data:`HOST_ADD_ROWS` rows through ``scratch`` ((K, >= HOST_ADD_ROWS, >= w) float32): the
    product of a block stays in the cache between the multiply and the add. Bitwise the same as
    the one-line expression; ``logits`` may be a strided view (channels-last memory)."""
    rows, width = weights.shape
    for top in range(0, rows, HOST_ADD_ROWS):
        stop = min(rows, top + HOST_ADD_ROWS)
        block = scratch[:, : stop - top, :width]
        np.multiply(logits[:, top:stop], weights[top:stop], out=block)
        target[:, top:stop] += block


class RowBandAccumulator:
    """Weighted logit sums for a band of scene rows (K x band height x scene width, float32).

    Windows are added in row order; :meth:`release` returns the finished rows at the top (those no
    later window touches) as classes and moves the band down. Lives on the inference device: on a
    CPU as NumPy arrays (single-threaded, in place: torch's intra-op threads, which the network
    uses, made each small slice operation wait for a busy core, ~35 ms per window at load 6), on a
    GPU as tensors (only uint8 rows come back). Both hold the logit sums band-first (K, rows,
    width): the argmax is then K - 1 elementwise passes over whole planes (on a CPU ~10x faster
    than NumPy's ``argmax`` over a last axis of K values). On a CPU, prediction uses
    :class:`HostStripAccumulator` (the same classes in a fraction of the memory).
    """

    def __init__(
        self,
        num_classes: int,
        band_height: int,
        width: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.num_classes = num_classes
        self.band_height = band_height
        self.width = width
        self.top = 0  # scene row of band row 0
        self.on_host = torch.device(device).type == "cpu"
        self._scratch: np.ndarray | None = None  # host: weighted logits of a block of rows
        if self.on_host:
            self.logit_sum: Any = np.zeros((num_classes, band_height, width), dtype=np.float32)
            self.weight_sum: Any = np.zeros((band_height, width), dtype=np.float32)
            self.valid: Any = np.zeros((band_height, width), dtype=bool)
        else:
            self.logit_sum = torch.zeros(num_classes, band_height, width, device=device)
            self.weight_sum = torch.zeros(band_height, width, device=device)
            self.valid = torch.zeros(band_height, width, dtype=torch.bool, device=device)

    def add(
        self,
        logits: Any,
        weights: Any,
        valid: Any,
        row_off: int,
        col_off: int,
        weighted: bool = False,
    ) -> None:
        """Add one window's logits times ``weights`` (h, w) at scene (row_off, col_off); ``valid``
        (h, w) marks pixels with data. Parts beyond the scene (padding) are cut off. The logits are
        (K, h, w): a NumPy array (any strides: a view of channels-last logits) on a CPU
        accumulator, a tensor on a GPU one;
        ``weighted``: the logits are already multiplied by the weights (a whole batch at once)."""
        row = row_off - self.top
        if row < 0:
            raise ValueError(
                f"window at row {row_off} is above the band (top {self.top}): "
                "windows must come in row order"
            )
        h = min(logits.shape[-2], self.band_height - row)
        w = min(logits.shape[-1], self.width - col_off)
        target = self.logit_sum[:, row : row + h, col_off : col_off + w]
        if not self.on_host:
            if weighted:
                target += logits[:, :h, :w]
            else:
                target.addcmul_(logits[:, :h, :w], weights[:h, :w])
        elif weighted:
            target += logits[:, :h, :w]
        else:
            if self._scratch is None or self._scratch.shape[-1] < w:
                self._scratch = np.empty((self.num_classes, HOST_ADD_ROWS, w), np.float32)
            add_weighted(target, logits[:, :h, :w], weights[:h, :w], self._scratch)
        self.weight_sum[row : row + h, col_off : col_off + w] += weights[:h, :w]
        self.valid[row : row + h, col_off : col_off + w] = valid[:h, :w]

    def release(
        self, upto: int, confidence: bool = False
    ) -> tuple[int, np.ndarray, np.ndarray | None]:
        """Finish scene rows ``[top, upto)``: (row_off, classes uint8 (n, width), confidence).

        Classes are argmax + 1 of the blended logits, 0 where the scene has no data. Confidence is
        the largest softmax probability of the blended logits x 255 (uint8, 0 where no data).
        """
        n = min(upto - self.top, self.band_height)
        row_off = self.top
        if self.on_host:
            classes_np, conf_np = self._finish_host(n, confidence)
        else:
            classes_np, conf_np = self._finish_device(n, confidence)
        keep = self.band_height - n
        if keep > 0:  # move the unfinished rows up (NumPy copes with the overlap)
            if self.on_host:
                self.logit_sum[:, :keep] = self.logit_sum[:, n:]
            else:
                self.logit_sum[:, :keep] = self.logit_sum[:, n:].clone()
            self.weight_sum[:keep] = self.weight_sum[n:]
            self.valid[:keep] = self.valid[n:]
        self.logit_sum[:, keep:] = 0
        self.weight_sum[keep:] = 0
        self.valid[keep:] = False
        self.top += n
        return row_off, classes_np, conf_np

    def _finish_host(self, n: int, confidence: bool) -> tuple[np.ndarray, np.ndarray | None]:
        sums, weights, valid = self.logit_sum[:, :n], self.weight_sum[:n], self.valid[:n]
        return finish_blended(sums, weights, valid, confidence)

    def _finish_device(self, n: int, confidence: bool) -> tuple[np.ndarray, np.ndarray | None]:
        logit_sum = self.logit_sum[:, :n]
        valid = self.valid[:n]
        classes = (logit_sum.max(dim=0).indices + 1).to(torch.uint8)
        classes = torch.where(valid, classes, torch.zeros_like(classes))
        conf_np = None
        if confidence:
            mean_logits = logit_sum / self.weight_sum[:n].clamp_min(1e-30)
            prob = torch.softmax(mean_logits, dim=0).amax(dim=0)
            conf = torch.where(
                valid, (prob * 255).round().clamp(1, 255), torch.zeros_like(prob)
            ).to(torch.uint8)
            conf_np = conf.cpu().numpy()
        return classes.cpu().numpy(), conf_np


def finish_blended(
    logit_sum: np.ndarray, weight_sum: np.ndarray, valid: np.ndarray, confidence: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Classes (uint8, argmax + 1, 0 without data) and, with ``confidence``, the confidence (uint8,
    largest softmax probability of the mean logits x 255, 0 without data) of weighted logit sums
    ``logit_sum`` (K, h, w) with ``weight_sum`` (h, w) > 0 where ``valid`` (h, w)."""
    # weight_sum > 0, so the class of the largest sum is that of the largest mean; the first
    # largest wins (NumPy's argmax), plane by plane
    classes = argmax_planes(logit_sum)
    classes += 1
    classes *= valid  # 0 without data (a masked assignment is ~15x slower)
    if not confidence:
        return classes, None
    # max softmax probability of the mean logits = 1 / sum_k exp(mean_k - mean_max), on
    # (h, w, K) as before the band-first layout (NumPy's sum over a last axis of K values
    # adds in another order than one over planes: rounding, hence the confidence, would differ)
    sums = np.ascontiguousarray(logit_sum.transpose(1, 2, 0))
    conf = confidence_of_mean(sums / np.maximum(weight_sum, 1e-30)[..., None])
    conf[~valid] = 0
    return classes, conf


@dataclass
class _RowStrip:
    """Weighted logit sums of the scene rows ``[row0, row0 + rows)`` that window rows share, over
    the whole scene width: sums (K, rows, width), weights and valid (rows, width)."""

    row0: int
    sums: np.ndarray
    weights: np.ndarray
    valid: np.ndarray

    @classmethod
    def zeros(cls, row0: int, num_classes: int, rows: int, width: int) -> _RowStrip:
        return cls(
            row0,
            np.zeros((num_classes, rows, width), np.float32),
            np.zeros((rows, width), np.float32),
            np.zeros((rows, width), bool),
        )

    @property
    def rows(self) -> int:
        return int(self.weights.shape[0])

    def reset(self, row0: int, rows: int) -> _RowStrip:
        """This strip zeroed for ``rows`` rows from ``row0`` (its arrays reused when they have
        that many rows, else new ones)."""
        if self.rows != rows:
            return _RowStrip.zeros(row0, self.sums.shape[0], rows, self.weights.shape[1])
        self.sums.fill(0)
        self.weights.fill(0)
        self.valid.fill(False)
        self.row0 = row0
        return self


class HostStripAccumulator:
    """The CPU accumulator: the interface of :class:`RowBandAccumulator` (:meth:`add` windows in
    row order, :meth:`release` finished rows) for any grid, the same classes and, up to the
    rounding of ``w l / w``, the same confidence, in a fraction of its memory.

    Pixels one window alone covers (with margins most of a scene) take that window's argmax and
    softmax directly. Only the shared pixels are weighted and summed, in the order the whole-band
    blend adds them (so their sums are bitwise the same): rows that window rows share in two row
    strips over the scene width (the rows shared with the window rows above, finished when the
    current row is done, and those shared with the rows below); within the rows one window row
    alone covers, the columns that neighbouring windows share in a column strip passed from a
    window to the next, finished as soon as no later window covers them. Memory: the classes of
    a window-high band (uint8) and the strips (K + 1 float32 and one bool per pixel of the shared
    rows x scene width), instead of K + 1 float32 per pixel of the whole band: the fresh pages of
    the whole band (its column strips touch every row) cost more CPU than the blend itself
    (bench_predict_host.py).
    """

    def __init__(self, num_classes: int, grid: WindowGrid, confidence: bool = False) -> None:
        self.num_classes = num_classes
        self.grid = grid
        self.confidence = confidence
        self.top = 0  # scene row of the current window row (band row 0)
        self._own_rows = exclusive_ranges(grid.row_starts, grid.window_height, grid.height)
        self._own_cols = exclusive_ranges(grid.col_starts, grid.window_width, grid.width)
        self._next_row = dict(itertools.pairwise(grid.row_starts))
        self._next_col = dict(itertools.pairwise(grid.col_starts))
        band = min(grid.window_height, grid.height)
        self.classes = np.zeros((band, grid.width), np.uint8)
        self.conf = np.zeros((band, grid.width), np.uint8)
        # the column strip: columns [self._col_origin, ...) of the current window row's own rows
        # that the windows so far cover up to self._col_end and a later window covers too
        shared_cols = max(
            [a + grid.window_width - b for a, b in itertools.pairwise(grid.col_starts)] + [0]
        )
        self._col_sums = np.zeros((num_classes, band, shared_cols), np.float32)
        self._col_weights = np.zeros((band, shared_cols), np.float32)
        self._col_origin = self._col_end = 0
        self._scratch = np.empty((num_classes, HOST_ADD_ROWS, grid.window_width), np.float32)
        # rows the current window row shares with those above, from its top
        self._upper = _RowStrip.zeros(0, num_classes, 0, grid.width)
        self._spare: _RowStrip | None = None  # arrays of the last finished strip, for reuse
        self._lower = self._strip_below(0)

    def _strip_below(self, row_off: int) -> _RowStrip:
        """Zeroed: the strip of the rows the window row at ``row_off`` shares with the next ones,
        from the next row's start (0 rows for the last row)."""
        below = self._next_row.get(row_off)
        bottom = min(row_off + self.grid.window_height, self.grid.height)
        spare = self._spare or _RowStrip.zeros(0, self.num_classes, 0, self.grid.width)
        self._spare = None
        return spare.reset(below or bottom, bottom - below if below is not None else 0)

    def add(
        self,
        logits: np.ndarray,
        weights: np.ndarray,
        valid: np.ndarray,
        row_off: int,
        col_off: int,
    ) -> None:
        """Add one window's logits (K, h, w) (any strides: a view of channels-last logits) times
        ``weights`` (h, w) at scene (row_off, col_off); ``valid`` (h, w) marks pixels with data.
        Windows of a window row come left to right, window rows top to bottom (:meth:`release`
        between them); parts beyond the scene (padding) are cut off."""
        if row_off != self.top:
            raise ValueError(
                f"window at row {row_off} is not in the current window row (row {self.top}): "
                "windows must come in row order, released between rows"
            )
        h = min(logits.shape[-2], self.grid.height - row_off)
        w = min(logits.shape[-1], self.grid.width - col_off)
        # window rows [0, a): shared with the rows above (the upper strip), [a, b): this window
        # row's own, [b, h): shared with the rows below only (the lower strip)
        first, stop = self._own_rows[row_off]
        a, b = first - row_off, max(first, stop) - row_off
        cols = slice(col_off, col_off + w)
        lower = self._lower
        for strip, r0, r1 in ((self._upper, 0, a), (lower, b, h)):
            if r0 < r1:
                s0 = row_off + r0 - strip.row0
                s1 = s0 + r1 - r0
                add_weighted(
                    strip.sums[:, s0:s1, cols], logits[:, r0:r1, :w], weights[r0:r1, :w],
                    self._scratch,
                )  # fmt: skip
                strip.weights[s0:s1, cols] += weights[r0:r1, :w]
                strip.valid[s0:s1, cols] = valid[r0:r1, :w]
        if a < b:
            self._add_own_rows(logits, weights, valid, a, b, col_off, w)

    def _add_own_rows(
        self,
        logits: np.ndarray,
        weights: np.ndarray,
        valid: np.ndarray,
        a: int,
        b: int,
        col_off: int,
        w: int,
    ) -> None:
        """Rows [a, b) of a window (those of its window row alone) at scene column ``col_off``,
        ``w`` columns: columns shared with earlier windows into the column strip (finished where
        no later window reaches), its own columns directly, those shared with later windows only
        into the column strip."""
        if self._col_origin != col_off:
            raise ValueError(
                f"window at column {col_off} after the column strip's {self._col_origin}"
            )
        following = self._next_col.get(col_off)
        done = following if following is not None else col_off + w  # final after this window
        shared = min(self._col_end, col_off + w) - col_off  # window columns [0, shared): earlier
        sums, weights_sum = self._col_sums[:, a:b], self._col_weights[a:b]
        if shared > 0:
            add_weighted(
                sums[:, :, :shared], logits[:, a:b, :shared], weights[a:b, :shared], self._scratch
            )
            weights_sum[:, :shared] += weights[a:b, :shared]
            final = min(shared, done - col_off)
            self._finish(sums[:, :, :final], weights_sum[:, :final], valid[a:b, :final], a, col_off)
        first, stop = self._own_cols[col_off]
        c, d = first - col_off, max(first, stop) - col_off
        self._finish_own(logits, valid, a, b, c, d, col_off)
        if following is None:
            self._col_origin = self._col_end = 0  # the next window row starts at column 0
            return
        carried = self._col_end - following  # columns [following, self._col_end): three windows
        if carried > 0:
            start = following - col_off
            sums[:, :, :carried] = sums[:, :, start : start + carried]
            weights_sum[:, :carried] = weights_sum[:, start : start + carried]
        fresh = max(self._col_end, following) - col_off  # window columns [fresh, w): later only
        if fresh < w:
            at = fresh + col_off - following
            np.multiply(
                logits[:, a:b, fresh:w], weights[a:b, fresh:w], out=sums[:, :, at : at + w - fresh]
            )
            weights_sum[:, at : at + w - fresh] = weights[a:b, fresh:w]
        self._col_origin, self._col_end = following, col_off + w

    def _finish(
        self, sums: np.ndarray, weights: np.ndarray, valid: np.ndarray, row: int, col: int
    ) -> None:
        """Classes (and confidence) of blended sums (K, h, w) into the band at (row, scene col)."""
        classes, conf = finish_blended(sums, weights, valid, self.confidence)
        h, w = classes.shape
        self.classes[row : row + h, col : col + w] = classes
        if conf is not None:
            self.conf[row : row + h, col : col + w] = conf

    def _finish_own(
        self, logits: np.ndarray, valid: np.ndarray, r0: int, r1: int, c0: int, c1: int, col: int
    ) -> None:
        """Class (argmax + 1, 0 without data) and confidence of logits[:, r0:r1, c0:c1] into the
        band (same rows, scene column ``col + c0``), by blocks of rows (the logits may be a strided
        view of channels-last memory)."""
        if c0 >= c1:
            return
        for top in range(r0, r1, HOST_ADD_ROWS):
            stop = min(r1, top + HOST_ADD_ROWS)
            block = logits[:, top:stop, c0:c1]
            if not block[0].flags.c_contiguous:  # channels-last logits: planes, in the cache
                planes = self._scratch[:, : stop - top, : c1 - c0]
                np.copyto(planes, block)
                block = planes
            classes = argmax_planes(block)
            classes += 1
            classes *= valid[top:stop, c0:c1]
            target = (slice(top, stop), slice(col + c0, col + c1))
            self.classes[target] = classes
            if self.confidence:
                conf = confidence_of_mean(np.ascontiguousarray(block.transpose(1, 2, 0)))
                conf[~valid[top:stop, c0:c1]] = 0
                self.conf[target] = conf

    def release(
        self, upto: int, confidence: bool = False
    ) -> tuple[int, np.ndarray, np.ndarray | None]:
        """Finish the current window row: scene rows ``[top, upto)`` (``upto`` the next window
        row's start, or the scene height after the last): ``(row_off, classes uint8 (n, width),
        confidence uint8 or None)``, as :meth:`RowBandAccumulator.release`."""
        row_off = self.top
        end = min(upto, self.grid.height)
        upper, lower = self._upper, self._lower
        final = min(upper.row0 + upper.rows, end) - row_off  # upper rows no later window covers
        if final > 0:
            assert upper.row0 == row_off, (upper.row0, row_off)
            self._finish(upper.sums[:, :final], upper.weights[:final], upper.valid[:final], 0, 0)
        if upper.rows > final:  # rows three window rows share: on to the lower strip
            at = end - lower.row0
            rows = slice(at, at + upper.rows - final)
            lower.sums[:, rows] = upper.sums[:, final:]
            lower.weights[rows] = upper.weights[final:]
            lower.valid[rows] = upper.valid[final:]
        classes = self.classes[: end - row_off].copy()  # the writer keeps them; the band is reused
        conf = self.conf[: end - row_off].copy() if confidence else None
        self.top = end
        self._spare, self._upper = upper, lower
        if end < self.grid.height:
            self._lower = self._strip_below(end)
        return row_off, classes, conf


def exclusive_ranges(starts: Sequence[int], size: int, length: int) -> dict[int, tuple[int, int]]:
    """For each window start along an axis of ``length`` px (windows of ``size`` px, ``starts``
    increasing): the range [first, stop) of the axis that this window alone covers (may be empty:
    first >= stop)."""
    ranges = {}
    for i, start in enumerate(starts):
        first = max(start, starts[i - 1] + size) if i > 0 else start
        stop = min(start + size, starts[i + 1]) if i + 1 < len(starts) else start + size
        ranges[start] = (max(first, 0), min(stop, length))
    return ranges


def confidence_of_mean(mean: np.ndarray) -> np.ndarray:
    """Largest softmax probability x 255 (uint8, 1-255) of mean logits (..., K) float32 (modified
    in place): 1 / sum_k exp(mean_k - mean_max), summed over the last axis (NumPy's sum over a last
    axis of K values adds in another order than one over planes: rounding would differ)."""
    mean -= mean.max(axis=-1, keepdims=True)
    np.exp(mean, out=mean)
    return np.clip(np.round(255 / mean.sum(axis=-1)), 1, 255).astype(np.uint8)


def count_values(values: np.ndarray, n: int) -> np.ndarray:
    """Occurrences (int64) of 0 .. n - 1 in a uint8 array: one compare-and-count pass per value,
    ~5x faster than ``np.bincount`` for a few values (which converts every element to intp)."""
    flat = values.ravel()
    return np.array([np.count_nonzero(flat == v) for v in range(n)], dtype=np.int64)


def argmax_planes(planes: np.ndarray) -> np.ndarray:
    """Index (uint8) of the largest of K planes (K, ...) per element; the first one among equals,
    as :func:`numpy.argmax` (which, over a short last axis, is ~10x slower). Logits are finite:
    NaN is not ordered here as NumPy orders it (NumPy takes the first NaN as the largest)."""
    if planes.shape[0] > 255:
        raise ValueError(f"{planes.shape[0]} planes; uint8 indexes hold at most 255")
    best = planes[0].copy()
    index = np.zeros(best.shape, dtype=np.uint8)
    larger = np.empty(best.shape, dtype=bool)
    candidate = np.empty(best.shape, dtype=np.uint8)
    for k in range(1, planes.shape[0]):
        np.greater(planes[k], best, out=larger)
        # k exceeds every index so far: max(index, k where larger else 0) sets k where larger
        # (SIMD arithmetic; a masked assignment is ~15x slower)
        np.multiply(larger.view(np.uint8), np.uint8(k), out=candidate)
        np.maximum(index, candidate, out=index)
        np.maximum(best, planes[k], out=best)
    return index


# Largest batch on a CPU, in window pixels (2^20: one 1,024 px window, four of 512 px, ten of
# 320 px). A larger batch does not convolve faster on a CPU, but its buffers (4 batches of input
# in flight, the network's output and activations) leave the caches and must be freshly mapped
# and zeroed by the kernel: with 4 windows of 1,024 px a 4,096^2 scene took 1.1-1.4 CPU-s of
# system time against 0.24 with one (bench_predict_host.py, stand-in network).
CPU_BATCH_PIXELS = 1 << 20


def effective_batch_size(
    batch_size: int | str, window_height: int, window_width: int, device: torch.device | str = "cpu"
) -> int:
    """Windows per network call: ``prediction.batch_size`` (``auto``: 4, the setting before
    ``auto``; on CUDA :func:`predict_scene_with_model` sizes ``auto`` from the device's memory
    instead, :func:`device_batch_size`), on a CPU at most :data:`CPU_BATCH_PIXELS` window pixels
    (at least one window). The windows' logits do not depend on the batch they are in (every
    layer of an eval-mode network is per sample), so this changes the speed, not the output."""
    if batch_size == "auto":
        batch_size = 4
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(
            f"prediction.batch_size is {batch_size!r}; expected 'auto' or an integer >= 1"
        )
    if torch.device(device).type != "cpu":
        return batch_size
    return max(1, min(batch_size, CPU_BATCH_PIXELS // (window_height * window_width)))


# ``batch_size: auto`` on a GPU: the batches may take this share of the device memory free once
# the model is on it (the rest: the row-band accumulator, about 4 * (K + 1) * window * width bytes,
# and the allocator's fragmentation), and one batch's float32 input at most this many bytes. The
# device cuts its batches from bands of rows (device_window_batches), so their size costs the host
# nothing (before, the host cut them into pinned buffers: 16 windows of 1,024 px took 3.08 s per
# 10,980^2 tile against 2.94 s with 4, docs/benchmarks/predict.md); whether 16 windows buy more
# than 4 on a GPU is not measured yet.
GPU_MEMORY_SHARE = 0.5
GPU_BATCH_INPUT_BYTES = 256 * 2**20


def device_batch_size(free_bytes: int, bytes_per_window: int, input_bytes_per_window: int) -> int:
    """Windows per batch that fill a GPU: :data:`GPU_MEMORY_SHARE` of ``free_bytes`` (free device
    memory) at ``bytes_per_window`` each (one window's peak device memory through the network,
    its float32 logits and their weighted copy included: :func:`cuda_bytes_per_window`), at most
    :data:`GPU_BATCH_INPUT_BYTES` of input (``input_bytes_per_window``: C x h x w x 4), at least 1.
    """
    by_memory = int(free_bytes * GPU_MEMORY_SHARE) // max(1, bytes_per_window)
    by_input = GPU_BATCH_INPUT_BYTES // max(1, input_bytes_per_window)
    return max(1, min(by_memory, by_input))


def cuda_bytes_per_window(
    model: Callable[[torch.Tensor], torch.Tensor],
    channels: int,
    window_height: int,
    window_width: int,
    num_classes: int,
    device: torch.device,
    amp: torch.dtype | None,
    channels_last: bool,
    tta: bool = False,
) -> int:
    """Peak CUDA memory (bytes) one window takes through ``model`` as :func:`blend_rows` runs it
    (autocast, layout, tta), measured with one zero window, plus its float32 logits weighted
    (the accumulator's input). The model's weights, already on the device, are not counted."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    x = torch.zeros((1, channels, window_height, window_width), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        logits = infer_logits(model, x, tta=tta)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del x, logits
    torch.cuda.empty_cache()
    return peak + 4 * num_classes * window_height * window_width


def default_readers() -> int:
    """Reader threads of whole-scene prediction: the CPUs this process may use, at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def pinned_host_array(shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """A host array (``dtype``, default float32) in page-locked (pinned) memory, for non-blocking
    copies to a CUDA device; plain memory where pinning is not available (no CUDA)."""
    dtype = np.dtype(dtype)
    try:
        raw = torch.empty(math.prod(shape) * dtype.itemsize, dtype=torch.uint8, pin_memory=True)
    except RuntimeError:
        return np.empty(shape, dtype=dtype)
    return raw.numpy().view(dtype).reshape(shape)


def torch_bits(array: np.ndarray) -> torch.Tensor:
    """``array`` as a tensor sharing its memory; unsigned integers of 16 bits or more as the
    signed type of their size (the same bits: PyTorch's uint16/32/64 support few operations)."""
    if array.dtype.kind == "u" and array.dtype.itemsize > 1:
        array = array.view(f"i{array.dtype.itemsize}")
    return torch.from_numpy(array)


def network_input_on_device(
    stored: torch.Tensor,
    stored_dtype: np.dtype,
    gain: torch.Tensor,
    bias: torch.Tensor,
    valid: torch.Tensor,
) -> torch.Tensor:
    """Network input (float32 (B, C, h, w), contiguous) of a batch of stored values
    (:func:`torch_bits` of (B, C, h, w) ``stored_dtype``, band-first as
    :func:`device_window_batches` cuts them) on the inference device: the arithmetic of
    :func:`normalise_row_band`, value for value (``float32(stored) * gain``, then ``+ bias``, then
    pixels without data (``valid`` (B, h, w) False) times 0); ``gain``, ``bias`` (C,)."""
    if stored_dtype.kind == "u" and stored_dtype.itemsize > 1:  # the unsigned value of the bits
        wide = torch.int64 if stored_dtype.itemsize >= 4 else torch.int32
        stored = stored.to(wide).bitwise_and_((1 << (8 * stored_dtype.itemsize)) - 1)
    x = stored.to(torch.float32) * gain.view(1, -1, 1, 1)
    x += bias.view(1, -1, 1, 1)
    x *= valid.unsqueeze(1)
    return x


# --------------------------------------------------------------------------------------------
# Threads: a prefetching producer and a background consumer


_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(make_items: Callable[[], Iterable[Any]], depth: int = 2) -> Generator[Any, None, None]:
    """Iterate ``make_items()`` in a background thread, at most ``depth`` items ahead.

    Errors in the thread are re-raised in the consumer; leaving the loop early stops the thread.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in make_items():
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:
            put(_Failure(error))

    thread = threading.Thread(target=run, name="prediction-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


class BackgroundConsumer:
    """Call ``consume(item)`` for each :meth:`put` item in a background thread (bounded queue).

    :meth:`close` waits for the queue to drain and re-raises an error of the thread; an error is
    also raised at the next :meth:`put`.
    """

    def __init__(
        self, consume: Callable[[Any], None], depth: int = 4, name: str = "prediction-writer"
    ) -> None:
        self._consume = consume
        self._items: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._items.get()
            if item is _DONE:
                return
            if self._error is None:
                try:
                    self._consume(item)
                except BaseException as error:
                    self._error = error

    def put(self, item: Any) -> None:
        """Queue an item (blocks while the queue is full)."""
        if self._error is not None:
            raise self._error
        self._items.put(item)

    def close(self) -> None:
        """Finish the queued items and stop the thread; re-raise its error if any."""
        self._items.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error


# --------------------------------------------------------------------------------------------
# The streaming pipeline on arrays (no files): batches in, finished rows out


def normalise_row_band(
    stored: np.ndarray,
    gain: np.ndarray,
    bias: np.ndarray,
    valid: np.ndarray | None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Network input of a band of rows, band-first: ``stored (C, rows, width)`` -> float32
    ``(C, rows, width)``, into ``out`` (that shape) when given.

    The arithmetic of :func:`s2landcover.radiometry.network_input_into`, value for value
    (``float32(stored) * gain``, then ``+ bias``, then pixels without data times 0), but in
    contiguous passes over the row band, once per row band instead of once per window (windows
    overlap): 2x faster than the transposing pass per window on this project's CPU. Only the
    pixels without data (``valid`` False) are multiplied by 0; None: every pixel has data.
    """
    if out is None:
        out = np.empty(stored.shape, dtype=np.float32)
    np.multiply(stored, gain[:, None, None], out=out, casting="unsafe")
    out += bias[:, None, None]
    if valid is not None:
        np.multiply(out, np.float32(0), out=out, where=~valid[None])
    return out


def window_batches(
    row_bands: Iterable[tuple[int, np.ndarray]],
    grid: WindowGrid,
    norm: InputNormalization,
    batch_size: int,
    buffers: int = 4,
    allocate: Callable[[tuple[int, ...], np.dtype], np.ndarray] | None = None,
    workers: int = 1,
) -> Iterator[tuple[list[tuple[int, int]], np.ndarray, list[np.ndarray]]]:
    """Cut bands of rows (``(row_off, stored (C, rows, width))``, one per row of windows, in order)
    into batches ``(offsets, input (B, h, w, C) float32, channels last, valid [B x (h, w) bool])``
    (``torch.from_numpy(input).permute(0, 3, 1, 2)`` is the NCHW batch in channels-last memory):
    the host's share of prediction on a CPU (a CUDA device cuts its own windows by default:
    :func:`device_window_batches`).

    Each row band is normalised once, band-first, in contiguous passes
    (:func:`normalise_row_band`, the arithmetic of
    :func:`s2landcover.radiometry.network_input_into`), then each window is one transposing copy
    into its batch slot (no ``np.stack``); the valid mask
    (:func:`s2landcover.radiometry.valid_pixels`) is computed once per row band and handed out as
    views. ``workers`` > 1: the normalisation (by blocks of rows)
    and the window copies of a band run on that many threads (NumPy and torch release the GIL);
    the batches are the same, value for value, in the same order. An error in a worker is raised
    here, and the workers are stopped (pending work cancelled) before it propagates.

    The batch arrays cycle through ``buffers`` preallocated buffers (``allocate(shape, dtype)``:
    e.g. pinned host memory for CUDA; default ``np.empty``): a consumer must be done with a batch
    before it takes the ``buffers - 1``-th next one (:func:`prefetch` with depth 2 keeps at most 3
    in flight besides the one being filled).
    """
    gain, bias = norm.gain_bias()
    bands = len(norm.scales)
    shape = (batch_size, grid.window_height, grid.window_width, bands)
    make = allocate or (lambda s, d: np.empty(s, dtype=d))
    pool: list[np.ndarray] = []
    used = 0
    offsets: list[tuple[int, int]] = []
    valids: list[np.ndarray] = []
    batch: np.ndarray | None = None
    normalised: np.ndarray | None = None
    executor = ThreadPoolExecutor(workers, "prediction-reader") if workers > 1 else None

    def run_all(calls: list[Callable[[], Any]]) -> None:
        if executor is None:
            for call in calls:
                call()
            return
        futures = [executor.submit(call) for call in calls]
        try:
            for future in futures:
                future.result()  # re-raises a worker's error here
        finally:
            for future in futures:
                future.cancel()

    def copy_window(target: np.ndarray, source: np.ndarray) -> Callable[[], Any]:
        # torch's transposing copy: 2x NumPy's (np.copyto of the transposed view)
        return lambda: torch_bits(target).copy_(torch_bits(source).permute(1, 2, 0))

    try:
        for row_off, stored in row_bands:
            stored = pad_to(stored, grid.window_height, grid.window_width)  # pointwise ops commute
            valid = valid_pixels(stored, norm.nodata)
            all_valid = bool(valid.all())
            if normalised is None or normalised.shape != stored.shape:
                normalised = np.empty(stored.shape, dtype=np.float32)
            rows = stored.shape[1]
            step = -(-rows // max(1, workers))
            run_all(
                [
                    functools.partial(
                        normalise_row_band,
                        stored[:, r : r + step],
                        gain,
                        bias,
                        None if all_valid else valid[r : r + step],
                        normalised[:, r : r + step],
                    )
                    for r in range(0, rows, step)
                ]
            )
            copies = []
            for col_off in grid.col_starts:
                if batch is None:
                    if len(pool) < buffers:
                        pool.append(make(shape, np.dtype(np.float32)))
                    batch = pool[used % len(pool)] if len(pool) == buffers else pool[-1]
                    used += 1
                cols = slice(col_off, col_off + grid.window_width)
                copies.append(copy_window(batch[len(offsets)], normalised[:, :, cols]))
                offsets.append((row_off, col_off))
                valids.append(valid[:, cols])
                if len(offsets) == batch_size:
                    run_all(copies)
                    copies = []
                    yield offsets, batch, valids
                    offsets, valids, batch = [], [], None
            run_all(copies)
        if offsets:
            assert batch is not None
            yield offsets, batch[: len(offsets)], valids
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        close = getattr(row_bands, "close", None)
        if close is not None:  # a reader generator: closes its dataset in this thread, now
            close()


def stored_row_bands(
    row_bands: Iterable[tuple[int, np.ndarray]], grid: WindowGrid, nodata: float | None
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """The host's share of prediction on a CUDA device: each band of rows (``(row_off, stored
    (C, rows, width))``, one per row of windows, in order) as ``(row_off, stored, valid (rows,
    width) bool)``, ``stored`` padded to a window where the scene is smaller than one
    (:func:`pad_to`; a fresh array then, else the band itself, e.g. pinned) and ``valid`` its
    pixels with data (:func:`s2landcover.radiometry.valid_pixels`, the one no-data rule).
    :func:`device_window_batches` cuts, normalises and batches the windows on the device.
    """
    try:
        for row_off, stored in row_bands:
            stored = pad_to(stored, grid.window_height, grid.window_width)
            yield row_off, stored, valid_pixels(stored, nodata)
    finally:
        close = getattr(row_bands, "close", None)
        if close is not None:  # a reader generator: closes its dataset in this thread, now
            close()


# The reader thread of the CUDA path runs this many bands of rows ahead of the main thread; with
# one band being filled and one being taken, it cycles through ROW_BAND_PREFETCH + 2 buffers.
ROW_BAND_PREFETCH = 2
DEVICE_ROW_BAND_BUFFERS = ROW_BAND_PREFETCH + 2


def device_window_batches(
    bands: Iterable[tuple[int, np.ndarray, np.ndarray]],
    grid: WindowGrid,
    norm: InputNormalization,
    batch_size: int,
    device: torch.device | str,
) -> Iterator[tuple[list[tuple[int, int]], torch.Tensor, torch.Tensor]]:
    """Batches ``(offsets, input (B, C, h, w) float32, valid (B, h, w) bool)`` on ``device``, cut
    there from bands of rows (:func:`stored_row_bands`: stored values and valid mask on the host).

    Each band is copied to the device whole (non-blocking from pinned memory: the copy engine
    reads it while the host goes on), then the windows are views of it, stacked into batches of
    ``batch_size`` (a batch may span bands) and normalised there
    (:func:`network_input_on_device`: the host's arithmetic, value for value). The host copies
    no window (overlapping windows would copy their shared columns twice) and pins only the bands.
    The copy of a band is waited for before the next band is taken, so that the reader may refill
    its host buffer once this generator takes the band after next (:func:`read_row_bands` with
    :data:`DEVICE_ROW_BAND_BUFFERS` buffers under :func:`prefetch` with depth
    :data:`ROW_BAND_PREFETCH`). On a CPU (tests) the band is copied too, so no batch shares memory
    with a reader's buffer.
    """
    device = torch.device(device)
    gain, bias = (torch.from_numpy(a).to(device) for a in norm.gain_bias())
    offsets: list[tuple[int, int]] = []
    windows: list[torch.Tensor] = []
    valids: list[torch.Tensor] = []

    def batch(dtype: np.dtype) -> tuple[list[tuple[int, int]], torch.Tensor, torch.Tensor]:
        valid = torch.stack(valids)
        stored = torch.stack(windows)
        return offsets, network_input_on_device(stored, dtype, gain, bias, valid), valid

    dtype = np.dtype(np.uint16)
    for row_off, stored, valid in bands:
        dtype = stored.dtype
        band = torch_bits(stored).to(device, non_blocking=True, copy=True)
        copied = torch.cuda.Event() if device.type == "cuda" else None
        if copied is not None:
            copied.record()
        band_valid = torch.from_numpy(valid).to(device, non_blocking=True)  # a fresh array
        for col_off in grid.col_starts:
            cols = slice(col_off, col_off + grid.window_width)
            offsets.append((row_off, col_off))
            windows.append(band[:, :, cols])
            valids.append(band_valid[:, cols])
            if len(offsets) == batch_size:
                yield batch(dtype)
                offsets, windows, valids = [], [], []
        if copied is not None:
            copied.synchronize()
    if offsets:
        yield batch(dtype)


PRECISIONS = ("auto", "float32", "bfloat16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 convolutions natively (oneDNN with AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of inference on ``device``, or None for plain float32.

    ``auto``: bf16 (fp16 where bf16 is not supported) on CUDA; on a CPU bf16 where it computes bf16
    natively (AVX-512 BF16 or AMX: :func:`cpu_has_native_bf16`), else float32 (emulated bf16 is
    slower than float32). On a trained resnet34 U-Net bf16 agreed with float32 on >= 99.9 % of
    pixels at 1.6-2x the speed (docs/benchmarks/predict.md). ``bfloat16``: bf16 autocast on any
    device. ``float32``: no autocast.
    """
    if precision not in PRECISIONS:
        raise InputError(
            f"prediction.precision is {precision!r}; expected one of {list(PRECISIONS)}"
        )
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


LAYOUTS = ("auto", "channels_last", "contiguous")


def uses_channels_last(device: torch.device, amp: torch.dtype | None, layout: str = "auto") -> bool:
    """Whether the network and its input run channels-last (NHWC).

    ``auto``: yes on CUDA, with any autocast, and on a CPU in float32 too (oneDNN convolves NHWC
    float32 1.5-2x faster than NCHW here: docs/benchmarks/predict.md); ``contiguous``: never.
    """
    if layout not in LAYOUTS:
        raise InputError(f"prediction.layout is {layout!r}; expected one of {list(LAYOUTS)}")
    if layout == "auto":
        return True
    return layout == "channels_last"


def blend_rows(
    model: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[
        tuple[list[tuple[int, int]], np.ndarray | torch.Tensor, Sequence[np.ndarray] | torch.Tensor]
    ],
    grid: WindowGrid,
    num_classes: int,
    emit_rows: Callable[[tuple[int, np.ndarray, np.ndarray | None]], None],
    device: torch.device | str = "cpu",
    blend: str = "hann",
    tta: bool = False,
    confidence: bool = False,
    on_batch: Callable[[int], None] | None = None,
    precision: str = "auto",
    layout: str = "auto",
) -> None:
    """Run ``model`` on window batches in row order and emit finished rows, top to bottom.

    ``emit_rows`` receives ``(row_off, classes uint8 (n, width), confidence uint8 or None)``
    covering the whole scene exactly once, in order. Memory: the accumulator (K + 1 float32 and one
    bool per pixel of a window-high band of the scene) plus one batch. ``precision``: see
    :func:`autocast_dtype`; ``layout``: see :func:`uses_channels_last`; logits are accumulated in
    float32 either way. A batch is ``(offsets, input, valid)``: host arrays from
    :func:`window_batches` (input (B, h, w, C) float32, valid a list of (h, w) bool), or tensors on
    ``device`` from :func:`device_window_batches` (input (B, C, h, w) float32, valid (B, h, w)).
    """
    device = torch.device(device)
    accumulator: RowBandAccumulator | HostStripAccumulator
    if device.type == "cpu" and HOST_OWN_PIXELS_DIRECT:
        accumulator = HostStripAccumulator(num_classes, grid, confidence)
    else:
        accumulator = RowBandAccumulator(num_classes, grid.window_height, grid.width, device)
    on_host = device.type == "cpu"
    weights_np = blend_weights(grid.window_height, grid.window_width, blend)
    weights = weights_np if on_host else torch.from_numpy(weights_np).to(device)
    amp = autocast_dtype(device, precision)
    channels_last = uses_channels_last(device, amp, layout)
    with torch.inference_mode():
        for offsets, images, valids in batches:
            copied = None
            if isinstance(images, torch.Tensor):  # (B, C, h, w) on the device already
                x = images.to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
            else:  # (B, h, w, C) -> NCHW view in channels-last memory: no copy when channels_last
                x = torch_bits(images).to(device, non_blocking=True).permute(0, 3, 1, 2)
                # CUDA: the batch comes from pinned memory, copied while the host goes on; the
                # reader may refill that buffer once this loop takes the batch after next, so
                # the copy (only the copy, not the network) is waited for before the loop goes on
                copied = torch.cuda.Event() if device.type == "cuda" else None
                if copied is not None:
                    copied.record()
                if not channels_last:
                    x = x.contiguous()
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = infer_logits(model, x, tta=tta)
            if isinstance(valids, torch.Tensor):
                valid: Any = valids.numpy() if on_host else valids.to(device)
            else:
                valid = valids if on_host else torch.from_numpy(np.stack(valids)).to(device)
            if not on_host:
                weighted = logits.contiguous() * weights
            for i, (row_off, col_off) in enumerate(offsets):
                if row_off > accumulator.top:
                    emit_rows(accumulator.release(row_off, confidence))
                if on_host:
                    # weighted and added by blocks of rows, in NumPy: torch's two OpenMP threads
                    # made a window's multiply 4-7x slower on a loaded 2-core machine (waiting for
                    # each other), and a whole window's product leaves the cache
                    accumulator.add(logits[i].numpy(), weights_np, valid[i], row_off, col_off)
                else:
                    assert isinstance(accumulator, RowBandAccumulator)
                    accumulator.add(weighted[i], weights, valid[i], row_off, col_off, weighted=True)
            if copied is not None:
                copied.synchronize()
            if on_batch is not None:
                on_batch(len(offsets))
        emit_rows(accumulator.release(grid.height, confidence))


def stitch_in_memory(
    model: nn.Module,
    image: np.ndarray,
    grid: WindowGrid,
    num_classes: int,
    blend: str = "hann",
    tta: bool = False,
    batch_size: int = 4,
) -> np.ndarray:
    """Reference: blended logits (K, H, W) of a whole normalised image held in memory.

    The way many tools stitch (one score array for the whole scene): memory grows with the scene
    area (4 K bytes per pixel plus the image). Used to check the streaming accumulator and as the
    baseline of the benchmark; never used for production.
    """
    height, width = image.shape[1:]
    logit_sum = np.zeros((num_classes, height, width), dtype=np.float32)
    weight_sum = np.zeros((height, width), dtype=np.float32)
    weights = blend_weights(grid.window_height, grid.window_width, blend)
    padded = pad_to(image, max(height, grid.window_height), max(width, grid.window_width))
    windows = list(grid.windows())
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            batch = np.stack(
                [padded[:, r : r + grid.window_height, c : c + grid.window_width] for r, c in chunk]
            )
            logits = infer_logits(
                model, torch.from_numpy(np.ascontiguousarray(batch)), tta=tta
            ).numpy()
            for (r, c), window_logits in zip(chunk, logits, strict=True):
                h, w = min(grid.window_height, height - r), min(grid.window_width, width - c)
                logit_sum[:, r : r + h, c : c + w] += window_logits[:, :h, :w] * weights[:h, :w]
                weight_sum[r : r + h, c : c + w] += weights[:h, :w]
    logit_sum /= weight_sum  # in place: one score array for the whole scene, not two
    return logit_sum


# --------------------------------------------------------------------------------------------
# Whole scenes (files)


# What each task's network is loaded for, in the error a checkpoint of the other task gets.
TASK_PURPOSES = {
    "segmentation": "whole-scene prediction",
    "classification": "chip classification (classify-chips)",
}


def network_from_checkpoint(
    checkpoint_path: str | Path,
    task_name: str = "segmentation",
    loaded: tuple[Mapping[str, Any], dict[str, Any]] | None = None,
) -> tuple[nn.Module, dict[str, Any], Any]:
    """The network of a checkpoint (eval mode, CPU), its metadata and its training task.

    The one loader of U-Net and chip-classifier checkpoints (whole-scene prediction,
    :mod:`s2landcover.classify`): the file is read without unpickling
    (:func:`s2landcover.io.checkpoints.load_model_checkpoint`), the network is built by the task
    the checkpoint was trained for (:func:`s2landcover.training.tasks.task_from_config` on its
    metadata) and the weights must fit it exactly.

    Args:
        checkpoint_path: ``model.pt`` written by training.
        task_name: the task the caller needs (``segmentation`` or ``classification``).
        loaded: ``(state_dict, metadata)`` of the file when the caller has read it already
            (:func:`s2landcover.io.checkpoints.load_model_checkpoint`): not read again.

    Returns:
        (network, metadata, task): the task object (``pad_multiple``, ``min_dominant_fraction``).

    Raises:
        InputError: for a missing, corrupt or foreign checkpoint, a checkpoint of another task, or
            weights that do not fit the architecture named in the metadata (naming the file).
    """
    from s2landcover.io.checkpoints import load_model_checkpoint
    from s2landcover.training.tasks import task_from_config

    state_dict, metadata = loaded if loaded is not None else load_model_checkpoint(checkpoint_path)
    if metadata["task"] != task_name:
        raise InputError(
            f"checkpoint {checkpoint_path} is a {metadata['task']!r} model; "
            f"{TASK_PURPOSES.get(task_name, task_name)} needs a {task_name!r} model"
        )
    classes = ClassTable.from_dict(metadata["classes"])
    model_section = {
        "architecture": metadata["architecture"],
        "encoder": metadata["encoder"],
        # Models written before these keys: a 5-level U-Net without a per-pixel branch.
        "encoder_depth": int(metadata.get("encoder_depth", 5)),
        "pixel_branch": int(metadata.get("pixel_branch", 0)),
        "pixel_branch_indices": metadata.get("pixel_branch_indices", []),
        "pixel_branch_batch_norm": bool(metadata.get("pixel_branch_batch_norm", True)),
    }
    task = task_from_config(
        {
            "task": metadata["task"],
            "model": model_section,
            "classification": {
                "min_dominant_fraction": float(metadata.get("min_dominant_fraction", 0.0))
            },
        }
    )
    model = task.build_model(model_section, len(metadata["bands"]), classes.num_classes)
    try:
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, KeyError) as error:
        raise InputError(
            f"checkpoint {checkpoint_path}: weights do not fit {metadata['architecture']}/"
            f"{metadata['encoder']} with {len(metadata['bands'])} bands and "
            f"{classes.num_classes} classes "
            f"(corrupt checkpoint?): {str(error)[:300]}"
        ) from None
    return model.eval(), metadata, task


def model_from_checkpoint(checkpoint_path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The segmentation network of a checkpoint (eval mode, CPU) and its metadata
    (:func:`network_from_checkpoint` for ``segmentation``).

    Raises:
        InputError: for a missing, corrupt or foreign checkpoint, a classification checkpoint, or
            weights that do not fit the architecture named in the metadata.
    """
    model, metadata, _ = network_from_checkpoint(checkpoint_path, "segmentation")
    return model, metadata


# Relative difference of pixel size (per axis) below which a scene counts as on the model's
# resolution: a model trained on a 9.995 m grid maps a 9.997 m grid (a source kept on its native
# grid, see ingest), while a 20 m scene for a 10 m model is refused.
RESOLUTION_TOLERANCE = 0.01


def open_scene_for_model(
    scene_path: Path,
    out_path: Path,
    metadata: Mapping[str, Any],
    classes: ClassTable,
    validity_path: str | Path | None,
) -> tuple[Any, ClassTable]:
    """The checks every whole-scene predictor (U-Net or pixel model) runs before any work: the
    output is not the scene, the scene has the model's bands (matched by name) at its resolution,
    and the validity raster (if any) is on the scene's grid. Returns the scene's band layout
    (:func:`s2landcover.io.prediction_writer.inspect_scene_bands`) and the class table of the
    output (with 255 "Not observed" when a validity raster is given)."""
    from s2landcover.io.prediction_writer import inspect_scene_bands

    if out_path.resolve() == scene_path.resolve():
        raise InputError(f"--out {out_path} is the scene itself; choose another output path")
    scene = inspect_scene_bands(scene_path, list(metadata["bands"]))
    check_model_resolution(scene_path, scene.grid.resolution, float(metadata["resolution"]))
    if validity_path is not None:
        from s2landcover.validity import check_validity_grid

        check_validity_grid(validity_path, scene.grid, f"scene {scene_path}")
        classes = dataclasses.replace(classes, not_observed=True)
    return scene, classes


def check_model_resolution(
    scene_path: str | Path, scene_resolution: tuple[float, float], model_resolution: float
) -> None:
    """Raise an InputError when the scene's pixel size (x, y in CRS units, metres) differs from
    the model's training resolution by more than :data:`RESOLUTION_TOLERANCE` on either axis."""
    res_x, res_y = scene_resolution
    if not all(
        math.isclose(res, model_resolution, rel_tol=RESOLUTION_TOLERANCE) for res in (res_x, res_y)
    ):
        raise InputError(
            f"scene {scene_path} has {res_x:g} x {res_y:g} m pixels but the model was trained on "
            f"{model_resolution:g} m pixels; resample the scene to {model_resolution:g} m "
            "(the scene stack of ingest)"
        )


def hide_not_observed(
    rows: np.ndarray, confidence: np.ndarray | None, validity_rows: np.ndarray
) -> int:
    """Set predicted ``rows`` (uint8, in place) to 255 "Not observed" where the validity raster's
    rows say cloud, shadow, cirrus or no data (and the confidence to 0 there); returns how many
    pixels that were. Pixels without scene data stay 0."""
    from s2landcover.validity import invalid_pixels

    hidden = invalid_pixels(validity_rows) & (rows != 0)
    rows[hidden] = NOT_OBSERVED
    if confidence is not None:
        confidence[hidden] = 0
    return int(hidden.sum())


def confidence_path(out_path: str | Path) -> Path:
    """Where the confidence raster of ``out_path`` goes: ``<stem>_confidence.tif`` beside it."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}{CONFIDENCE_SUFFIX}{out_path.suffix or '.tif'}")


class SceneOutputs:
    """The output rasters of a whole-scene prediction (U-Net or pixel model), fed finished rows.

    Opened as a context manager: the class COG (colour table, class names, mode overviews), with
    ``with_confidence`` the confidence COG beside it (:func:`confidence_path`), the validity raster
    when given, and a GDAL block cache bounded to a few block rows of the scene
    (:func:`s2landcover.io.prediction_writer.bounded_block_cache`). :meth:`write` takes ``(row_off,
    classes uint8 (n, width), confidence uint8 or None)`` in row order (from a writer thread): it
    hides what the validity raster says is not observed (:func:`hide_not_observed`), counts pixels
    per class and writes the rows. On an error nothing is left at the output paths.
    """

    def __init__(
        self,
        out_path: Path,
        scene: Any,
        classes: ClassTable,
        with_confidence: bool,
        validity_path: str | Path | None,
    ) -> None:
        self.out_path = out_path
        self.scene = scene
        self.classes = classes
        self.validity_path = validity_path
        self.conf_path = confidence_path(out_path) if with_confidence else None
        self.class_pixels = np.zeros(classes.num_classes + 1, dtype=np.int64)
        self.not_observed_pixels = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> SceneOutputs:
        from s2landcover.io.prediction_writer import StreamingRasterWriter, bounded_block_cache
        from s2landcover.io.rasters import open_raster

        grid = self.scene.grid
        with self._stack as stack:  # closes what was opened if a later one fails
            stack.enter_context(bounded_block_cache(grid.width, len(self.scene.indexes)))
            self._class_writer = stack.enter_context(
                StreamingRasterWriter(
                    self.out_path, grid, classes=self.classes, overview_resampling="MODE"
                )
            )
            self._conf_writer = (
                stack.enter_context(
                    StreamingRasterWriter(
                        self.conf_path, grid, description="confidence: max class probability x 255"
                    )
                )
                if self.conf_path is not None
                else None
            )
            self._validity = (
                stack.enter_context(open_raster(self.validity_path))
                if self.validity_path is not None
                else None
            )
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info: Any) -> bool | None:
        return self._stack.__exit__(*exc_info)

    def write(self, item: tuple[int, np.ndarray, np.ndarray | None]) -> None:
        """Write finished rows ``(row_off, classes, confidence)`` (the classes in place: 255 where
        the validity raster says not observed)."""
        row_off, rows, conf = item
        if self._validity is not None:
            window = Window(0, row_off, rows.shape[1], rows.shape[0])
            self.not_observed_pixels += hide_not_observed(
                rows, conf, self._validity.read(1, window=window)
            )
        self.class_pixels += count_values(rows, self.classes.num_classes + 1)
        self._class_writer.write_rows(row_off, rows)
        if self._conf_writer is not None and conf is not None:
            self._conf_writer.write_rows(row_off, conf)

    def summary(self) -> dict[str, Any]:
        """Output paths, pixels per class (no data first), validity raster, not-observed pixels."""
        names = ["no data", *self.classes.names]
        return {
            "out": str(self.out_path),
            "confidence": str(self.conf_path) if self.conf_path is not None else None,
            "class_pixels": {
                name: int(n) for name, n in zip(names, self.class_pixels, strict=True)
            },
            "validity": str(self.validity_path) if self.validity_path is not None else None,
            "not_observed_pixels": self.not_observed_pixels,
        }


def predict_scene(
    checkpoint_path: str | Path,
    scene_path: str | Path,
    out_path: str | Path,
    prediction_cfg: Mapping[str, Any],
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    validity_path: str | Path | None = None,
) -> dict[str, Any]:
    """Predict a whole scene with a trained checkpoint into a land-cover Cloud-Optimized GeoTIFF.

    Args:
        checkpoint_path: ``model.pt`` written by training (:mod:`s2landcover.io.checkpoints`).
        scene_path: scene stack GeoTIFF holding the model's bands (matched by band description) at
            the model's resolution (metres); its own scale/offset per band give reflectance.
        out_path: output GeoTIFF: uint8 classes 1..K, 0 where the scene has no data, on exactly the
            scene's grid (CRS, transform, width, height), colour table and class names, a COG.
            With ``prediction.confidence`` also ``<stem>_confidence.tif`` (max probability x 255).
        prediction_cfg: the validated ``prediction`` config section (window, overlap, blend, tta,
            batch_size, confidence).
        device: ``cpu``, ``cuda``, ``cuda:1``; None picks CUDA when present.
        threads: CPU threads of a pixel model's classifier (None: all CPUs). torch's thread count
            and cuDNN autotuning are process settings, the caller's (``s2lc predict`` sets them).
        progress: log progress (windows done, megapixels per second).
        validity_path: the scene's validity raster (same grid); invalid pixels become 255.

    Returns:
        A summary: output paths, grid, window, stride, windows, seconds, megapixels per second,
        pixel count per class.

    A checkpoint of a pixel classifier (``model.architecture: pixel_gbm``) is mapped by
    :func:`s2landcover.pixel_model.predict_scene_pixels` instead, with the same output contract.

    Raises:
        InputError: for a bad checkpoint, a scene lacking a band, a scene at another resolution.
    """
    from s2landcover import pixel_model
    from s2landcover.io.checkpoints import load_model_checkpoint

    loaded = load_model_checkpoint(checkpoint_path)  # read once: both kinds of model start here
    if pixel_model.is_pixel_architecture(loaded[1].get("architecture", "")):
        return pixel_model.predict_scene_pixels(
            checkpoint_path, scene_path, out_path, prediction_cfg, threads, progress,
            validity_path=validity_path,
        )  # fmt: skip
    model, metadata, _ = network_from_checkpoint(checkpoint_path, "segmentation", loaded=loaded)
    return predict_scene_with_model(
        model,
        metadata,
        scene_path,
        out_path,
        prediction_cfg,
        device=device,
        progress=progress,
        validity_path=validity_path,
    )


def predict_scene_with_model(
    model: nn.Module,
    metadata: Mapping[str, Any],
    scene_path: str | Path,
    out_path: str | Path,
    prediction_cfg: Mapping[str, Any],
    device: str | None = None,
    progress: bool = True,
    grid_shift: int = 0,
    validity_path: str | Path | None = None,
    readers: int | None = None,
    normalise_on_device: bool | None = None,
) -> dict[str, Any]:
    """:func:`predict_scene` with a model already built (any module mapping (B, C, h, w) normalised
    input to (B, K, h, w) logits) and its checkpoint metadata.

    ``readers``: threads that decode (GDAL), normalise and cut the scene's rows (on the device
    path: decode only; None: :func:`default_readers`); the output does not depend on it.
    ``normalise_on_device``: the readers only decode the bands of rows and mask their pixels
    without data, and the inference device cuts, normalises and batches the windows
    (:func:`stored_row_bands`, :func:`device_window_batches`; None: on CUDA, where it takes the
    normalisation pass and every window copy away from the host and halves the bytes to pin and
    copy of uint16 scenes); the same network input, value for value, as the host's.

    ``grid_shift`` moves the inner window starts by that many pixels (0 in production; tests use
    half a window to check that the result does not depend on where windows fall).
    """
    from s2landcover.io.prediction_writer import read_row_bands

    started = time.perf_counter()
    readers = default_readers() if readers is None else int(readers)
    if readers < 1:
        raise InputError(f"readers is {readers}; expected at least 1 reader thread")
    scene_path, out_path = Path(scene_path), Path(out_path)
    scene, classes = open_scene_for_model(
        scene_path, out_path, metadata, ClassTable.from_dict(metadata["classes"]), validity_path
    )
    torch_device = choose_device(device)
    on_device = torch_device.type == "cuda" if normalise_on_device is None else normalise_on_device
    grid = window_grid(
        prediction_cfg, int(metadata["tile_size"]), scene.grid.height, scene.grid.width,
        torch_device, shift=grid_shift,
    )  # fmt: skip
    window = max(grid.window_height, grid.window_width)
    stride = (
        grid.row_starts[1] - grid.row_starts[0] if len(grid.row_starts) > 1 else grid.window_height
    )
    blend = prediction_cfg["blend"]
    blend_weights_1d(1, blend)  # checks the name before any work
    tta = bool(prediction_cfg["tta"])
    with_confidence = bool(prediction_cfg["confidence"])
    norm = InputNormalization(
        scales=scene.scales,
        offsets=scene.offsets,
        mean=tuple(metadata["mean"]),
        std=tuple(metadata["std"]),
        nodata=scene.nodata,
    )
    precision = str(prediction_cfg["precision"])
    amp = autocast_dtype(torch_device, precision)  # checks the name before any work
    layout = str(prediction_cfg["layout"])
    model = model.to(torch_device).eval()
    if uses_channels_last(torch_device, amp, layout):
        model = model.to(memory_format=torch.channels_last)
    requested_batch = prediction_cfg["batch_size"]
    if requested_batch == "auto" and torch_device.type == "cuda":
        per_window = cuda_bytes_per_window(
            model, len(norm.scales), grid.window_height, grid.window_width, classes.num_classes,
            torch_device, amp, uses_channels_last(torch_device, amp, layout), tta,
        )  # fmt: skip
        input_values = len(norm.scales) * grid.window_height * grid.window_width
        free_bytes, _ = torch.cuda.mem_get_info(torch_device)
        if on_device:  # the stacked stored values, their widened integers, the band-first
            # float32 input before its channels-last copy (<= 2 + 4 + 4 + 4 B per value) and the
            # band each window is a view of; two bands of stored values and valid masks
            stored_bytes = 4  # an upper bound: stacks hold (u)int8/16 (Sentinel-2: uint16)
            per_window += (16 + stored_bytes) * input_values
            band_bytes = (len(norm.scales) * stored_bytes + 1) * grid.window_height * grid.width
            free_bytes = max(0, free_bytes - 2 * band_bytes)
        input_bytes = 4 * input_values
        batch_size = device_batch_size(free_bytes, per_window, input_bytes)
        log.info(
            "batch_size auto: %d windows (%.0f MiB per window on %s, %.1f GiB free)",
            batch_size, per_window / 2**20, torch_device, free_bytes / 2**30,
        )  # fmt: skip
    else:
        batch_size = effective_batch_size(
            requested_batch, grid.window_height, grid.window_width, torch_device
        )
    backend = str(prediction_cfg["backend"])
    if backend != "eager" and tta and grid.window_height != grid.window_width:
        log.warning(
            "prediction.backend %s is built for one window shape and tta rotates the %d x %d px "
            "windows: predicting with eager PyTorch instead (set prediction.window to a square "
            "size to use %s with tta)",
            backend, grid.window_height, grid.window_width, backend,
        )  # fmt: skip
        backend = "eager"
    network = network_for_backend(
        model,
        (batch_size, len(norm.scales), grid.window_height, grid.window_width),
        amp,
        backend,
    )
    log.info(
        "predicting %s (%s) with %d windows of %d x %d px, stride %d, blend %s, tta %s on %s",
        scene_path, scene.grid.describe(), grid.count, grid.window_height, grid.window_width,
        stride, blend, tta, torch_device,
    )  # fmt: skip

    done = [0]

    def report(windows: int) -> None:
        done[0] += windows
        step = max(1, grid.count // 10)
        if progress and (done[0] // step != (done[0] - windows) // step or done[0] == grid.count):
            megapixels_done = done[0] / grid.count * grid.height * grid.width / 1e6
            rate = megapixels_done / max(1e-9, time.perf_counter() - started)
            log.info("%d / %d windows, %.2f Mpx/s", done[0], grid.count, rate)

    with SceneOutputs(out_path, scene, classes, with_confidence, validity_path) as outputs:
        writer_thread = BackgroundConsumer(outputs.write)
        try:
            pinned = pinned_host_array if torch_device.type == "cuda" else None
            if on_device:  # readers: decode into pinned bands of rows and mask; the device cuts
                read: Generator[Any, None, None] = prefetch(
                    lambda: stored_row_bands(
                        read_row_bands(
                            scene, grid.row_starts, grid.window_height,
                            buffers=DEVICE_ROW_BAND_BUFFERS, threads=readers, allocate=pinned,
                        ),
                        grid,
                        norm.nodata,
                    ),
                    depth=ROW_BAND_PREFETCH,
                )  # fmt: skip
                batches: Iterator[Any] = device_window_batches(
                    read, grid, norm, batch_size, torch_device
                )
            else:  # readers: decode, normalise and cut into batches (pinned on CUDA)
                read = prefetch(
                    lambda: window_batches(
                        read_row_bands(
                            scene, grid.row_starts, grid.window_height, buffers=1, threads=readers
                        ),
                        grid, norm, batch_size, allocate=pinned, workers=readers,
                    ),
                    depth=2,
                )  # fmt: skip
                batches = read
            with contextlib.closing(read):  # stops the reader thread on errors too
                blend_rows(
                    network, batches, grid, classes.num_classes, writer_thread.put, torch_device,
                    blend=blend, tta=tta, confidence=with_confidence, on_batch=report,
                    precision=precision, layout=layout,
                )  # fmt: skip
        finally:
            writer_thread.close()
    seconds = time.perf_counter() - started
    megapixels = grid.height * grid.width / 1e6
    summary = {
        **outputs.summary(),  # out, confidence, class_pixels, validity, not_observed_pixels
        "width": grid.width,
        "height": grid.height,
        "window": window,
        "window_height": grid.window_height,
        "window_width": grid.window_width,
        "stride": stride,
        "windows": grid.count,
        "batch_size": batch_size,
        "blend": blend,
        "tta": tta,
        "device": str(torch_device),
        "precision": str(amp).removeprefix("torch.") if amp is not None else "float32",
        "channels_last": uses_channels_last(torch_device, amp, layout),
        "normalised_on": "device" if on_device else "host",
        "backend": backend,
        "seconds": round(seconds, 3),
        "megapixels_per_second": round(megapixels / seconds, 4),
    }
    log.info("wrote %s in %.1f s (%.2f Mpx/s)", out_path, seconds, megapixels / seconds)
    return summary
