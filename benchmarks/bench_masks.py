"""Benchmark of mask downsampling: a synthetic 1 m class map onto a 10 m scene grid.

Builds (streaming, once; reused when present) a SIZE x SIZE px 1 m uint8 map, tiled 512, DEFLATE,
blocky classes, and an empty scene on the grid SIZE/FACTOR px at FACTOR m with the same corner.
Then runs, each in its own process (wall time and peak RSS of that process, VmHWM):

- ``downsample_mask`` with default settings (decimated fast path), 1 and ``--threads`` threads;
- ``downsample_mask`` with the fast path switched off (GDAL's warper per window, WarpedVRT);
- the ``gdalwarp -r near`` command onto the same grid (when installed), single- and multi-threaded;
- the floor of a tiled source: reading (decoding) every source block once.

and checks that all outputs are identical (after remapping). Prints a Markdown table.

    python benchmarks/bench_masks.py --size 40000 --factor 10 --threads 2 --workdir /tmp/bench_masks
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

CRS = "EPSG:32631"
ORIGIN = (400_000.0, 4_700_000.0)
CODES = np.array([10, 20, 30, 40, 50, 60, 80], dtype=np.uint8)


def build_map(path: Path, size: int, speckle: float, strip_rows: int = 512) -> None:
    """A size x size 1 m map of blocky classes (cells of 37 x 53 px) with a ``speckle`` fraction of
    random single pixels (so that it compresses like a real map, not like flat blocks), written
    strip by strip."""
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint8",
        "crs": CRS,
        "transform": Affine(1, 0, ORIGIN[0], 0, -1, ORIGIN[1]),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "bigtiff": "YES",
        "num_threads": "ALL_CPUS",
    }
    cols = np.arange(size, dtype=np.int64) // 53
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for row in range(0, size, strip_rows):
            height = min(strip_rows, size - row)
            rows = np.arange(row, row + height, dtype=np.int64)[:, None] // 37
            cell = (rows * 73_856_093) ^ (cols[None, :] * 19_349_663)
            codes = CODES[cell % len(CODES)]
            noisy = rng.random(codes.shape) < speckle
            codes[noisy] = rng.choice(CODES, size=int(noisy.sum()))
            dst.write(codes, 1, window=Window(0, row, size, height))
    tmp.rename(path)


def build_scene(path: Path, size: int, factor: int) -> None:
    """An empty one-band scene stack on the target grid (only its grid is used)."""
    side = size // factor
    profile = {
        "driver": "GTiff",
        "width": side,
        "height": side,
        "count": 1,
        "dtype": "uint16",
        "crs": CRS,
        "transform": Affine(factor, 0, ORIGIN[0], 0, -factor, ORIGIN[1]),
        "tiled": True,
        "compress": "deflate",
        "sparse_ok": True,
    }
    with rasterio.open(path, "w", **profile):
        pass


def run_measured(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process.

    The peak is the child's VmHWM, polled from /proc while it runs (rusage's ru_maxrss would count
    the pages of this Python process that the child inherits at fork).
    """
    start = time.perf_counter()
    process = subprocess.Popen(command)
    peak_kb = 0
    status_path = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status_path.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.01)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(command)}")
    return seconds, peak_kb / 1024


def python_job(body: str) -> list[str]:
    return [sys.executable, "-c", body]


def downsample_job(source: Path, scene: Path, out: Path, threads: int, fast: bool) -> list[str]:
    classes = [{"index": i + 1, "name": f"c{c}", "codes": [int(c)]} for i, c in enumerate(CODES)]
    return python_job(
        "from s2landcover import masks\n"
        "from s2landcover.classes import ClassTable\n"
        "from s2landcover.config import validate_config\n"
        + ("" if fast else "masks.aligned_decimation = lambda source, target: None\n")
        + f"classes = ClassTable.from_config({classes!r})\n"
        f"s = masks.downsample_mask({str(source)!r}, {str(scene)!r}, {str(out)!r}, classes,"
        f" validate_config({{}})['mask'], threads={threads}, progress=False)\n"
        "print('   ', s['method'], s['windows'], s['seconds'], 's', flush=True)\n"
    )


def floor_job(source: Path) -> list[str]:
    return python_job(
        "import rasterio\n"
        "from s2landcover.io.warp import gdal_env\n"
        f"with gdal_env(), rasterio.open({str(source)!r}, OVERVIEW_LEVEL='NONE') as src:\n"
        "    for _, window in src.block_windows(1):\n"
        "        src.read(1, window=window)\n"
    )


def gdalwarp_job(source: Path, out: Path, size: int, factor: int, multi: bool) -> list[str]:
    side = size // factor
    left, top = ORIGIN
    right, bottom = left + side * factor, top - side * factor
    command = ["gdalwarp", "-q", "-overwrite", "-r", "near", "-ovr", "NONE", "-t_srs", CRS]
    command += ["-te", str(left), str(bottom), str(right), str(top), "-ts", str(side), str(side)]
    command += ["-co", "TILED=YES", "-co", "COMPRESS=DEFLATE"]
    if multi:
        command += ["-multi", "-wo", "NUM_THREADS=ALL_CPUS"]
    return [*command, str(source), str(out)]


def read_remapped(path: Path, raw_codes: bool) -> np.ndarray:
    with rasterio.open(path) as src:
        data = src.read(1)
    if raw_codes:
        lut = np.zeros(256, dtype=np.uint8)
        lut[CODES] = np.arange(1, len(CODES) + 1)
        data = lut[data]
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=40_000, help="map side in 1 m pixels")
    parser.add_argument("--factor", type=int, default=10, help="scene pixel / map pixel")
    parser.add_argument("--threads", type=int, default=2, help="threads of the parallel runs")
    parser.add_argument("--speckle", type=float, default=0.02, help="fraction of random pixels")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_masks"))
    parser.add_argument("--skip-general", action="store_true", help="skip the warper-only run")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    source = args.workdir / f"map_{args.size}_speckle{args.speckle:g}.tif"
    scene = args.workdir / f"scene_{args.size // args.factor}.tif"
    if not source.exists():
        start = time.perf_counter()
        build_map(source, args.size, args.speckle)
        print(f"built {source} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    build_scene(scene, args.size, args.factor)
    side = args.size // args.factor

    jobs: list[tuple[str, list[str], Path | None, bool]] = []
    jobs.append(("read every source block once (floor)", floor_job(source), None, False))
    for threads in sorted({1, args.threads}):
        out = args.workdir / f"mask_fast_{threads}.tif"
        name = f"downsample_mask, defaults (decimated), {threads} thread(s)"
        jobs.append((name, downsample_job(source, scene, out, threads, fast=True), out, False))
    if not args.skip_general:
        out = args.workdir / "mask_warp.tif"
        name = f"downsample_mask, warper only (WarpedVRT per window), {args.threads} threads"
        jobs.append(
            (name, downsample_job(source, scene, out, args.threads, fast=False), out, False)
        )
    have_gdalwarp = shutil.which("gdalwarp") is not None
    if have_gdalwarp:
        for multi in (False, True):
            out = args.workdir / f"gdalwarp_{'multi' if multi else 'single'}.tif"
            name = "`gdalwarp -r near`" + (" -multi -wo NUM_THREADS=ALL_CPUS" if multi else "")
            jobs.append((name, gdalwarp_job(source, out, args.size, args.factor, multi), out, True))

    rows = []
    for name, command, out, raw in jobs:
        print(f"running: {name}", file=sys.stderr)
        seconds, peak_mb = run_measured(command)
        rows.append((name, seconds, peak_mb, out, raw))

    reference = next((r for r in rows if r[0].startswith("`gdalwarp -r near`")), None)
    reference = reference or next(r for r in rows if "warper only" in r[0] or "1 thread" in r[0])
    ref_data = read_remapped(reference[3], reference[4])
    print(
        f"\nSource: {args.size:,} x {args.size:,} px 1 m uint8, tiled 512, DEFLATE, blocky classes"
    )
    print(f"({source.stat().st_size / 1e6:.0f} MB on disk); target {side:,} x {side:,} px at")
    gdalwarp_state = "present" if have_gdalwarp else "ABSENT"
    print(f"{args.factor} m, same CRS and corner. gdalwarp: {gdalwarp_state}.")
    print(f"Ratios relative to: {reference[0]}.\n")
    print("| run | wall s | peak RSS MB | time / reference | output identical |")
    print("|---|---:|---:|---:|---|")
    for name, seconds, peak_mb, out, raw in rows:
        identical = "-" if out is None else str(np.array_equal(read_remapped(out, raw), ref_data))
        ratio = seconds / reference[1]
        print(f"| {name} | {seconds:.2f} | {peak_mb:.0f} | {ratio:.2f} | {identical} |")


if __name__ == "__main__":
    main()
