"""Ingest and mask time on a small synthetic case (docs/qgis.md, COG stack and mask).

Usage: ``PYTHONPATH=src python benchmarks/bench_cog_ingest_mask.py OUT_DIR [INPUT_DIR]``; the
code measured is the one PYTHONPATH points at (run it on two checkouts to compare). Inputs (a
4-band 2,048 px uint16 GeoTIFF and a 2 m class map over it) are made once in INPUT_DIR.
"""

import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

import s2landcover
from s2landcover.classes import ClassTable
from s2landcover.config import validate_config
from s2landcover.ingest import ingest_scene
from s2landcover.masks import downsample_mask

CONFIG = validate_config({})
CLASSES = ClassTable.from_config(CONFIG["classes"])
BANDS = ["B02", "B03", "B04", "B08"]
SIZE = 2048
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
inputs = Path(sys.argv[2] if len(sys.argv) > 2 else out / "inputs")
inputs.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(7)
T = Affine(10.0, 0, 400000.0, 0, -10.0, 4600000.0)
if not (inputs / "source.tif").exists():
    smooth = np.kron(rng.integers(500, 4000, (4, SIZE // 16, SIZE // 16)), np.ones((16, 16)))
    image = (smooth + rng.integers(0, 200, (4, SIZE, SIZE))).astype(np.uint16)
    prof = dict(
        driver="GTiff",
        count=4,
        dtype="uint16",
        crs="EPSG:32631",
        width=SIZE,
        height=SIZE,
        transform=T,
        nodata=0,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    with rasterio.open(inputs / "source.tif", "w", **prof) as dst:
        dst.write(image)
        dst.descriptions = tuple(BANDS)
    codes = np.array([c for cls in CONFIG["classes"] for c in cls["codes"][:1]], np.uint8)
    fine = np.kron(
        codes[rng.integers(0, len(codes), (SIZE // 8, SIZE // 8))], np.ones((40, 40), np.uint8)
    )
    prof.update(
        count=1,
        dtype="uint8",
        width=fine.shape[1],
        height=fine.shape[0],
        transform=Affine(2.0, 0, 400000.0, 0, -2.0, 4600000.0),
    )
    with rasterio.open(inputs / "map.tif", "w", **prof) as dst:
        dst.write(fine, 1)
times = {"ingest": [], "mask": []}
for _ in range(3):
    t = time.perf_counter()
    ingest_scene(
        {"type": "geotiff", "path": str(inputs / "source.tif"), "scale": 1e-4},
        BANDS,
        out / "scene.tif",
        {"block_size": 1024},
    )
    times["ingest"].append(time.perf_counter() - t)
    t = time.perf_counter()
    downsample_mask(
        inputs / "map.tif",
        out / "scene.tif",
        out / "mask.tif",
        CLASSES,
        CONFIG["mask"],
        progress=False,
    )
    times["mask"].append(time.perf_counter() - t)
print(s2landcover.__file__)
print(
    {k: [round(v, 2) for v in vs] for k, vs in times.items()},
    "min:",
    {k: round(min(v), 2) for k, v in times.items()},
)
print(
    "scene COG:",
    cog_validate(str(out / "scene.tif"), quiet=True)[0],
    "mask COG:",
    cog_validate(str(out / "mask.tif"), quiet=True)[0],
)
print("sizes MB:", {p.name: round(p.stat().st_size / 1e6, 2) for p in sorted(out.iterdir())})
