"""Benchmark ingest: time and peak memory for a full-size (10,980 x 10,980 px) synthetic scene.

Builds a synthetic Sentinel-2 L2A product as a band folder (one GeoTIFF per band at its native
resolution: 10 m bands 10,980 px, 20 m bands 5,490 px, DEFLATE-compressed and tiled like COGs) with
a no-data triangle, then runs ``ingest_scene`` in a fresh subprocess per band set and reports wall
time and peak resident memory (``/usr/bin/time -v``, else ``getrusage``). Per-band GeoTIFFs are used
instead of JP2 because writing 10,980 px lossless JP2s takes minutes here; ``--jp2-size`` adds a
smaller SAFE product (real JP2 + MTD_MSIL2A.xml) to measure the JP2 decoding path.

    python benchmarks/bench_ingest.py --size 10980 --sets 4,10 --jp2-size 2745

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from s2landcover.io.demo_products import SafeProductInfo, write_safe_product
from s2landcover.io.sentinel2 import NATIVE_RESOLUTION

BAND_SETS = {
    4: ["B02", "B03", "B04", "B08"],
    10: ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"],
    12: ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"],
}
CRS_UTM = CRS.from_epsg(32631)
X0, Y0 = 399960.0, 4600020.0  # like tile 31TCG


def synthetic_rows(band: str, row: int, height: int, width: int, scale: int) -> np.ndarray:
    """Field-like DN values (64 px parcels at 10 m, noise), a no-data upper-right triangle."""
    rng = np.random.default_rng(zlib.crc32(f"{band}:{row}".encode()))
    rows = (np.arange(row, row + height) * scale)[:, None]
    cols = (np.arange(width) * scale)[None, :]
    parcel = ((rows // 64) * 7919 + (cols // 64) * 104729) % 997
    values = 1500 + 3 * parcel + rng.integers(0, 40, size=(height, width))
    size = width * scale
    nodata = (cols / size - 0.7) / 0.3 + (0.35 - rows / size) / 0.35 > 1
    return np.where(nodata, 0, values).astype(np.uint16)


def write_band_folder(folder: Path, size: int, bands: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for band in bands:
        scale = NATIVE_RESOLUTION[band] // 10
        n = -(-size // scale)
        profile = {
            "driver": "GTiff",
            "width": n,
            "height": n,
            "count": 1,
            "dtype": "uint16",
            "crs": CRS_UTM,
            "transform": Affine(10.0 * scale, 0, X0, 0, -10.0 * scale, Y0),
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "compress": "deflate",
            "zlevel": 1,
            "predictor": 2,
            "num_threads": "ALL_CPUS",
        }
        with rasterio.open(folder / f"{band}.tif", "w", **profile) as dst:
            for row in range(0, n, 1024):
                h = min(1024, n - row)
                dst.write(synthetic_rows(band, row, h, n, scale), 1, window=Window(0, row, n, h))
    scales = {b: 1e-4 for b in bands}
    offsets = {b: -0.1 for b in bands}
    (folder / "scene.json").write_text(json.dumps({"scales": scales, "offsets": offsets}))


def write_jp2_safe(path: Path, size: int) -> None:
    info = SafeProductInfo("L2A", "T31TCG", dt.datetime(2024, 6, 15, 10, 50, 31))
    grids = {}
    from s2landcover.io.rasters import Grid

    for res in (10, 20, 60):
        n = -(-size // (res // 10))
        grids[res] = Grid(CRS_UTM, Affine(res, 0, X0, 0, -res, Y0), n, n)
    padded = -(-size // 6) * 6

    def strips():  # type: ignore[no-untyped-def]
        for row in range(0, padded, 600):
            h = min(600, padded - row)
            arrays = {}
            for band in BAND_SETS[12]:
                k = NATIVE_RESOLUTION[band] // 10
                arrays[band] = synthetic_rows(band, row // k, h // k, padded // k, k)
            yield row, arrays

    write_safe_product(path, info, grids, strips())


def run_ingest(source: dict, bands: list[str], out: Path, block_size: int, threads: int) -> dict:
    code = (
        "import json, sys; from s2landcover.ingest import ingest_scene; "
        f"s = ingest_scene({source!r}, {bands!r}, {str(out)!r}, "
        f"{{'block_size': {block_size}, 'resampling': 'bilinear'}}, threads={threads}); "
        "print('SUMMARY', json.dumps(s))"
    )
    time_cmd = shutil.which("time") or "/usr/bin/time"
    command = [sys.executable, "-c", code]
    use_time = os.path.exists(time_cmd)
    if use_time:
        command = [time_cmd, "-v", *command]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"ingest failed:\n{result.stdout}\n{result.stderr}")
    if use_time:
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
        peak_mb = int(match.group(1)) / 1024 if match else float("nan")
    else:
        import resource

        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary = json.loads(result.stdout.split("SUMMARY", 1)[1])
    return {"wall_s": wall, "ingest_s": summary["seconds"], "peak_mb": peak_mb, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10980, help="scene side in 10 m pixels")
    parser.add_argument("--sets", default="4,10", help="band sets to ingest (4, 10, 12)")
    parser.add_argument("--block-size", type=int, default=1024, help="ingest.block_size")
    parser.add_argument("--threads", type=int, default=2, help="ingest threads")
    parser.add_argument("--jp2-size", type=int, default=0, help="also time a JP2 SAFE of this side")
    parser.add_argument("--workdir", default=None, help="folder for the synthetic products")
    args = parser.parse_args()

    sets = [int(s) for s in args.sets.split(",")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_ingest_"))
    rows = []
    try:
        folder = work / "bands"
        needed = sorted({b for s in sets for b in BAND_SETS[s]})
        started = time.perf_counter()
        write_band_folder(folder, args.size, needed)
        build_s = time.perf_counter() - started
        print(f"built {args.size} px band folder in {build_s:.1f} s", file=sys.stderr)
        for n in sets:
            result = run_ingest(
                {"type": "band_files", "path": str(folder)},
                BAND_SETS[n],
                work / f"stack{n}.tif",
                args.block_size,
                args.threads,
            )
            rows.append(("GeoTIFF per band", args.size, n, result))
            (work / f"stack{n}.tif").unlink()
        if args.jp2_size:
            safe = work / "S2B_MSIL2A_BENCH.SAFE"
            started = time.perf_counter()
            write_jp2_safe(safe, args.jp2_size)
            print(
                f"built {args.jp2_size} px SAFE in {time.perf_counter() - started:.1f} s",
                file=sys.stderr,
            )
            for n in sets:
                result = run_ingest(
                    {"type": "safe", "path": str(safe)},
                    BAND_SETS[n],
                    work / f"jp2_{n}.tif",
                    args.block_size,
                    args.threads,
                )
                rows.append(("SAFE, lossless JP2", args.jp2_size, n, result))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    print(
        "| source | scene (px) | bands | resampled | ingest (s) | Mpx/s (10 m grid) "
        "| peak RSS (MB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind, size, n, result in rows:
        resampled = len(result["summary"]["resampled"])
        rate = size * size / 1e6 / result["ingest_s"]
        print(
            f"| {kind} | {size} x {size} | {n} | {resampled} | {result['ingest_s']:.1f} | "
            f"{rate:.1f} | {result['peak_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
