"""The pipeline stage by stage, beside the obvious alternatives, in one run (``make bench``).

Builds synthetic inputs of a stated, configurable size (a folder of one GeoTIFF per band, like a
downloaded Sentinel-2 scene; a 1 m land-cover map ``--mask-factor`` times finer than the scene),
then runs each stage of the pipeline through its public function, each in its own process so that
its peak memory is its own, and beside it the reference it should be compared with, in the same run:

- ingest_scene (band files -> scene stack);
- downsample_mask, against the ``gdalwarp -r near`` command onto the same grid (when installed),
  and again with its windows on a local dask.distributed cluster of as many worker processes as
  threads (the ``compute.dask_scheduler`` path, against the threads row);
- tile_scene, against the seeds' way: one GeoTIFF per chip (image and mask) in a Python loop;
- filter_chips and split_chips (index-only stages);
- training steps (U-Net, forward + backward + AdamW) on the chips just made, chips/s, per encoder;
- predict_scene with a resnet34 U-Net (random weights: timing only), against a whole-scene
  in-memory stitcher (all logits of the scene in one K x H x W array, then argmax) with the same
  network, windows and blending;
- evaluate_model (metrics, figures, report) on the scene against a synthetic prediction.

Writes a Markdown table (``--out``) and prints it. The defaults take 6 to 8 minutes on a loaded
2-core machine; on a bigger one, raise ``--scene-size`` (10980 is a Sentinel-2 tile),
``--predict-size 0`` (the whole scene) and ``--threads``:

    python benchmarks/bench_pipeline.py --out docs/benchmarks/README.md
    python benchmarks/bench_pipeline.py --scene-size 10980 --predict-size 0 --threads 16 \
        --device cuda
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from _measure import (  # noqa: E402
    Measured,
    folder_mib,
    megapixels_per_s,
    python_command,
    run_measured,
    which,
)

CRS = "EPSG:32631"
X0, Y0 = 399960.0, 4600020.0  # the corner of bench_ingest's band folder (like tile 31TCG)
SCENE = "bench"
BAND_SETS = {
    4: ["B02", "B03", "B04", "B08"],
    10: ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"],
}


# --------------------------------------------------------------------------------------------
# Synthetic inputs (built in this process, not measured)


def build_land_cover_map(path: Path, size: int, pixel_m: float, codes: list[int]) -> None:
    """A size x size px uint8 map of source ``codes`` (pixels of ``pixel_m`` metres, corner X0, Y0),
    tiled 512, DEFLATE: blocky cells of 37 x 53 px with 2 % random pixels so that it compresses
    like a real map. Written strip by strip (memory: one 512-row strip)."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8",
        "crs": CRS, "transform": Affine(pixel_m, 0, X0, 0, -pixel_m, Y0), "tiled": True,
        "blockxsize": 512, "blockysize": 512, "compress": "deflate", "bigtiff": "IF_SAFER",
        "num_threads": "ALL_CPUS",
    }  # fmt: skip
    table = np.asarray(codes, dtype=np.uint8)
    cols = np.arange(size, dtype=np.int64) // 53
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 512):
            height = min(512, size - row)
            rows = np.arange(row, row + height, dtype=np.int64)[:, None] // 37
            values = table[((rows * 73_856_093) ^ (cols[None, :] * 19_349_663)) % len(table)]
            noisy = rng.random(values.shape) < 0.02
            values[noisy] = rng.choice(table, size=int(noisy.sum()))
            dst.write(values, 1, window=Window(0, row, size, height))


def write_scene_crop(scene: Path, out: Path, size: int) -> None:
    """The top-left size x size px of a scene stack, as a scene stack (bands, scale, offset)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(scene) as src:
        window = Window(0, 0, min(size, src.width), min(size, src.height))
        data = src.read(window=window)
        profile = src.profile
        profile.update(
            width=int(window.width), height=int(window.height),
            transform=src.window_transform(window), tiled=True, blockxsize=512, blockysize=512,
        )  # fmt: skip
        descriptions, scales, offsets = src.descriptions, src.scales, src.offsets
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = descriptions
        dst.scales = scales
        dst.offsets = offsets


def write_synthetic_prediction(mask: Path, out: Path, classes: int, error: float = 0.15) -> None:
    """A class map on the mask's grid agreeing with it on ~(1 - error) of the pixels."""
    import rasterio
    from rasterio.windows import Window

    rng = np.random.default_rng(1)
    with rasterio.open(mask) as src:
        profile = src.profile
        profile.update(driver="GTiff", nodata=0, tiled=True, compress="deflate")
        with rasterio.open(out, "w", **profile) as dst:
            for row in range(0, src.height, 512):
                window = Window(0, row, src.width, min(512, src.height - row))
                labels = src.read(1, window=window)
                wrong = (rng.random(labels.shape) < error) & (labels > 0)
                guess = rng.integers(1, classes + 1, labels.shape, dtype=np.uint8)
                dst.write(np.where(wrong, guess, labels).astype(np.uint8), 1, window=window)


# --------------------------------------------------------------------------------------------
# Child jobs: each runs in its own process (``--child NAME --params JSON``) and returns its figures;
# ``seconds`` is the stage call alone (no interpreter start, no imports).


def _config(p: dict[str, Any]) -> dict[str, Any]:
    from s2landcover.config import validate_config

    return validate_config({"tile_size": p["tile"], "bands": p["bands"]})


def _classes(config: dict[str, Any]) -> Any:
    from s2landcover.classes import ClassTable

    return ClassTable.from_config(config["classes"])


def child_startup(p: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    import rasterio  # noqa: F401
    import torch  # noqa: F401

    import s2landcover.chips
    import s2landcover.masks
    import s2landcover.predict  # noqa: F401

    return {"seconds": time.perf_counter() - started}


def child_ingest(p: dict[str, Any]) -> dict[str, Any]:
    from s2landcover.ingest import ingest_scene

    config = _config(p)
    started = time.perf_counter()
    source = {"type": "band_files", "path": p["band_folder"]}
    ingest_scene(source, p["bands"], p["out"], config["ingest"], threads=p["threads"])
    return {"seconds": time.perf_counter() - started}


def child_mask(p: dict[str, Any]) -> dict[str, Any]:
    from s2landcover.masks import downsample_mask

    config = _config(p)
    started = time.perf_counter()
    summary = downsample_mask(
        p["map"], p["scene"], p["out"], _classes(config), config["mask"], threads=p["threads"],
        progress=False,
    )  # fmt: skip
    return {"seconds": time.perf_counter() - started, "method": str(summary.get("method", ""))}


def child_mask_dask(p: dict[str, Any]) -> dict[str, Any]:
    """downsample_mask with its windows on a local dask.distributed cluster of worker processes:
    the cluster path (pickled filler, map opened per worker, windows sent back) on the same
    cores as the threads row. Run twice: the first run also pays the workers' imports and map
    opening ("cold"); the second is what a long-lived cluster gives every later job ("warm")."""
    import resource

    from distributed import LocalCluster

    from s2landcover.masks import downsample_mask

    config = _config(p)
    cluster_started = time.perf_counter()
    with LocalCluster(
        n_workers=p["threads"], threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        cluster_seconds = time.perf_counter() - cluster_started
        seconds = []
        for out in (p["out"] + ".cold.tif", p["out"]):
            started = time.perf_counter()
            downsample_mask(
                p["map"], p["scene"], out, _classes(config), config["mask"],
                scheduler_address=cluster.scheduler_address, progress=False,
            )  # fmt: skip
            seconds.append(time.perf_counter() - started)
        Path(p["out"] + ".cold.tif").unlink()
    return {
        "seconds": seconds[1],
        "cold_seconds": seconds[0],
        "cluster_start_s": cluster_seconds,
        # this process only (it writes the mask); the peak column is that of the largest process
        "submitter_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child_tile(p: dict[str, Any]) -> dict[str, Any]:
    from s2landcover.chips import tile_scene

    config = _config(p)
    started = time.perf_counter()
    summary = tile_scene(
        p["scene"], p["mask"], SCENE, p["out"], p["tile"], config["chips"], _classes(config),
        threads=p["threads"],
    )  # fmt: skip
    return {"seconds": time.perf_counter() - started, "chips": int(summary["chips"])}


def child_filter(p: dict[str, Any]) -> dict[str, Any]:
    from s2landcover.chips import filter_chips

    config = _config(p)
    started = time.perf_counter()
    summary = filter_chips([p["index"]], p["out"], config["filter"], _classes(config))
    return {"seconds": time.perf_counter() - started, "kept": int(summary["kept"])}


def child_split(p: dict[str, Any]) -> dict[str, Any]:
    from s2landcover.split import split_chips

    config = _config(p)
    started = time.perf_counter()
    split_chips(p["selected"], p["out"], config["split"], _classes(config))
    return {"seconds": time.perf_counter() - started}


def child_train(p: dict[str, Any]) -> dict[str, Any]:
    from bench_training import run_train  # the training helper's step timing (LandCoverModule)

    result = run_train(Path(p["store"]), p["encoder"], p["batch"], p["steps"], p["cuda"])
    result["seconds"] = p["steps"] * p["batch"] / result["chips_per_s"]
    return result


def child_checkpoint(p: dict[str, Any]) -> dict[str, Any]:
    import torch

    from s2landcover.io.checkpoints import save_model_checkpoint
    from s2landcover.models import build_segmentation_model

    config = _config(p)
    classes = _classes(config)
    torch.manual_seed(0)
    bands = p["bands"]
    network = build_segmentation_model("Unet", p["encoder"], len(bands), classes.num_classes)
    metadata = {
        "task": "segmentation", "architecture": "Unet", "encoder": p["encoder"], "bands": bands,
        "scales": [1e-4] * len(bands), "offsets": [-0.1] * len(bands), "mean": [0.1] * len(bands),
        "std": [0.05] * len(bands), "classes": classes.to_dict(), "tile_size": p["tile"],
        "resolution": 10.0,
    }  # fmt: skip
    save_model_checkpoint(p["out"], network.state_dict(), metadata)
    return {}


def child_predict(p: dict[str, Any]) -> dict[str, Any]:
    from s2landcover.predict import predict_scene

    config = _config(p)
    started = time.perf_counter()
    summary = predict_scene(
        p["checkpoint"], p["scene"], p["out"], config["prediction"], device=p["device"],
        threads=p["threads"], progress=False,
    )  # fmt: skip
    return {"seconds": time.perf_counter() - started, "windows": int(summary["windows"])}


def stand_in_network(checkpoint: str) -> tuple[Any, dict[str, Any]]:
    """A one-layer network (3 x 3 convolution, C -> K logits) with the checkpoint's metadata, to
    time the prediction machinery (reading, windows, blending, writing) without the U-Net."""
    import torch

    from s2landcover.io.checkpoints import load_model_checkpoint

    _, metadata = load_model_checkpoint(checkpoint)
    torch.manual_seed(0)
    channels, classes = len(metadata["bands"]), len(metadata["classes"]["names"])
    return torch.nn.Conv2d(channels, classes, 3, padding=1).eval(), metadata


def child_predict_machinery(p: dict[str, Any]) -> dict[str, Any]:
    import torch

    from s2landcover.predict import predict_scene_with_model

    config = _config(p)
    if p["threads"]:
        torch.set_num_threads(p["threads"])
    started = time.perf_counter()
    model, metadata = stand_in_network(p["checkpoint"])
    summary = predict_scene_with_model(
        model, metadata, p["scene"], p["out"], config["prediction"], device=p["device"],
        progress=False,
    )  # fmt: skip
    return {"seconds": time.perf_counter() - started, "windows": int(summary["windows"])}


def child_predict_in_memory(p: dict[str, Any]) -> dict[str, Any]:
    """The reference: the whole scene read, all logits blended in one K x H x W float32 array."""
    import rasterio
    import torch

    from s2landcover.predict import (
        choose_device,
        effective_batch_size,
        model_from_checkpoint,
        stitch_in_memory,
        window_grid,
    )
    from s2landcover.radiometry import to_network_input

    config = _config(p)
    cfg = config["prediction"]
    if p["threads"]:
        torch.set_num_threads(p["threads"])
    started = time.perf_counter()  # like predict_scene: from loading the checkpoint on
    if p.get("stand_in"):
        model, meta = stand_in_network(p["checkpoint"])
    else:
        model, meta = model_from_checkpoint(p["checkpoint"])
    device = choose_device(p["device"])

    class OnDevice(torch.nn.Module):  # the stitcher feeds CPU tensors
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner.to(device)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.to(device)).float().cpu()

    with rasterio.open(p["scene"]) as src:
        stored = src.read()
        profile = src.profile
        scales, offsets, nodata = src.scales, src.offsets, src.nodata
    image, valid = to_network_input(stored, scales, offsets, meta["mean"], meta["std"], nodata)
    del stored
    # The windows predict_scene uses for these settings (margin-based by default).
    grid = window_grid(cfg, int(meta["tile_size"]), *image.shape[1:], device)
    num_classes = len(meta["classes"]["names"])
    batch_size = effective_batch_size(
        cfg["batch_size"], grid.window_height, grid.window_width, device
    )
    blended = stitch_in_memory(
        OnDevice(model).eval(), image, grid, num_classes, cfg["blend"], batch_size=batch_size
    )
    labels = (blended.argmax(axis=0) + 1).astype(np.uint8)
    labels[~valid] = 0
    profile.update(count=1, dtype="uint8", nodata=0, predictor=1)
    with rasterio.open(p["out"], "w", **profile) as dst:
        dst.write(labels, 1)
    return {"seconds": time.perf_counter() - started, "windows": grid.count}


def child_evaluate(p: dict[str, Any]) -> dict[str, Any]:
    from s2landcover.evaluate import evaluate_model

    config = _config(p)
    started = time.perf_counter()
    evaluate_model(
        {SCENE: Path(p["prediction"])}, {SCENE: Path(p["mask"])}, {SCENE: Path(p["scene"])},
        p["split"], p["model_dir"], p["out"], _classes(config),
        config["evaluation"],
    )  # fmt: skip
    return {"seconds": time.perf_counter() - started}


CHILDREN = {
    "startup": child_startup,
    "ingest": child_ingest,
    "mask": child_mask,
    "mask_dask": child_mask_dask,
    "tile": child_tile,
    "filter": child_filter,
    "split": child_split,
    "train": child_train,
    "checkpoint": child_checkpoint,
    "predict": child_predict,
    "predict_in_memory": child_predict_in_memory,
    "predict_machinery": child_predict_machinery,
    "evaluate": child_evaluate,
}


def child(name: str, params: dict[str, Any]) -> Measured:
    """Run child job ``name`` in a fresh process; wall time, peak RSS and its figures."""
    command = python_command(__file__, "--child", name, "--params", json.dumps(params))
    return run_measured(command)


# --------------------------------------------------------------------------------------------
# The table


class Table:
    """Rows of the results table, each stage beside its reference."""

    HEADER = (
        "| stage | data size | wall s | MP/s | peak MiB | output MiB | reference | "
        "reference wall s | ratio | load |"
    )

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.failures: list[str] = []

    def add(
        self,
        stage: str,
        size: str,
        measured: Measured | None,
        rate: str,
        output_mib: float | None = None,
        reference: str = "-",
        reference_s: float | None = None,
        ratio: str = "-",
    ) -> None:
        if measured is None:
            cells = [stage, size, "failed", "-", "-", "-", reference, "-", "-", "-"]
        else:
            cells = [
                stage, size, f"{measured.seconds:.2f}", rate, f"{measured.peak_mib:,.0f}",
                "-" if output_mib is None else f"{output_mib:,.1f}", reference,
                "-" if reference_s is None else f"{reference_s:.2f}", ratio,
                f"{measured.load_before:.1f}",
            ]  # fmt: skip
        self.rows.append("| " + " | ".join(cells) + " |")
        print(self.rows[-1], file=sys.stderr, flush=True)

    def markdown(self) -> str:
        separator = "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"
        return "\n".join([self.HEADER, separator, *self.rows])


def attempt(table: Table, label: str, job: Any) -> Any:
    """``job()``, or None after recording the failure (the other stages still run)."""
    try:
        return job()
    except Exception as error:  # a benchmark reports the failure and goes on
        message = str(error).strip().splitlines()[-1][:200] if str(error).strip() else repr(error)
        table.failures.append(f"{label}: {message}")
        print(traceback.format_exc(), file=sys.stderr)
        return None


def machine_description(device: str | None) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    except Exception:
        gpu = "GPU unknown"
    used = f" (used: {device})" if device else ""
    return f"{cores}-core CPU ({platform.machine()}), {memory_gib:.0f} GiB, {gpu}{used}"


def software_versions() -> str:
    import rasterio

    parts = [f"python {platform.python_version()}", f"rasterio {rasterio.__version__}"]
    parts.append(f"GDAL {rasterio.__gdal_version__}")
    for name in ("torch", "segmentation_models_pytorch"):
        try:
            module = __import__(name)
            parts.append(f"{name} {module.__version__}")
        except ImportError:
            pass
    gdalwarp = which("gdalwarp")
    parts.append(f"gdalwarp: {gdalwarp or 'not installed'}")
    return ", ".join(parts)


def gdalwarp_command(source: Path, out: Path, side: int) -> list[str]:
    """``gdalwarp -r near`` onto the scene grid (side x side px of 10 m at X0, Y0)."""
    right, bottom = X0 + side * 10.0, Y0 - side * 10.0
    command = ["gdalwarp", "-q", "-overwrite", "-r", "near", "-ovr", "NONE", "-t_srs", CRS]
    command += ["-te", str(X0), str(bottom), str(right), str(Y0), "-ts", str(side), str(side)]
    command += ["-co", "TILED=YES", "-co", "COMPRESS=DEFLATE", str(source), str(out)]
    return command


def run_benchmark(args: argparse.Namespace, work: Path) -> str:
    from bench_chips import SEEDS_TILE_CODE  # the chips helper's seeds-way reference
    from bench_ingest import write_band_folder  # the ingest helper's synthetic band folder

    from s2landcover.classes import ClassTable
    from s2landcover.config import validate_config

    bands = BAND_SETS[args.bands]
    size, factor, tile = args.scene_size, args.mask_factor, args.tile
    config = validate_config({"tile_size": tile, "bands": bands})
    classes = ClassTable.from_config(config["classes"])
    codes = sorted(c for codes in classes.codes for c in codes)
    scene_mpx = size * size / 1e6
    common = {"bands": bands, "tile": tile, "threads": args.threads}
    load_start = os.getloadavg()
    table = Table()

    # Inputs
    started = time.perf_counter()
    band_folder = work / "bands"
    write_band_folder(band_folder, size, bands)
    map_path = work / "landcover_1m.tif"
    build_land_cover_map(map_path, size * factor, 10.0 / factor, codes)
    build_s = time.perf_counter() - started
    print(f"inputs built in {build_s:.0f} s", file=sys.stderr, flush=True)

    startup = attempt(table, "startup", lambda: child("startup", {}))
    if startup is not None:
        table.add("python start + imports (rasterio, torch, s2landcover)", "-", startup, "-")

    # Ingest
    scene = work / "scene.tif"
    m = attempt(table, "ingest", lambda: child(
        "ingest", {**common, "band_folder": str(band_folder), "out": str(scene)}
    ))  # fmt: skip
    table.add(
        "ingest_scene (band files -> stack)", f"{size:,}² px, {len(bands)} bands", m,
        f"{megapixels_per_s(size * size, m.seconds):.1f}" if m else "-",
        folder_mib(scene) if m else None,
    )  # fmt: skip

    # Mask downsampling vs gdalwarp
    mask = work / "mask.tif"
    m = attempt(table, "downsample_mask", lambda: child(
        "mask", {**common, "map": str(map_path), "scene": str(scene), "out": str(mask)}
    ))  # fmt: skip
    reference, reference_s, ratio = "`gdalwarp -r near`: not installed", None, "-"
    if which("gdalwarp"):
        warped = work / "gdalwarp.tif"
        ref = attempt(table, "gdalwarp", lambda: run_measured(
            gdalwarp_command(map_path, warped, size)
        ))  # fmt: skip
        if ref is not None:
            reference = f"`gdalwarp -r near` (peak {ref.peak_mib:,.0f} MiB)"
            reference_s = ref.wall_s
            ratio = f"{ref.wall_s / m.seconds:.2f}" if m else "-"
    table.add(
        "downsample_mask (1 m map -> scene grid)",
        f"{size * factor:,}² px -> {size:,}² px", m,
        f"{megapixels_per_s(size * size, m.seconds):.1f}" if m else "-",
        folder_mib(mask) if m else None, reference, reference_s, ratio,
    )  # fmt: skip

    # The same stage with its windows on a dask.distributed cluster (compute.dask_scheduler)
    stage = (
        f"downsample_mask on a local dask.distributed cluster ({args.threads} worker processes x "
        "1 thread)"
    )
    if find_spec("distributed") is None:
        table.add(stage, "-", None, "-", reference="`distributed` is not installed")
    else:
        mask_dask = work / "mask_dask.tif"
        paths = {"map": str(map_path), "scene": str(scene), "out": str(mask_dask)}
        d = attempt(
            table, "downsample_mask on dask", lambda: child("mask_dask", {**common, **paths})
        )
        if d is not None:
            stage += (
                f"; warm workers (a first, cold run: {d.result['cold_seconds']:.2f} s; cluster "
                f"start {d.result['cluster_start_s']:.1f} s not counted; peak of the mask job's "
                f"own process {d.result['submitter_peak_mib']:,.0f} MiB)"
            )
        table.add(
            stage, f"{size * factor:,}² px -> {size:,}² px", d,
            f"{megapixels_per_s(size * size, d.seconds):.1f}" if d else "-",
            folder_mib(mask_dask) if d else None,
            f"the same stage on {args.threads} local threads (row above)",
            m.seconds if m else None,
            f"{m.seconds / d.seconds:.2f}" if m and d else "-",
        )  # fmt: skip

    # Tiling vs one GeoTIFF per chip
    chips_root = work / "chips"
    store = chips_root / SCENE
    m = attempt(table, "tile_scene", lambda: child(
        "tile", {**common, "scene": str(scene), "mask": str(mask), "out": str(store)}
    ))  # fmt: skip
    seeds_dir = work / "seeds_chips"
    ref = attempt(table, "seeds tiling", lambda: run_measured([
        sys.executable, "-c", SEEDS_TILE_CODE, str(scene), str(mask), str(seeds_dir), str(tile),
        str(10**9),
    ]))  # fmt: skip
    reference, reference_s, ratio = "seeds: one GeoTIFF per chip, Python loop", None, "-"
    if ref is not None:
        seeds_chips = ref.result["chips"]
        reference += f" ({seeds_chips} chips, {folder_mib(seeds_dir):,.0f} MiB, peak "
        reference += f"{ref.peak_mib:,.0f} MiB)"
        reference_s = ref.seconds
        if m:
            per_chip = (ref.seconds / seeds_chips) / (m.seconds / m.result["chips"])
            ratio = f"{per_chip:.2f} (per chip)"
    chips = m.result["chips"] if m else 0
    table.add(
        "tile_scene (chip store + index)", f"{size:,}² px, {chips} chips of {tile} px", m,
        f"{megapixels_per_s(size * size, m.seconds):.1f} ({chips / m.seconds:.0f} chips/s)"
        if m else "-",
        folder_mib(store) if m else None, reference, reference_s, ratio,
    )  # fmt: skip
    if seeds_dir.exists():
        shutil.rmtree(seeds_dir)

    # Filter and split (index only)
    selected = chips_root / "selected.parquet"
    m = attempt(table, "filter_chips", lambda: child(
        "filter", {**common, "index": str(store / "index.parquet"), "out": str(selected)}
    ))  # fmt: skip
    kept = m.result["kept"] if m else 0
    table.add(
        "filter_chips (index only)", f"{chips} chips -> {kept} kept", m,
        f"({chips / m.seconds:,.0f} chips/s)" if m else "-",
    )  # fmt: skip
    splits = work / "splits"
    m = attempt(table, "split_chips", lambda: child(
        "split", {**common, "selected": str(selected), "out": str(splits)}
    ))  # fmt: skip
    table.add(
        "split_chips (blocks + buffer, footprints.gpkg)", f"{kept} chips", m,
        f"({kept / m.seconds:,.0f} chips/s)" if m else "-",
        folder_mib(splits) if m else None,
    )  # fmt: skip

    # Training steps on the chips just made
    cuda = args.device is not None and args.device.startswith("cuda")
    for encoder in args.encoders:
        m = attempt(table, f"train {encoder}", lambda encoder=encoder: child("train", {
            "store": str(store), "encoder": encoder, "batch": args.train_batch,
            "steps": args.train_steps, "cuda": cuda,
        }))  # fmt: skip
        padded = -(-tile // 32) * 32
        table.add(
            f"training step, U-Net {encoder} ({'bf16 GPU' if cuda else 'fp32 CPU'})",
            f"{args.train_steps} batches of {args.train_batch} chips ({tile} px, padded {padded})",
            m, f"({m.result['chips_per_s']:.2f} chips/s)" if m else "-",
        )  # fmt: skip

    # Prediction vs the in-memory stitcher
    crop_side = min(size, args.predict_size) if args.predict_size else size
    predict_scene_path = scene
    if crop_side < size:
        predict_scene_path = work / "scene_crop.tif"
        attempt(table, "crop", lambda: write_scene_crop(scene, predict_scene_path, crop_side))
    checkpoint = work / "resnet34.pt"
    attempt(table, "checkpoint", lambda: child(
        "checkpoint", {**common, "encoder": args.predict_encoder, "out": str(checkpoint)}
    ))  # fmt: skip
    predict_params = {
        **common, "checkpoint": str(checkpoint), "scene": str(predict_scene_path),
        "device": args.device, "threads": args.threads,
    }  # fmt: skip
    prediction = work / "prediction.tif"
    m = attempt(table, "predict_scene", lambda: child(
        "predict", {**predict_params, "out": str(prediction)}
    ))  # fmt: skip
    ref = None
    if not args.skip_in_memory:
        ref = attempt(table, "in-memory stitcher", lambda: child(
            "predict_in_memory", {**predict_params, "out": str(work / "in_memory.tif")}
        ))  # fmt: skip
    reference, reference_s, ratio = "whole-scene in-memory stitcher: skipped", None, "-"
    if ref is not None:
        reference = f"whole-scene in-memory stitcher (peak {ref.peak_mib:,.0f} MiB)"
        reference_s = ref.seconds
        if m:
            time_ratio, memory_ratio = ref.seconds / m.seconds, ref.peak_mib / m.peak_mib
            ratio = f"time {time_ratio:.2f}, memory {memory_ratio:.2f}"
    crop_mpx = crop_side * crop_side
    windows = m.result.get("windows", 0) if m else 0
    table.add(
        f"predict_scene, U-Net {args.predict_encoder}, overlap 0.25",
        f"{crop_side:,}² px, {windows} windows", m,
        f"{megapixels_per_s(crop_mpx, m.seconds):.3f}" if m else "-",
        folder_mib(prediction) if m else None, reference, reference_s, ratio,
    )  # fmt: skip

    # The prediction machinery alone (stand-in network) on the whole scene: memory against area
    machinery = {**predict_params, "scene": str(scene), "stand_in": True}
    m = attempt(table, "prediction machinery", lambda: child(
        "predict_machinery", {**machinery, "out": str(work / "machinery.tif")}
    ))  # fmt: skip
    ref = None
    if not args.skip_in_memory:
        ref = attempt(table, "in-memory stitcher, stand-in", lambda: child(
            "predict_in_memory", {**machinery, "out": str(work / "machinery_in_memory.tif")}
        ))  # fmt: skip
    reference, reference_s, ratio = "whole-scene in-memory stitcher: skipped", None, "-"
    if ref is not None:
        reference = f"whole-scene in-memory stitcher, same stand-in (peak {ref.peak_mib:,.0f} MiB)"
        reference_s = ref.seconds
        if m:
            time_ratio, memory_ratio = ref.seconds / m.seconds, ref.peak_mib / m.peak_mib
            ratio = f"time {time_ratio:.2f}, memory {memory_ratio:.2f}"
    windows = m.result.get("windows", 0) if m else 0
    table.add(
        "predict_scene machinery (stand-in 3x3 conv instead of the U-Net)",
        f"{size:,}² px, {windows} windows", m,
        f"{megapixels_per_s(size * size, m.seconds):.1f}" if m else "-",
        None, reference, reference_s, ratio,
    )  # fmt: skip

    # Evaluation (against a synthetic prediction on the whole scene grid)
    synthetic = work / "prediction_full.tif"
    made = attempt(
        table, "synthetic prediction",
        lambda: write_synthetic_prediction(mask, synthetic, classes.num_classes) or True,
    )  # fmt: skip
    m = None
    evaluation = work / "evaluation"
    if made:
        (work / "model").mkdir(exist_ok=True)
        m = attempt(table, "evaluate_model", lambda: child("evaluate", {
            **common, "prediction": str(synthetic), "mask": str(mask), "scene": str(scene),
            "split": str(splits / "split.parquet"), "chips_root": str(chips_root),
            "model_dir": str(work / "model"), "out": str(evaluation),
        }))  # fmt: skip
    table.add(
        "evaluate_model (metrics, figures, report)", f"{size:,}² px", m,
        f"{megapixels_per_s(size * size, m.seconds):.1f}" if m else "-",
        folder_mib(evaluation) if m else None,
    )  # fmt: skip

    load_end = os.getloadavg()
    return report(args, table, build_s, scene_mpx, load_start, load_end)


def report(
    args: argparse.Namespace,
    table: Table,
    build_s: float,
    scene_mpx: float,
    load_start: tuple[float, float, float],
    load_end: tuple[float, float, float],
) -> str:
    command = "python benchmarks/bench_pipeline.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    machine = args.machine or machine_description(args.device)
    size, factor = args.scene_size, args.mask_factor
    lines = [
        "# Benchmarks: the pipeline stage by stage, beside the obvious alternatives",
        "",
        f"- Date: {args.date}",
        f"- Machine: {machine}",
        f"- Load average (1, 5, 15 min) at the start: {', '.join(f'{x:.1f}' for x in load_start)}; "
        f"at the end: {', '.join(f'{x:.1f}' for x in load_end)} "
        f"(CPU cores: {os.cpu_count()}; a load above that means other jobs shared the CPU, so "
        "absolute times are pessimistic, while each ratio compares two runs made minutes apart "
        "under about the same load).",
        f"- Software: {software_versions()}",
        f"- Command: `{command.strip()}`",
        f"- Synthetic data: a {size:,} x {size:,} px scene at 10 m ({scene_mpx:.1f} Mpx), "
        f"{args.bands} bands, as one GeoTIFF per band (DEFLATE, tiled 512); a {size * factor:,} x "
        f"{size * factor:,} px land-cover map at {10 / factor:g} m (uint8, DEFLATE, tiled 512, "
        f"blocky classes with 2 % speckle); built in {build_s:.0f} s (not counted). "
        f"Threads: {args.threads}.",
        "",
        table.markdown(),
        "",
        "## How to read it",
        "",
        "- **wall s** is the stage function's own time in its process (interpreter start and "
        "imports excluded: they are the first row). For `gdalwarp` (a C program) it is the "
        "command's wall time. **MP/s**: megapixels of the 10 m scene grid per second (for the "
        "mask, the source map has "
        f"{factor}² = {factor * factor} times as many pixels); index-only stages and training give "
        "chips/s. **peak MiB**: peak resident memory of the stage's own process (GNU time's "
        "maximum RSS, including ~150-400 MiB of libraries). **output MiB**: size on disk of what "
        "the stage wrote. **load**: 1-minute load average when the stage started.",
        "- **ratio**: the reference's figure divided by ours (above 1: ours is faster, or for "
        "memory leaner). Tiling "
        "compares time per chip (the seeds' way writes whole windows only; ours also covers the "
        "edges and computes every chip's statistics). Prediction compares the same network, "
        "windows, overlap and blending, streaming against one K x H x W score array for the "
        "whole scene: the network dominates both, so the time ratio is near 1; the gain is "
        "memory, which for the in-memory way grows with the scene area (4 K bytes per pixel "
        "plus the image: about 80 GB for a 30,000² px 10-band scene) and for ours with the scene "
        "width only. The stitcher writes a plain tiled GeoTIFF; `predict_scene` also converts "
        "its output to a Cloud-Optimized GeoTIFF with overviews, colour table and class names "
        "and runs reader and writer threads beside the network, so on a shared 2-core CPU it "
        "can take somewhat longer than the stitcher.",
        "- The dask row runs the same mask with `compute.dask_scheduler` pointing at a local "
        "`distributed` cluster of worker processes on the same cores: each window's filler is "
        "pickled to a worker, which opens the map itself, and the window comes back over TCP to "
        "be written. Its peak column is the largest process of the cluster. Its ratio (threads' "
        "time / the cluster's) is the cost of that path where it "
        "buys nothing; on a real cluster the workers are other machines' cores "
        "([docs/scaling.md](../scaling.md#a-daskdistributed-cluster-for-the-raster-stages)).",
        "- Training: forward + backward + AdamW step of the `LandCoverModule` that `train_model` "
        "uses, on the chip store `tile_scene` just wrote, after one warm-up step; one epoch over "
        "N chips takes N / (chips/s). Random weights everywhere: weights do not change the "
        "arithmetic.",
        "- Prediction with the U-Net runs on the top-left crop given by `--predict-size` (0 = "
        "whole scene) because a U-Net on a CPU is the slowest stage by far; its time scales with "
        "the number of windows (linear in pixels). The machinery row runs `predict_scene`'s "
        "streaming code (`predict_scene_with_model`: reader thread, row-band accumulator, writer "
        "thread, COG) on the whole scene with a one-layer stand-in network, against the in-memory "
        "stitcher with the same stand-in: what is left once the network is fast (a GPU). "
        "Evaluation runs on the whole scene against a synthetic "
        "prediction agreeing on ~85 % of the pixels.",
        "- These figures feed the estimates in [docs/scaling.md](../scaling.md). Per-stage "
        "benchmarks with more cases: [ingest](ingest.md), [chips](chips.md), [masks](masks.md), "
        "[training](training.md), [evaluate](evaluate.md) (and `benchmarks/bench_*.py`).",
    ]
    if not which("gdalwarp"):
        lines += [
            "- `gdalwarp` is not installed on this machine, so its ratio is missing here. In "
            "[masks.md](masks.md) (a 40,000² px map, gdalwarp of GDAL 3.6 installed for that run) "
            "`downsample_mask` took 0.4 to 0.6 x gdalwarp's time with a third of its memory.",
        ]
    if table.failures:
        lines += ["", "## Stages that failed in this run", ""]
        lines += [f"- {failure}" for failure in table.failures]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--scene-size", type=int, default=6000, help="scene side, 10 m px")
    parser.add_argument(
        "--mask-factor", type=int, default=10, help="land-cover map pixels per scene pixel (side)"
    )
    parser.add_argument("--bands", type=int, choices=sorted(BAND_SETS), default=4)
    parser.add_argument("--tile", type=int, default=300, help="chip side, px")
    parser.add_argument("--threads", type=int, default=2, help="threads per stage")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=3, help="timed batches per encoder")
    parser.add_argument(
        "--encoders", nargs="*", default=["resnet18", "resnet34"], help="none: skip training"
    )
    parser.add_argument(
        "--predict-size", type=int, default=2048, help="side of the predicted crop; 0: whole scene"
    )
    parser.add_argument("--predict-encoder", default="resnet34")
    parser.add_argument("--skip-in-memory", action="store_true", help="skip the in-memory stitcher")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when present)")
    parser.add_argument("--date", default=dt.date.today().isoformat(), help="date in the output")
    parser.add_argument("--machine", default=None, help="machine description (default: detected)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: tmp)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown here too")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](json.loads(args.params))))
        return
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    started = time.perf_counter()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_", dir=args.workdir) as tmp:
        markdown = run_benchmark(args, Path(tmp))
    markdown += f"\nWhole command: {time.perf_counter() - started:.0f} s.\n"
    print(markdown)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        partial = args.out.with_name(args.out.name + ".partial")
        partial.write_text(markdown)
        partial.replace(args.out)


if __name__ == "__main__":
    main()
