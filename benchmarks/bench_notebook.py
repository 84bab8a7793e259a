"""Benchmark of ``s2landcover.notebook.class_areas`` (dask, chunk by chunk) against a plain loop.

Input: a real class raster, by default the 36,000 x 36,000 px ESA WorldCover tile of
``../shared/data/real/worldcover_N00E006/`` (1.3 Gpx, uint8, EPSG:4326), seen through a VRT that
gives it a UTM grid of 10 m pixels (hectares need a projected CRS) and the class metadata the
pipeline writes. Each case runs in its own process (``benchmarks/_measure.py``: wall time, peak
RSS), with GDAL's block cache capped (``--gdal-cache-mb``) so that the figures are the counting's:

- ``dask``: ``class_areas(open_classes(vrt, chunks=...))`` for each ``--chunks`` size;
- ``dask_splits``: the same with a split table of ``--tile`` px chips in two splits;
- ``loop``: a single-thread rasterio loop over 1024 px windows with ``np.bincount``.

Prints a Markdown table. Example:

    python benchmarks/bench_notebook.py --chunks 1024 2048 --tile 300
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).parent))
from _measure import load_average, python_command, run_measured

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = (
    ROOT.parent / "shared/data/real/worldcover_N00E006/ESA_WorldCover_10m_2021_v200_N00E006_Map.tif"
)
CODES = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)


def write_vrt(source: Path, out: Path) -> Path:
    """A VRT of ``source`` on a UTM 10 m grid with a CLASS_TABLE naming its raw codes."""
    with rasterio.open(source) as src:
        width, height = src.width, src.height
    names = {"names": [f"code {c}" for c in CODES], "colors": ["#808080"] * len(CODES),
             "codes": [[c] for c in CODES], "water": [False] * len(CODES)}  # fmt: skip
    out.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>EPSG:32632</SRS>'
        "<GeoTransform>300000, 10, 0, 300000, 0, -10</GeoTransform>"
        f'<Metadata><MDI key="CLASS_TABLE">{escape(json.dumps(names))}</MDI></Metadata>'
        '<VRTRasterBand dataType="Byte" band="1"><NoDataValue>0</NoDataValue><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{escape(str(source))}</SourceFilename>'
        f'<SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
        f'<DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/></SimpleSource>'
        "</VRTRasterBand></VRTDataset>\n"
    )
    return out


def child(args: argparse.Namespace) -> None:
    """One measured case in this process; prints its figures as JSON."""
    started = time.perf_counter()
    if args.case == "loop":
        counts = np.zeros(256, np.int64)
        with rasterio.open(args.vrt) as src:
            for row in range(0, src.height, 1024):
                for col in range(0, src.width, 1024):
                    window = Window(
                        col, row, min(1024, src.width - col), min(1024, src.height - row)
                    )
                    counts += np.bincount(src.read(1, window=window).ravel(), minlength=256)
        pixels = int(counts[1:].sum())
    else:
        from s2landcover.notebook import class_areas, open_classes

        codes = open_classes(args.vrt, chunks={"band": 1, "y": args.size, "x": args.size})
        splits = None
        if args.case == "dask_splits":
            side = codes.sizes["y"] - args.tile
            rows, cols = np.meshgrid(np.arange(0, side, args.tile), np.arange(0, side, args.tile))
            splits = pd.DataFrame({"scene": "wc", "row_off": rows.ravel(),
                                   "col_off": cols.ravel(), "height": args.tile,
                                   "width": args.tile})  # fmt: skip
            block = splits["row_off"] // (10 * args.tile) + splits["col_off"] // (10 * args.tile)
            splits["split"] = np.where(block % 5 == 0, "val", "train")
        table = class_areas({"wc": codes}, splits)
        pixels = int(table.loc[table["split"] == "all", "pixels"].sum())
    print(json.dumps({"seconds": time.perf_counter() - started, "pixels": pixels}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--tile", type=int, default=300)
    parser.add_argument("--gdal-cache-mb", type=int, default=64)
    parser.add_argument("--child", dest="case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--vrt", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=1024, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        child(args)
        return
    if not args.source.is_file():
        sys.exit(f"{args.source} not found (the real WorldCover tile); pass --source")
    env = {**os.environ, "GDAL_CACHEMAX": str(args.gdal_cache_mb)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    cases = [("dask", size) for size in args.chunks] + [("dask_splits", args.chunks[0])]
    cases.append(("loop", 1024))
    with tempfile.TemporaryDirectory(prefix="bench_notebook_") as tmp:
        vrt = write_vrt(args.source, Path(tmp) / "classes_utm.vrt")
        print(f"source {args.source.name}, GDAL_CACHEMAX={args.gdal_cache_mb} MB, "
              f"{os.cpu_count()} CPUs, load average {load_average():.1f}\n")  # fmt: skip
        print("| case | chunk px | counting s | process wall s | peak RSS MiB | pixels |")
        print("| --- | --- | --- | --- | --- | --- |")
        for case, size in cases:
            command = python_command(
                __file__, "--child", case, "--vrt", str(vrt), "--size", str(size),
                "--tile", str(args.tile),
            )  # fmt: skip
            measured = run_measured(command, env=env)
            print(f"| {case} | {size} | {measured.seconds:.1f} | {measured.wall_s:.1f} | "
                  f"{measured.peak_mib:.0f} | {measured.result.get('pixels')} |")  # fmt: skip


if __name__ == "__main__":
    main()
