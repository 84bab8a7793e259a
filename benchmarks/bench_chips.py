"""Benchmark of the chips stage: tiling + filtering of a full-size scene, and chip read speed.

Builds (streaming, tiled 512, DEFLATE + predictor) a synthetic SIZE x SIZE 4-band uint16 scene and
its uint8 mask, then measures, each in a subprocess so its peak memory is its own:

- tile_scene (threads as given) + filter_chips: wall time and peak RSS;
- the seeds' way: one small GeoTIFF per chip (image and mask), written in a Python loop;
- random chip reads per second from the chip store (np.load mmap) and from one GeoTIFF per chip.

Prints a Markdown table. Example:

    python benchmarks/bench_chips.py --size 10980 --tile 300 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

TRANSFORM = Affine(10.0, 0.0, 399960.0, 0.0, -10.0, 4600020.0)
CRS = "EPSG:32631"
CLASSES = [
    {"index": 1, "name": "Forest", "codes": [10]},
    {"index": 2, "name": "Grassland", "codes": [30]},
    {"index": 3, "name": "Cropland", "codes": [40]},
    {"index": 4, "name": "Built-up", "codes": [50]},
    {"index": 5, "name": "Bare soil", "codes": [60]},
    {"index": 6, "name": "Water", "codes": [80], "water": True},
]


def build_inputs(folder: Path, size: int, seed: int = 0) -> tuple[Path, Path]:
    """Write the synthetic scene and mask strip by strip (memory: one 512-row strip)."""
    scene, mask = folder / "scene.tif", folder / "mask.tif"
    common = dict(
        driver="GTiff", width=size, height=size, crs=CRS, transform=TRANSFORM, tiled=True,
        blockxsize=512, blockysize=512, compress="deflate", predictor=2, bigtiff="IF_SAFER",
        num_threads="ALL_CPUS",
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    # land-cover patches of 200 px, sea on the west tenth of the scene, no data in the NE corner
    patches = rng.integers(1, 6, (size // 200 + 2, size // 200 + 2)).astype(np.uint8)
    with (
        rasterio.open(scene, "w", count=4, dtype="uint16", nodata=0, **common) as dst_scene,
        rasterio.open(mask, "w", count=1, dtype="uint8", nodata=0, **common) as dst_mask,
    ):
        for row in range(0, size, 512):
            rows = min(512, size - row)
            r = (np.arange(row, row + rows) // 200)[:, None]
            c = (np.arange(size) // 200)[None, :]
            classes = patches[r, c]
            classes[:, : size // 10] = 6
            image = (classes[None].astype(np.uint16) * 400 + 1000) + rng.integers(
                0, 64, (4, rows, size), dtype=np.uint16
            )
            if row < size // 8:
                image[:, :, -size // 8 :] = 0
                classes[:, -size // 8 :] = 0
            window = Window(0, row, size, rows)
            dst_scene.write(image, window=window)
            dst_mask.write(classes, 1, window=window)
    return scene, mask


def run_child(code: str, *args: str) -> tuple[dict, float]:
    """Run python code in a subprocess; return its JSON result and its peak RSS in MiB.

    The peak is the child's own ``getrusage(RUSAGE_SELF).ru_maxrss`` (all its threads), printed
    by the child; for the first child it equals ``getrusage(RUSAGE_CHILDREN)`` here.
    """
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result, result.get("maxrss_kib", 0) / 1024


TILE_CODE = """
import json, resource, sys, time
from s2landcover.chips import tile_scene, filter_chips
from s2landcover.classes import ClassTable
from s2landcover.config import validate_config
scene, mask, out, tile, threads, classes = sys.argv[1:7]
cfg = validate_config({"classes": json.loads(classes), "tile_size": int(tile)})
table = ClassTable.from_config(cfg["classes"])
t0 = time.perf_counter()
summary = tile_scene(scene, mask, "bench", out + "/bench", int(tile), cfg["chips"], table,
                     threads=int(threads))
t1 = time.perf_counter()
result = filter_chips([out + "/bench/index.parquet"], out + "/selected.parquet", cfg["filter"],
                      table)
t2 = time.perf_counter()
print(json.dumps({"tile_s": t1 - t0, "filter_s": t2 - t1, "chips": summary["chips"],
                  "kept": result["kept"], "dropped": result["dropped_by_reason"],
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

SEEDS_TILE_CODE = """
import json, os, resource, sys, time
import rasterio
from rasterio.windows import Window
scene, mask, out, tile, limit = sys.argv[1:6]
tile, limit = int(tile), int(limit)
os.makedirs(out, exist_ok=True)
t0 = time.perf_counter()
n = 0
with rasterio.open(scene) as src, rasterio.open(mask) as msk:
    for row in range(0, src.height - tile + 1, tile):
        for col in range(0, src.width - tile + 1, tile):
            if n >= limit:
                break
            window = Window(col, row, tile, tile)
            for ds, name, count in ((src, "img", src.count), (msk, "msk", 1)):
                data = ds.read(window=window)
                profile = dict(driver="GTiff", width=tile, height=tile, count=count,
                               dtype=data.dtype, crs=ds.crs, transform=ds.window_transform(window))
                with rasterio.open(f"{out}/{name}_{row}_{col}.tif", "w", **profile) as dst:
                    dst.write(data)
            n += 1
print(json.dumps({"seconds": time.perf_counter() - t0, "chips": n,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

READ_CODE = """
import glob, json, resource, sys, time
import numpy as np
import rasterio
from s2landcover.io.chipstore import ChipStore
store_dir, seeds_dir, reads = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
store = ChipStore(store_dir)
picks = rng.integers(0, len(store), reads)
t0 = time.perf_counter()
total = 0
for i in picks:
    image, mask = store.read(int(i))
    total += int(image[0, 0, 0]) + int(mask[0, 0])
store_rate = reads / (time.perf_counter() - t0)
files = sorted(glob.glob(seeds_dir + "/img_*.tif"))
picks = rng.integers(0, len(files), reads)
t0 = time.perf_counter()
for i in picks:
    with rasterio.open(files[i]) as src:
        image = src.read()
    with rasterio.open(files[i].replace("/img_", "/msk_")) as src:
        mask = src.read(1)
    total += int(image[0, 0, 0]) + int(mask[0, 0])
tif_rate = reads / (time.perf_counter() - t0)
print(json.dumps({"store_reads_per_s": store_rate, "geotiff_reads_per_s": tif_rate,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10980, help="scene side in pixels")
    parser.add_argument("--tile", type=int, default=300, help="chip side in pixels")
    parser.add_argument("--threads", type=int, default=2, help="tile_scene threads")
    parser.add_argument("--reads", type=int, default=2000, help="random reads per store type")
    parser.add_argument("--seeds-chips", type=int, default=10**9, help="cap on seeds-way chips")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        scene, mask = build_inputs(work, args.size)
        build_s = time.perf_counter() - t0
        env_classes = json.dumps(CLASSES)
        tiled, tile_mib = run_child(
            TILE_CODE, str(scene), str(mask), str(work / "chips"), str(args.tile),
            str(args.threads), env_classes,
        )  # fmt: skip
        seeds, seeds_mib = run_child(
            SEEDS_TILE_CODE, str(scene), str(mask), str(work / "seeds"), str(args.tile),
            str(args.seeds_chips),
        )  # fmt: skip
        reads, _ = run_child(READ_CODE, str(work / "chips" / "bench"), str(work / "seeds"),
                             str(args.reads))  # fmt: skip
        store_mib = folder_mib(work / "chips" / "bench")
        seeds_dir_mib = folder_mib(work / "seeds")
        scene_mib = scene.stat().st_size / 2**20
        per_chip_store = tiled["tile_s"] / tiled["chips"]
        per_chip_seeds = seeds["seconds"] / seeds["chips"]

    print(f"Synthetic scene {args.size} x {args.size} px, 4 bands uint16 ({scene_mib:.0f} MiB "
          f"DEFLATE) + uint8 mask, built in {build_s:.1f} s; tile {args.tile} px, "
          f"{tiled['chips']} chips; CPU count {os.cpu_count()}.\n")  # fmt: skip
    print("| measure | value |")
    print("|---|---|")
    print(f"| tile_scene ({args.threads} threads) | {tiled['tile_s']:.1f} s "
          f"({tiled['chips'] / tiled['tile_s']:.0f} chips/s) |")  # fmt: skip
    print(f"| filter_chips (index only) | {tiled['filter_s']:.2f} s "
          f"(kept {tiled['kept']}, dropped {tiled['dropped']}) |")  # fmt: skip
    print(f"| peak RSS, tile + filter process | {tile_mib:.0f} MiB |")
    print(f"| chip store size (images.npy + masks.npy + index) | {store_mib:.0f} MiB |")
    print(f"| seeds' way: one GeoTIFF per chip, Python loop ({seeds['chips']} chips) | "
          f"{seeds['seconds']:.1f} s ({seeds['chips'] / seeds['seconds']:.0f} chips/s), "
          f"{seeds_dir_mib:.0f} MiB, peak RSS {seeds_mib:.0f} MiB |")  # fmt: skip
    print(f"| tiling time per chip, seeds' way / chip store | "
          f"{per_chip_seeds / per_chip_store:.1f} x |")  # fmt: skip
    print(f"| random chip reads/s, chip store (np.load mmap, page cache warm) | "
          f"{reads['store_reads_per_s']:.0f} |")  # fmt: skip
    print(f"| random chip reads/s, one GeoTIFF per chip (rasterio, page cache warm) | "
          f"{reads['geotiff_reads_per_s']:.0f} |")  # fmt: skip
    print(f"| read speed, chip store / GeoTIFF per chip | "
          f"{reads['store_reads_per_s'] / reads['geotiff_reads_per_s']:.1f} x |")  # fmt: skip


if __name__ == "__main__":
    main()
