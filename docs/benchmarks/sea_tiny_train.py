"""A short stand-in for the example's training, to see the sea with and without open-sea chips.

    python docs/benchmarks/sea_tiny_train.py SPLIT_DIR CHIPS_DIR SCENE.tif OUT.tif [EPOCHS]

Trains the example's network (U-Net resnet18, random init, 10 bands, 4 classes) on the training
chips of SPLIT_DIR/split.parquet (read from CHIPS_DIR, the scene's chip store) the way the
pipeline does in outline (reflectance standardised by the training chips' band mean/std, cross
entropy with inverse-sqrt class weights, AdamW 3e-3 with one-cycle, batch 16, random flips and
quarter turns, EPOCHS epochs, default 30), on one CPU thread, without the pipeline's validation,
model selection or loss options; then predicts the whole scene with the package's stitcher
(stitch_in_memory: 96 px windows, overlap 0.25, Hann) and writes the classes (1..4) to OUT.tif.
"""

import sys
import time

import numpy as np
import pandas as pd
import rasterio
import segmentation_models_pytorch as smp
import torch

from s2landcover.io.chipstore import ChipStore
from s2landcover.predict import WindowGrid, stitch_in_memory, window_stride

split_dir, chips_dir, scene_path, out_path = sys.argv[1:5]
epochs = int(sys.argv[5]) if len(sys.argv) > 5 else 30
torch.set_num_threads(1)
torch.manual_seed(0)
rng = np.random.default_rng(0)
split = pd.read_parquet(f"{split_dir}/split.parquet")
train = split[split["split"] == "train"]
store = ChipStore(chips_dir)
images, masks = zip(*(store.read(int(i)) for i in train["store_index"]), strict=True)
scale = np.float32(store.meta["scales"][0])
x = np.stack(images).astype(np.float32) * scale
y = np.stack(masks).astype(np.int64) - 1  # classes 1..4 -> 0..3, no data -> -1 (ignored)
mean = x.transpose(1, 0, 2, 3).reshape(10, -1).mean(axis=1)[None, :, None, None]
std = x.transpose(1, 0, 2, 3).reshape(10, -1).std(axis=1)[None, :, None, None]
x = (x - mean) / std
share = np.bincount(y[y >= 0], minlength=4) / (y >= 0).sum()
weights = 1 / np.sqrt(np.maximum(share, 1e-6))
weights = torch.tensor(weights / weights.mean(), dtype=torch.float32)
print(f"{len(train)} training chips, water share {share[3]:.2%}")
model = smp.Unet("resnet18", encoder_weights=None, in_channels=10, classes=4)
steps_per_epoch = -(-len(x) // 16)
optimizer = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=1e-4)
schedule = torch.optim.lr_scheduler.OneCycleLR(
    optimizer, 3e-3, total_steps=epochs * steps_per_epoch
)
started = time.perf_counter()
for epoch in range(epochs):
    order = rng.permutation(len(x))
    model.train()
    for start in range(0, len(x), 16):
        batch = order[start : start + 16]
        xb, yb = torch.from_numpy(x[batch]), torch.from_numpy(y[batch])
        k = int(rng.integers(4))
        xb, yb = torch.rot90(xb, k, (2, 3)), torch.rot90(yb, k, (1, 2))
        if rng.random() < 0.5:
            xb, yb = xb.flip(3), yb.flip(2)
        loss = torch.nn.functional.cross_entropy(model(xb), yb, weight=weights, ignore_index=-1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    print(f"epoch {epoch + 1}: loss {loss.item():.3f} ({time.perf_counter() - started:.0f} s)")
model.eval()
with rasterio.open(scene_path) as src:
    scene = src.read().astype(np.float32) * np.float32(src.scales[0])
    profile = src.profile
image = ((scene - mean[0]) / std[0]).astype(np.float32)
grid = WindowGrid.for_scene(image.shape[1], image.shape[2], 96, window_stride(96, 0.25))
logits = stitch_in_memory(model, image, grid, 4, "hann")
profile.update(count=1, dtype="uint8", nodata=0)
with rasterio.open(out_path, "w", **profile) as dst:
    dst.write((logits.argmax(axis=0) + 1).astype(np.uint8), 1)
print(f"wrote {out_path}")
