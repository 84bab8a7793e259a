"""How window position shapes a U-Net's output over open sea (no training needed).

Reads the ingested Aberystwyth scene and its mask (s2lc ingest / downsample-mask), takes the
north-west corner (rows 0-479, cols 0-239: open sea, coast, land), normalises the bands with the
scene's mean/std, and predicts it with the example's network (U-Net resnet18, seeded random
weights) through the package's own stitcher (stitch_in_memory: Hann-blended windows of 96 px)
at overlap 0.25 (stride 72, the default) and 0.5 (stride 48). Over open sea (water >= 24 px from
any land) it reports how much of the logits' variance is explained by the position inside the
window grid (pixel row/col modulo the stride) and where the pixels of the minority class lie
relative to the window centres. A 1x1-convolution network (no spatial context, no padding) is
the control.
"""

import sys

import numpy as np
import rasterio
import torch
from torch import nn

from s2landcover.models import build_segmentation_model
from s2landcover.predict import WindowGrid, blend_weights, stitch_in_memory, window_stride

scene_path, mask_path = sys.argv[1], sys.argv[2]
rows, cols = slice(0, 480), slice(0, 240)
with rasterio.open(scene_path) as src:
    full = src.read().astype(np.float32) * np.float32(src.scales[0])
with rasterio.open(mask_path) as src:
    mask = src.read(1)[rows, cols]
mean = full.reshape(10, -1).mean(axis=1)[:, None, None]
std = full.reshape(10, -1).std(axis=1)[:, None, None]
image = ((full - mean) / std)[:, rows, cols].astype(np.float32)
water = (mask == 4).astype(np.int64)
pad = np.pad(water, 24)  # open sea: every pixel within 24 px (Chebyshev) is water
integral = np.pad(pad.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
side = 49
box = (
    integral[side:, side:]
    - integral[:-side, side:]
    - integral[side:, :-side]
    + integral[:-side, :-side]
)
open_sea = box == side * side
print(f"open-sea pixels in the crop: {open_sea.sum()}")


def phase_share(values: np.ndarray, stride: int) -> float:
    """Share of the variance over open sea explained by (row mod stride, col mod stride)."""
    r, c = np.nonzero(open_sea)
    v = values[r, c]
    phase = (r % stride) * stride + (c % stride)
    sums = np.bincount(phase, weights=v, minlength=stride * stride)
    counts = np.bincount(phase, minlength=stride * stride)
    means = sums[counts > 0] / counts[counts > 0]
    between = (counts[counts > 0] * (means - v.mean()) ** 2).sum()
    return float(between / ((v - v.mean()) ** 2).sum())


def centre_distance(grid: WindowGrid, window: int) -> np.ndarray:
    """Chebyshev distance (px) of each pixel to the nearest window centre."""
    rc = np.array(grid.row_starts) + window / 2 - 0.5
    cc = np.array(grid.col_starts) + window / 2 - 0.5
    dr = np.abs(np.arange(image.shape[1])[:, None] - rc[None, :]).min(axis=1)
    dc = np.abs(np.arange(image.shape[2])[:, None] - cc[None, :]).min(axis=1)
    return np.maximum(dr[:, None], dc[None, :])


torch.manual_seed(0)
models = {
    "unet-resnet18 (random weights)": build_segmentation_model("Unet", "resnet18", 10, 4).eval(),
    "1x1 conv (control)": nn.Conv2d(10, 4, 1).eval(),
}
window = 96
for name, model in models.items():
    for overlap in (0.25, 0.5):
        stride = window_stride(window, overlap)
        grid = WindowGrid.for_scene(image.shape[1], image.shape[2], window, stride)
        logits = stitch_in_memory(model, image, grid, 4, "hann")
        share = max(phase_share(logits[k], stride) for k in range(4))
        classes = logits.argmax(axis=0)
        sea_classes = classes[open_sea]
        majority = np.bincount(sea_classes, minlength=4).argmax()
        minority = open_sea & (classes != majority)
        distance = centre_distance(grid, window)
        print(
            f"{name}, overlap {overlap} (stride {stride}): position explains up to {share:.0%} of "
            f"a logit's variance over open sea; minority class on "
            f"{minority.sum() / open_sea.sum():.1%} of open sea; mean distance to the nearest "
            "window centre: minority pixels "
            f"{distance[minority].mean() if minority.any() else float('nan'):.1f} px, all open sea "
            f"{distance[open_sea].mean():.1f} px"
        )

# one window of featureless sea (the median open-sea spectrum everywhere): all variation of the
# output is the network's response to the window's borders (zero padding)
sea = np.median(image[:, open_sea], axis=1).astype(np.float32)
flat = torch.from_numpy(np.broadcast_to(sea[:, None, None], (10, window, window)).copy())[None]
with torch.inference_mode():
    out = models["unet-resnet18 (random weights)"](flat)[0].numpy()
weights = blend_weights(window, window, "hann")
centre = out[:, 24:72, 24:72].reshape(4, -1).mean(axis=1)
border = np.concatenate(
    [
        out[:, :8].reshape(4, -1),
        out[:, -8:].reshape(4, -1),
        out[:, :, :8].reshape(4, -1),
        out[:, :, -8:].reshape(4, -1),
    ],
    axis=1,
).mean(axis=1)
print(
    "featureless sea window: logits centre",
    np.round(centre, 3),
    "border 8 px",
    np.round(border, 3),
    "; argmax differs from the centre's on "
    f"{(out.argmax(0) != centre.argmax()).mean():.0%} of the window,"
    f" Hann weight of the central 48 x 48: {weights[24:72, 24:72].sum() / weights.sum():.0%}",
)
