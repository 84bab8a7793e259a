"""Decoding a scene stack: ZSTD with and without the horizontal predictor, on real Sentinel-2 bands.

Whole-scene prediction on a GPU spends most of its host CPU decoding the scene stack
(docs/benchmarks/predict.md, "the host side of a GPU run"): the ingest writes it band-interleaved,
512 px tiles, ZSTD level 1 with ``PREDICTOR=2`` (io/rasters.py's profile for integer rasters).
This rewrites real uint16 reflectances in that layout with predictor 1 (none) and 2 at ZSTD
levels 1 and 3 and measures, per variant, the file size (share of the raw bytes) and the decode
rate (raw MiB per CPU-second of a whole read, GDAL's block cache off, best of 3, one thread).

Data: ``../shared/data/real/`` (see its README): the Aberystwyth 10-band 10 m scene and the
Ireland L2A tile's 60 m bands, each tiled 3 x 3 so that a read spans many blocks. Skips a source
that is absent.

    python benchmarks/bench_stack_decode.py
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path

import numpy as np
import rasterio

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
SOURCES = {
    "Aberystwyth, 10 bands, 10 m": [REAL / "aberystwyth" / "aber_s2_10band_10m.tif"],
    "Ireland T29UNU L2A, 11 bands, 60 m": sorted(
        (REAL / "s2_l2a_t29unu_20221005").glob("T29UNU_*_B*_60m.tif")
    ),
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def real_bands(paths: list[Path]) -> np.ndarray:
    """(bands, rows, cols) uint16 of one multi-band file or several one-band files, tiled 3 x 3."""
    if len(paths) == 1:
        with rasterio.open(paths[0]) as dataset:
            stack = dataset.read()
    else:
        layers = []
        for path in paths:
            with rasterio.open(path) as dataset:
                layers.append(dataset.read(1))
        stack = np.stack(layers)
    return np.tile(stack.astype(np.uint16), (1, 3, 3))


def decode_rate(path: Path, raw_bytes: int, repeats: int = 3) -> float:
    """Raw MiB per CPU-second of reading the whole file (best of ``repeats``, no block cache)."""
    best = float("inf")
    for _ in range(repeats):
        with rasterio.Env(GDAL_CACHEMAX=1), rasterio.open(path) as dataset:
            started = cpu_seconds()
            dataset.read()
            best = min(best, cpu_seconds() - started)
    return raw_bytes / best / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    print("| scene | size (px) | predictor | ZSTD level | MiB | share of raw | decode MiB/CPU-s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, paths in SOURCES.items():
            if not paths or not all(path.exists() for path in paths):
                print(f"| {name} | absent: skipped | | | | | |")
                continue
            stack = real_bands(paths)
            bands, height, width = stack.shape
            for predictor in (1, 2):
                for level in (1, 3):
                    path = Path(tmp) / f"stack_p{predictor}_z{level}.tif"
                    profile = {
                        "driver": "GTiff", "width": width, "height": height, "count": bands,
                        "dtype": "uint16", "tiled": True, "blockxsize": 512, "blockysize": 512,
                        "compress": "zstd", "zstd_level": level, "predictor": predictor,
                        "interleave": "band", "crs": "EPSG:32630",
                        "transform": rasterio.transform.from_origin(0, 0, 10, 10),
                    }  # fmt: skip
                    with rasterio.open(path, "w", **profile) as out:
                        out.write(stack)
                    size = os.path.getsize(path)
                    rate = decode_rate(path, stack.nbytes)
                    print(
                        f"| {name} | {bands} x {height:,} x {width:,} | {predictor} | {level} | "
                        f"{size / 2**20:.1f} | {size / stack.nbytes:.2f} | {rate:,.0f} |"
                    )


if __name__ == "__main__":
    main()
