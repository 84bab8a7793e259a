"""Window-shaped blobs in the open sea of a land-cover prediction (a trained model's output).

    python docs/benchmarks/sea_blobs_check.py PREDICTION.tif MASK.tif [WINDOW] [OVERLAP]

Open sea = mask water (class 4 of the Aberystwyth example) with no land within 24 px. Reports the
share of open-sea pixels predicted as another class, how those pixels lie relative to the centres
of the prediction windows (WINDOW px, default 96 = the example's tile size; OVERLAP default 0.25,
the prediction.overlap default): the mean Chebyshev distance to the nearest window centre of the
wrong pixels against that of all open-sea pixels, and the share of the wrong-pixel indicator's
variance explained by the position in the window grid (row, col modulo the stride). Blobs centred
on windows give a clearly smaller distance for wrong pixels and a large position share.
"""

import sys

import numpy as np
import rasterio

from s2landcover.predict import WindowGrid, window_stride

prediction_path, mask_path = sys.argv[1], sys.argv[2]
window = int(sys.argv[3]) if len(sys.argv) > 3 else 96
overlap = float(sys.argv[4]) if len(sys.argv) > 4 else 0.25
water_class = 4
with rasterio.open(prediction_path) as src:
    prediction = src.read(1)
with rasterio.open(mask_path) as src:
    mask = src.read(1)
water = np.pad((mask == water_class).astype(np.int64), 24)
integral = np.pad(water.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
side = 49
box = (
    integral[side:, side:]
    - integral[:-side, side:]
    - integral[side:, :-side]
    + integral[:-side, :-side]
)
open_sea = box == side * side
stride = window_stride(window, overlap)
grid = WindowGrid.for_scene(mask.shape[0], mask.shape[1], window, stride)
rc = np.array(grid.row_starts) + window / 2 - 0.5
cc = np.array(grid.col_starts) + window / 2 - 0.5
dr = np.abs(np.arange(mask.shape[0])[:, None] - rc[None, :]).min(axis=1)
dc = np.abs(np.arange(mask.shape[1])[:, None] - cc[None, :]).min(axis=1)
distance = np.maximum(dr[:, None], dc[None, :])
wrong = open_sea & (prediction != water_class)
r, c = np.nonzero(open_sea)
v = wrong[r, c].astype(float)
phase = (r % stride) * stride + (c % stride)
counts = np.bincount(phase, minlength=stride * stride)
means = np.bincount(phase, weights=v, minlength=stride * stride)[counts > 0] / counts[counts > 0]
total = ((v - v.mean()) ** 2).sum()
share = (counts[counts > 0] * (means - v.mean()) ** 2).sum() / total if total else 0.0
names = {k: int((prediction[wrong] == k).sum()) for k in np.unique(prediction[wrong])}
print(
    f"open sea: {open_sea.sum()} px; predicted not water: {wrong.sum()} px "
    f"({wrong.sum() / open_sea.sum():.2%}), by class {names}"
)
print(
    f"mean distance to the nearest window centre (window {window}, stride {stride}): wrong "
    f"{distance[wrong].mean() if wrong.any() else float('nan'):.1f} px, all open sea "
    f"{distance[open_sea].mean():.1f} px; window position explains {share:.0%} of where "
    "the wrong pixels are"
)
