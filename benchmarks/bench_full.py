"""The pipeline's stages at full size: one Sentinel-2 tile (10,980 x 10,980 px, 10 bands) and a
1 m land-cover map of it (109,800 x 109,800 px); wall time, peak RSS and disk per stage.

Run with ``make bench-full`` (about an hour on a loaded 2-core machine; ~5 GB of scratch disk,
removed at the end). Not part of the test suite, which runs it only at toy size (``--size 200``).

What it does, in a scratch folder (``--work``):

1. Inputs (measured too, but not pipeline stages):
   - the 1 m map: the demo's landscape (:class:`s2landcover.demo.DemoLandscape`, the same one the
     workflow's demo uses) evaluated every ``--map-step`` metres and repeated to 1 m pixels, written
     window by window as a tiled, DEFLATE-compressed GeoTIFF with overviews (the demo's writer,
     :func:`s2landcover.io.windowed.write_geotiff_windows`): nothing full-size is ever in memory.
     At ``--map-step 1`` its pixels are the demo's map's (about 40 CPU-minutes at full size);
   - the scene: a Sentinel-2 L2A SAFE product whose bands are lossless JP2 at their native
     resolution (10 m bands 10,980², 20 m bands 5,490², 60 m bands 1,830², SCL), written by the
     demo's SAFE writer from one spectrum per class (:func:`write_scene`, a few CPU-minutes), or
     with ``--scene-maker demo`` by ``s2lc make-demo-scene`` itself (~15 CPU-minutes).
2. The stages, each the project's own command (``s2lc ...``, as the workflow's rules call them) in
   its own process: ingest (10 bands: B02 B03 B04 B08 at 10 m, B05 B06 B07 B8A B11 B12 at 20 m),
   validity (from SCL), downsample-mask (the 1 m map onto the 10 m grid), tile, filter, split and
   predict (a small smp U-Net, random weights, saved in the project's ``model.pt`` format: its speed
   is a trained one's; its map is not meant to be right).

Per stage it records the wall time, the peak RSS of the stage's process tree (psutil, the sum over
the process and its children, sampled every 0.2 s; and the largest single process from GNU time's
``%M`` where present), the bytes written to disk (Linux I/O accounting of the whole process tree,
GNU time's ``%O``: what the stage wrote, temporary files included) and the size of its outputs.
The table goes to ``--out`` (Markdown) with the date, machine, load average and command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rasterio.windows import Window

BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]
GNU_TIME = "/usr/bin/time"
LIMIT_GIB = 8.0
SAMPLE_S = 0.2


# ----------------------------------------------------------------------------------- inputs


def write_map(
    path: Path, size: int, factor: int, step: int, seed: int, origin: list[float]
) -> None:
    """The demo landscape as a ``size * factor`` px map (``10 / factor`` m pixels, WorldCover
    codes), evaluated every ``step`` pixels and repeated; window by window (1024 px), compressed,
    tiled, with overviews. Memory: the landscape's noise grids and a few windows."""
    from s2landcover.demo import (
        WINDOW_1M,
        WORLDCOVER_COLORS,
        DemoLandscape,
        _demo_grid,
        _prefetched,
    )

    pixel = 10.0 / factor
    cfg = {"size": size, "mask_factor": factor, "crs": "EPSG:32631", "origin": origin}
    grid = _demo_grid(cfg, pixel)
    landscape = DemoLandscape(grid.width * pixel, seed)
    window_side = WINDOW_1M - WINDOW_1M % step

    def codes_of(window: Window) -> tuple[Window, np.ndarray]:
        cols = -(-window.width // step)
        rows = -(-window.height // step)
        east = (window.col_off + np.arange(cols) * step + step / 2) * pixel
        south = (window.row_off + np.arange(rows) * step + step / 2) * pixel
        coarse = landscape.codes(east, south)
        fine = np.repeat(np.repeat(coarse, step, axis=0), step, axis=1)
        return window, np.ascontiguousarray(fine[: window.height, : window.width])

    windows = [
        Window(c, r, min(window_side, grid.width - c), min(window_side, grid.height - r))
        for r in range(0, grid.height, window_side)
        for c in range(0, grid.width, window_side)
    ]
    from s2landcover.io.windowed import write_geotiff_windows

    write_geotiff_windows(
        path,
        grid,
        "uint8",
        0,
        _prefetched(codes_of, windows, workers=2),
        descriptions=["land cover (ESA WorldCover codes)"],
        tags={"DEMO_SEED": str(seed), "MAP_STEP_PX": str(step)},
        colormap=WORLDCOVER_COLORS,
        overview_factors=[f for f in (2, 4, 8, 16, 32) if grid.width / f >= 128],
    )


def write_scene(path: Path, size: int, seed: int) -> None:
    """A Sentinel-2 L2A SAFE product of the demo area, cheaply: the demo landscape's classes at the
    10 m pixel centres, one spectrum per class (the demo's), multiplicative noise; 20 m and 60 m
    bands the block means of the 10 m reflectance; SCL from the classes; the demo's no-data
    triangle. Written by the demo's SAFE writer (lossless JP2 at native resolution), strip by strip.
    ``s2lc make-demo-scene`` (``--scene-maker demo``) mixes the spectra from the 1 m map instead:
    more realistic, ~15 CPU-minutes at full size."""
    import datetime as dt_

    from s2landcover import demo

    cfg = {"size": size, "seed": seed}
    grid10 = demo._demo_grid(demo._check_demo_cfg(cfg), demo.SCENE_RESOLUTION)
    landscape = demo.DemoLandscape(size * demo.SCENE_RESOLUTION, seed)
    rng = np.random.default_rng(seed + 1)
    names = {
        demo.FOREST: "broadleaf",
        demo.GRASSLAND: "grass_green",
        demo.CROPLAND: "green_crop",
        demo.BUILT_UP: "built",
        demo.BARE: "bare_soil",
        demo.WATER: "inland_water",
    }
    lut = np.zeros((256, len(demo.L2A_BANDS)), np.float32)
    for code, name in names.items():
        lut[code] = demo.SPECTRA[name]
    padded = -(-size // 6) * 6
    info = demo.SafeProductInfo(
        level="L2A",
        tile_id=demo.tile_id_for(grid10.crs),
        sensing_time=dt_.datetime(2024, 6, 15, 10, 50, 31),
        processing_baseline="05.10",
        quantification=10000,
        add_offset=-1000,
    )
    grids = {res: demo._coarser(grid10, res) for res in (10, 20, 60)}

    def strips() -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        east = demo._pixel_centres(0, padded, demo.SCENE_RESOLUTION)
        for row in range(0, padded, demo.STRIP_10M):
            h = min(demo.STRIP_10M, padded - row)
            south = demo._pixel_centres(row, h, demo.SCENE_RESOLUTION)
            codes = landscape.codes(east, south)
            sea = landscape.is_sea(east, south)
            reflectance = np.moveaxis(lut[codes], -1, 0)
            reflectance[:, sea] = np.asarray(demo.SPECTRA["sea"], np.float32)[:, None]
            reflectance *= 1 + 0.04 * rng.standard_normal(reflectance.shape, dtype=np.float32)
            water = (codes == demo.WATER).astype(np.float32)
            out: dict[str, np.ndarray] = {}
            for res in (10, 20, 60):
                k = res // 10
                rows = np.arange(row // k, row // k + h // k) + 0.5
                cols = np.arange(padded // k) + 0.5
                nodata = demo.no_data_corner(rows, cols, size / k, size / k)
                data = reflectance
                if k > 1:
                    data = reflectance.reshape(-1, h // k, k, padded // k, k).mean(axis=(2, 4))
                dn = demo.reflectance_to_dn(data, nodata)
                for band in demo.L2A_BANDS:
                    if demo.NATIVE_RESOLUTION[band] == res:
                        out[band] = dn[demo.L2A_BANDS.index(band)]
                if res == 20:
                    share = water.reshape(h // k, k, padded // k, k).mean(axis=(1, 3))
                    scl = demo._scl(data, share)
                    scl[nodata] = 0
                    out["SCL"] = scl
            yield row, out

    demo.write_safe_product(path, info, grids, strips())


def write_model(path: Path, encoder: str, tile: int) -> None:
    """A U-Net with random weights (seed 0) for the 10 bands and the 6 demo classes, as model.pt."""
    import torch

    from s2landcover.classes import ClassTable
    from s2landcover.io.checkpoints import save_model_checkpoint
    from s2landcover.models import build_segmentation_model

    torch.manual_seed(0)
    classes = config_dict(Path("unused"), Path("unused"), tile)["classes"]
    model = build_segmentation_model("Unet", encoder, len(BANDS), len(classes))
    save_model_checkpoint(
        path,
        model.state_dict(),
        {
            "task": "segmentation",
            "architecture": "Unet",
            "encoder": encoder,
            "bands": BANDS,
            "scales": [1e-4] * len(BANDS),
            "offsets": [-0.1] * len(BANDS),
            "mean": [0.1] * len(BANDS),
            "std": [0.1] * len(BANDS),
            "classes": ClassTable.from_config(classes).to_dict(),
            "tile_size": tile,
            "resolution": 10.0,
        },
    )


def config_dict(safe: Path, landcover: Path, tile: int) -> dict[str, Any]:
    """The run's configuration: one L2A SAFE scene, 10 bands, the demo's class table."""
    names = ["Forest", "Grassland", "Cropland", "Built-up", "Bare soil", "Water"]
    codes = [10, 30, 40, 50, 60, 80]
    colors = ["#1b6e2a", "#a6d96a", "#f2d16b", "#d7301f", "#b3a58c", "#2171b5"]
    classes = [
        {"index": i + 1, "name": n, "codes": [c], "color": col}
        for i, (n, c, col) in enumerate(zip(names, codes, colors, strict=True))
    ]
    classes[-1]["water"] = True
    return {
        "scenes": [
            {"name": "full", "date": "2024-06-15", "source": {"type": "safe", "path": str(safe)}}
        ],
        "bands": BANDS,
        "classes": classes,
        "mask": {"source": str(landcover), "resampling": "nearest"},
        "tile_size": tile,
    }


# ------------------------------------------------------------------------------ measurement


def disk_usage(paths: list[Path]) -> int:
    """Bytes on disk (allocated blocks) of files and folders."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_blocks * 512
        elif path.is_dir():
            for p in path.rglob("*"):
                if p.is_file():
                    total += p.stat().st_blocks * 512
    return total


def run_stage(
    name: str, command: list[str], outputs: list[Path], log_dir: Path, env: dict[str, str]
) -> dict[str, Any]:
    """Run one stage's command; its wall time, peak RSS (tree sum and largest process), bytes
    written (I/O accounting of the tree) and the size of its outputs. Raises on failure."""
    gnu = os.path.exists(GNU_TIME)
    slug = "".join(c if c.isalnum() else "_" for c in name)
    time_file = log_dir / f"{slug}.time"
    full = [GNU_TIME, "-f", "%M %O", "-o", str(time_file), *command] if gnu else command
    load = os.getloadavg()[0]
    log = (log_dir / f"{slug}.log").open("w")
    start = time.perf_counter()
    process = subprocess.Popen(full, stdout=log, stderr=subprocess.STDOUT, env=env)
    top = psutil.Process(process.pid)
    peak_tree = 0
    while process.poll() is None:
        try:
            members = [top, *top.children(recursive=True)]
            rss = 0
            for member in members:
                try:
                    rss += member.memory_info().rss
                except psutil.Error:
                    pass
            peak_tree = max(peak_tree, rss)
        except psutil.Error:
            pass
        time.sleep(SAMPLE_S)
    wall = time.perf_counter() - start
    log.close()
    if process.returncode != 0:
        tail = (log_dir / f"{slug}.log").read_text()[-3000:]
        raise RuntimeError(f"stage {name} failed ({process.returncode}):\n{tail}")
    largest_kib, written = 0.0, float("nan")
    if gnu:
        fields = time_file.read_text().split()[-2:]
        largest_kib, written = float(fields[0]), float(fields[1]) * 512
    return {
        "stage": name,
        "wall_s": wall,
        "peak_tree_mib": peak_tree / 2**20,
        "peak_largest_mib": largest_kib / 1024,
        "written_mb": written / 1e6,
        "outputs_mb": disk_usage(outputs) / 1e6,
        "load_1min_before": load,
        "command": " ".join(command),
    }


# ------------------------------------------------------------------------------------ table


def machine() -> str:
    """CPU model, cores and memory of this machine."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 2**30
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.system()}"


def _mb(value: float) -> str:
    """Megabytes for the table: two decimals below 10 MB (toy runs), whole numbers above."""
    return f"{value:,.2f}" if value < 10 else f"{value:,.0f}"


def table(rows: list[dict[str, Any]], args: argparse.Namespace, notes: dict[str, Any]) -> str:
    """The Markdown report."""
    size = args.size
    maker = (
        "`s2lc make-demo-scene`"
        if args.scene_maker == "demo"
        else "the demo landscape's classes at 10 m, one demo spectrum per class, 4 % noise,"
        " written by the demo's SAFE writer"
    )
    lines = [
        f"# Full size: every stage on a {size:,} x {size:,} px tile with a "
        f"{size * args.map_factor:,} x {size * args.map_factor:,} px map",
        "",
        f"Measured {notes['date']} on {notes['machine']}, with `{notes['command']}`"
        f" (`nice -n {args.nice}`).",
        f"Load average (1, 5, 15 min) at the start: {notes['load_start']}, at the end:"
        f" {notes['load_end']}. The machine was shared: wall times are under that load, not"
        " idle figures.",
        "",
        f"Inputs: a synthetic Sentinel-2 L2A SAFE ({maker}, lossless JP2 at native"
        f" resolution: 10 m bands {size:,}², 20 m bands {size // 2:,}², 60 m {-(-size // 6):,}²,"
        f" {notes['safe_mb']:,.0f} MB) and a {10 / args.map_factor:g} m land-cover map"
        f" ({size * args.map_factor:,}² px, the demo landscape evaluated every {args.map_step} px,"
        f" tiled DEFLATE GeoTIFF with overviews, {notes['map_mb']:,.0f} MB). Bands: "
        f"{', '.join(BANDS)}. Tile size {args.tile}; prediction with a Unet/{args.encoder}"
        " (random weights: the speed of a trained model, not its map) at the default prediction"
        f" settings, {args.threads} threads.",
        "",
        "Peak RSS: the process tree's sum (psutil, sampled every 0.2 s) and the largest single"
        " process (GNU time `%M`). Written: bytes the stage's process tree wrote to disk (Linux I/O"
        " accounting, GNU time `%O`, temporary files included). Outputs: the size of what it left.",
        "",
        "| stage | wall s | peak RSS tree (MiB) | peak RSS largest process (MiB) | written (MB) |"
        " outputs (MB) | load before |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['stage']} | {row['wall_s']:,.1f} | {row['peak_tree_mib']:,.0f} |"
            f" {row['peak_largest_mib']:,.0f} | {_mb(row['written_mb'])} |"
            f" {_mb(row['outputs_mb'])} | {row['load_1min_before']:.2f} |"
        )
    over = [r["stage"] for r in rows if r["peak_tree_mib"] > LIMIT_GIB * 1024]
    lines += [
        "",
        f"Stages above {LIMIT_GIB:g} GiB peak RSS: {', '.join(over) if over else 'none'}."
        f" Scratch disk at its fullest: {notes['work_peak_gb']:.1f} GB (removed at the end).",
        "",
        "Commands (paths relative to the scratch folder):",
        "",
        "```",
    ]
    work = str(args.work)
    lines += [row["command"].replace(work + "/", "") for row in rows]
    lines += ["```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- main


def stages(work: Path, args: argparse.Namespace) -> Iterator[tuple[str, list[str], list[Path]]]:
    """(name, command, outputs) of each measured step, in order."""
    py = sys.executable
    s2lc = [py, "-m", "s2landcover.cli"]
    cfg = str(work / "config.yaml")
    safe, landcover = work / "full.SAFE", work / "landcover_1m.tif"
    scene, validity, mask = (
        work / "scenes/full.tif",
        work / "validity/full.tif",
        work / "masks/full.tif",
    )
    chips, splits = work / f"chips/size{args.tile}", work / f"splits/size{args.tile}"
    model, prediction = work / "model.pt", work / "predictions/full.tif"
    here = [py, str(Path(__file__).resolve())]
    common = [
        "--size",
        str(args.size),
        "--map-factor",
        str(args.map_factor),
        "--seed",
        str(args.seed),
    ]
    yield (
        "input: 1 m map",
        [*here, "--make-map", str(landcover), *common, "--map-step", str(args.map_step)],
        [landcover],
    )
    if args.scene_maker == "demo":
        demo = json.dumps(
            {"demo": {"size": args.size, "mask_factor": args.map_factor, "seed": args.seed}}
        )
        scenes = {"scenes": [{"name": "full", "date": "2024-06-15", "source": {"type": "demo"}}]}
        yield (
            "input: SAFE scene (s2lc make-demo-scene)",
            [*s2lc, "make-demo-scene", "--config-json", demo, json.dumps({"bands": BANDS}),
             json.dumps(scenes), "--scene", "full", "--landcover", str(landcover), "--out",
             str(safe)],
            [safe],
        )  # fmt: skip
    else:
        yield (
            "input: SAFE scene (class spectra)",
            [*here, "--make-scene", str(safe), "--size", str(args.size), "--seed", str(args.seed)],
            [safe],
        )  # fmt: skip
    yield (
        "ingest",
        [*s2lc, "ingest", "--config", cfg, "--scene", "full", "--out", str(scene),
         "--threads", str(args.threads)],
        [scene, scene.with_suffix(".qml")],
    )  # fmt: skip
    yield (
        "validity (SCL)",
        [*s2lc, "validity", "--config", cfg, "--scene-name", "full", "--scene", str(scene),
         "--out", str(validity)],
        [validity],
    )  # fmt: skip
    yield (
        "downsample-mask",
        [*s2lc, "downsample-mask", "--config", cfg, "--source", str(landcover), "--scene",
         str(scene), "--out", str(mask), "--threads", str(args.threads)],
        [mask, mask.with_suffix(".qml")],
    )  # fmt: skip
    yield (
        "tile",
        [*s2lc, "tile", "--config", cfg, "--tile-size", str(args.tile), "--scene-name", "full",
         "--scene", str(scene), "--mask", str(mask), "--validity", str(validity),
         "--out-dir", str(chips / "full"), "--threads", str(args.threads)],
        [chips / "full"],
    )  # fmt: skip
    yield (
        "filter",
        [*s2lc, "filter", "--config", cfg, "--index", str(chips / "full/index.parquet"),
         "--out", str(chips / "selected.parquet")],
        [chips / "selected.parquet", chips / "filter_summary.json"],
    )  # fmt: skip
    yield (
        "split",
        [*s2lc, "split", "--config", cfg, "--selected", str(chips / "selected.parquet"),
         "--out-dir", str(splits)],
        [splits],
    )  # fmt: skip
    yield (
        f"model.pt (Unet/{args.encoder}, random weights)",
        [*here, "--make-model", str(model), "--encoder", args.encoder, "--tile", str(args.tile)],
        [model],
    )  # fmt: skip
    yield (
        "predict",
        [*s2lc, "predict", "--config", cfg, "--checkpoint", str(model), "--scene", str(scene),
         "--out", str(prediction), "--threads", str(args.threads), "--validity", str(validity),
         "--device", "cpu"],
        [prediction.parent],
    )  # fmt: skip


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10980, help="tile side in 10 m pixels")
    parser.add_argument("--map-factor", type=int, default=10, help="map pixels per 10 m pixel")
    parser.add_argument(
        "--map-step", type=int, default=5, help="map pixels per evaluation of the landscape"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tile", type=int, default=300, help="chip side (tile_size)")
    parser.add_argument("--encoder", default="resnet18", help="smp encoder of the U-Net")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nice", type=int, default=5, help="niceness of the stages")
    parser.add_argument("--work", type=Path, default=Path("results/bench_full"))
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/full_size.md"))
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--make-map", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--scene-maker",
        choices=["fast", "demo"],
        default="fast",
        help="fast: one spectrum per class (minutes); demo: s2lc make-demo-scene (slower)",
    )
    parser.add_argument("--make-model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--make-scene", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.make_map:  # a measured child: the map only
        origin = [400000.0, 4600000.0]
        write_map(args.make_map, args.size, args.map_factor, args.map_step, args.seed, origin)
        return 0
    if args.make_scene:
        write_scene(args.make_scene, args.size, args.seed)
        return 0
    if args.make_model:
        write_model(args.make_model, args.encoder, args.tile)
        return 0
    import yaml

    args.work = args.work.resolve()
    if args.work.exists():
        shutil.rmtree(args.work)
    (args.work / "logs").mkdir(parents=True)
    (args.work / "config.yaml").write_text(
        yaml.safe_dump(
            config_dict(args.work / "full.SAFE", args.work / "landcover_1m.tif", args.tile)
        )
    )
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    notes: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": "python benchmarks/bench_full.py " + " ".join(argv or sys.argv[1:]),
        "load_start": ", ".join(f"{v:.2f}" for v in os.getloadavg()),
    }
    rows, work_peak = [], 0
    try:
        for name, command, outputs in stages(args.work, args):
            nice = ["nice", "-n", str(args.nice)] if args.nice else []
            row = run_stage(name, [*nice, *command], outputs, args.work / "logs", env)
            row["command"] = " ".join(command)
            rows.append(row)
            work_peak = max(work_peak, disk_usage([args.work]))
            print(json.dumps(row), flush=True)
            # The table so far after every stage, so that a long run stopped early still tells.
            notes["safe_mb"] = disk_usage([args.work / "full.SAFE"]) / 1e6
            notes["map_mb"] = disk_usage([args.work / "landcover_1m.tif"]) / 1e6
            notes["load_end"] = ", ".join(f"{v:.2f}" for v in os.getloadavg())
            notes["work_peak_gb"] = work_peak / 1e9
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(table(rows, args, notes))
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
