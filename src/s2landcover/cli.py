"""The ``s2lc`` command: one subcommand per pipeline stage.

Every stage can run without Snakemake, from any folder::

    s2lc ingest --config config.yaml --scene demo --out results/scenes/demo.tif
    s2lc predict --checkpoint results/models/size300/unet-resnet34/model.pt \\
        --scene results/scenes/demo.tif --out demo_landcover.tif

Settings come from ``--config FILE`` (default ``config.yaml`` of the current folder), validated
against the schema. Stages whose settings all have usable defaults (``predict``,
``classify-chips``, ``make-demo-landcover``, ``download-mask``) run without any config file. The
workflow passes ``--config-json`` with the sections a stage reads instead (validated as a whole at
workflow start), so that changing another section does not re-run that stage. User mistakes
(:class:`InputError`) are printed as one message without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s2landcover import __version__
from s2landcover.config import ConfigError, config_from_json, load_config, validate_config
from s2landcover.errors import AcquisitionError, InputError

if TYPE_CHECKING:
    from s2landcover.classes import ClassTable

log = logging.getLogger("s2landcover")

Handler = Callable[[argparse.Namespace, dict[str, Any]], Any]
_HANDLERS: dict[str, Handler] = {}
DEFAULT_CONFIG = "config.yaml"
DESCRIPTION = (
    "s2lc: the stages of the s2-landcover pipeline (Sentinel-2 scenes and a land-cover map in, "
    "a trained U-Net and a land-cover GeoTIFF per scene out), one subcommand each. The Snakemake "
    "workflow runs them for you; each also runs on its own. 's2lc COMMAND --help' shows a "
    "command's options and an example."
)


def _config_of(args: argparse.Namespace) -> dict[str, Any]:
    """The settings of a command: --config-json sections (the workflow), --config FILE, else
    ./config.yaml, else (for a command that needs no config) the schema's defaults."""
    if getattr(args, "config_json", None):
        return config_from_json(args.config_json)
    if args.config is not None:
        return load_config(args.config)
    if Path(DEFAULT_CONFIG).is_file():
        return load_config(DEFAULT_CONFIG)
    handler = _HANDLERS[args.command]
    if not handler.needs_config:  # type: ignore[attr-defined]
        return validate_config({}, source="defaults")
    raise ConfigError(
        f"no --config given and there is no {DEFAULT_CONFIG} in {Path.cwd()}; "
        f"s2lc {args.command} reads its settings from one (give --config FILE)"
    )


def _classes(config: dict[str, Any]) -> ClassTable:
    from s2landcover.classes import ClassTable

    return ClassTable.from_config(config["classes"])


def _dask_scheduler(args: argparse.Namespace, config: dict[str, Any]) -> str | None:
    """--dask-scheduler ("" or "local": threads) or else the config's compute.dask_scheduler."""
    if args.dask_scheduler is not None:
        return None if args.dask_scheduler in ("", "local") else args.dask_scheduler
    return config["compute"]["dask_scheduler"] or None


# glibc's mallopt parameters (malloc.h) and the values prediction sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HOST_MMAP_THRESHOLD = 1 << 30  # bytes: blocks up to 1 GiB come from the heap and are reused
HOST_TRIM_THRESHOLD = 1 << 30  # bytes of free heap top kept instead of handed back


def reuse_freed_host_memory() -> bool:
    """Let glibc's malloc reuse freed large blocks instead of unmapping them; returns whether it
    is in effect (False where the C library is not glibc).

    Whole-scene prediction makes a fresh network output per batch (96 MB for 4 windows of 1,024
    px and 6 classes). Above glibc's mmap threshold (at most 32 MiB by default) every such block
    is mapped and unmapped again, and its first touch costs a page fault per 4 KiB: measured, a
    3 x 3 convolution over such a batch took 220-440 ms with the faults and ~110 ms without
    (docs/benchmarks/predict.md, host side). Raising the mmap and trim thresholds to
    :data:`HOST_MMAP_THRESHOLD` keeps freed blocks in the heap for the next batch: the same as
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment.
    """
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, HOST_MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, HOST_TRIM_THRESHOLD)
        )
    return False


def process_settings(
    threads: int | None, cudnn_benchmark: bool = False, reuse_freed_memory: bool = False
) -> None:
    """Process-wide settings of a stage, set here and never inside the library: torch's CPU
    threads (``threads``: the rule's ``{threads}``; None: every CPU this process may use), cuDNN
    autotuning (prediction: windows of one size, so the fastest convolution is picked once) and
    glibc's reuse of freed large blocks (:func:`reuse_freed_host_memory`; prediction)."""
    import torch

    torch.set_num_threads(threads or max(1, len(os.sched_getaffinity(0))))
    if cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    if reuse_freed_memory:
        reuse_freed_host_memory()


def prediction_torch_threads(threads: int | None, device_type: str) -> int | None:
    """torch's CPU threads for whole-scene prediction on a device of ``device_type``: ``threads``
    (the rule's) on a CPU, where torch runs the network; 1 on CUDA, where the network runs on the
    device and the host's work is the reader threads' (GDAL decoding, the no-data mask): a torch
    operation on the host would fan out over torch's own OpenMP threads and spin beside the
    readers (4 readers x 16 threads on a 16-core GPU host). When the readers still copied each
    window with torch, one thread made the host side of a GPU run 12-15 % cheaper in CPU on 2
    cores (``benchmarks/bench_predict_host.py --device-stand-in``, docs/benchmarks/predict.md);
    since the device cuts the windows, it guards the rest of the host's torch work."""
    return 1 if device_type == "cuda" else threads


def prediction_process_settings(threads: int | None, device_type: str) -> None:
    """The process settings of ``s2lc predict`` on a device of ``device_type`` (``cpu``,
    ``cuda``): torch's threads by :func:`prediction_torch_threads`, cuDNN autotuning, freed large
    blocks reused (:func:`process_settings`); the benchmarks take them from here too."""
    process_settings(
        prediction_torch_threads(threads, device_type),
        cudnn_benchmark=True,
        reuse_freed_memory=True,
    )


def _scene_entry(config: dict[str, Any], name: str) -> dict[str, Any]:
    for scene in config["scenes"]:
        if scene["name"] == name:
            return scene
    raise InputError(
        f"scene {name!r} is not in the scene table; scenes: {[s['name'] for s in config['scenes']]}"
    )


def _stage(
    name: str, help_text: str, example: str, needs_config: bool = True
) -> Callable[[Handler], Handler]:
    """Register a subcommand: its one-line help, an example command line, and whether it needs a
    config file (False: the schema's defaults serve when there is none)."""

    def register(function: Handler) -> Handler:
        function.help_text = help_text  # type: ignore[attr-defined]
        function.example = example  # type: ignore[attr-defined]
        function.needs_config = needs_config  # type: ignore[attr-defined]
        _HANDLERS[name] = function
        return function

    return register


@_stage(
    "validate-config",
    "validate a configuration file and print it with defaults filled in",
    "s2lc validate-config --config config/examples/aberystwyth.yaml",
)
def _validate_config(args: argparse.Namespace, config: dict[str, Any]) -> None:
    json.dump(config, sys.stdout, indent=2)
    sys.stdout.write("\n")


@_stage(
    "make-demo-landcover",
    "write the synthetic 1 m land-cover map of the demo",
    "s2lc make-demo-landcover --out results/demo/landcover_1m.tif",
    needs_config=False,
)
def _make_demo_landcover(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from s2landcover.demo import make_demo_landcover

    make_demo_landcover(args.out, config["demo"])


@_stage(
    "make-demo-scene",
    "write a synthetic Sentinel-2 L2A SAFE product of the demo",
    "s2lc make-demo-scene --scene demo --landcover results/demo/landcover_1m.tif "
    "--out results/demo/demo.SAFE",
)
def _make_demo_scene(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from s2landcover.demo import make_demo_scene

    scene = _scene_entry(config, args.scene)
    make_demo_scene(
        args.out, args.landcover, config["demo"], scene["name"], scene["date"], config["bands"]
    )


@_stage(
    "download",
    "search a STAC API and download one scene's band assets",
    "s2lc download --config config/examples/stac_download.yaml --scene <name> "
    "--out-dir results/downloads/<name>",
)
def _download(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.download import download_scene

    scene = _scene_entry(config, args.scene)
    return download_scene(scene["source"], config["bands"], config["download"], args.out_dir)


@_stage(
    "download-mask",
    "cut ESA WorldCover to the downloaded scenes' bounds (the mask of STAC runs)",
    "s2lc download-mask --download-dirs results/downloads/<name> --year 2021 "
    "--out results/downloads/worldcover_2021.tif",
    needs_config=False,
)
def _download_mask(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.download import download_worldcover_for_scenes

    out = download_worldcover_for_scenes(
        args.download_dirs, args.out, args.year, config["download"]
    )
    return {"worldcover": str(out)}


@_stage(
    "ingest",
    "turn a scene product into the 10 m scene stack",
    "s2lc ingest --config my.yaml --scene april --out results/scenes/april.tif",
)
def _ingest(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.ingest import ingest_scene

    source = dict(_scene_entry(config, args.scene)["source"])
    if args.source_path:  # products made or fetched by the workflow (demo, download)
        if source["type"] == "stac":
            source = {"type": "band_files"}
        source["path"] = args.source_path
    return ingest_scene(
        source,
        config["bands"],
        args.out,
        config["ingest"],
        scl_out_path=args.scl_out,
        threads=args.threads,
    )


@_stage(
    "downsample-mask",
    "warp the land-cover map onto a scene's grid",
    "s2lc downsample-mask --config my.yaml --source landcover_1m.tif "
    "--scene results/scenes/april.tif --out results/masks/april.tif --threads 4",
)
def _downsample_mask(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.masks import downsample_mask

    return downsample_mask(
        args.source,
        args.scene,
        args.out,
        _classes(config),
        config["mask"],
        threads=args.threads,
        scheduler_address=_dask_scheduler(args, config),
    )


@_stage(
    "tile",
    "cut a scene and its mask into chips",
    "s2lc tile --config my.yaml --scene-name april --scene results/scenes/april.tif "
    "--mask results/masks/april.tif --out-dir results/chips/size300/april",
)
def _tile(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.chips import tile_scene
    from s2landcover.config import check_stride

    tile_size = args.tile_size or config["tile_size"]
    check_stride(config["chips"]["stride"], tile_size)
    return tile_scene(
        args.scene,
        args.mask,
        args.scene_name,
        args.out_dir,
        tile_size,
        config["chips"],
        _classes(config),
        threads=args.threads,
        scl_path=args.scl,
        validity_path=args.validity,
    )


@_stage(
    "filter",
    "choose the chips to train on, recording why each other chip was dropped",
    "s2lc filter --config my.yaml --index results/chips/size300/*/index.parquet "
    "--out results/chips/size300/selected.parquet",
)
def _filter(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.chips import filter_chips

    return filter_chips(args.index, args.out, config["filter"], _classes(config))


@_stage(
    "split",
    "split the kept chips into train / val / test without spatial leakage",
    "s2lc split --config my.yaml --selected results/chips/size300/selected.parquet "
    "--out-dir results/splits/size300",
)
def _split(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.split import split_chips

    return split_chips(args.selected, args.out_dir, config["split"], _classes(config))


@_stage(
    "train",
    "train the model on the chips",
    "s2lc train --config my.yaml --split results/splits/size300/split.parquet "
    "--chips-root results/chips/size300 --out-dir results/models/size300/unet-resnet34",
)
def _train(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.pixel_model import is_pixel_architecture, train_pixel_model

    if getattr(args, "architecture", None):  # the workflow's pixel baseline
        config = {**config, "model": {**config["model"], "architecture": args.architecture}}
    if is_pixel_architecture(config["model"]["architecture"]):  # before torch
        return train_pixel_model(args.split, args.chips_root, args.out_dir, config, args.threads)
    process_settings(args.threads)  # Lightning sets cuDNN autotuning itself (benchmark=on CUDA)
    from s2landcover.training.train import train_model

    # Runtime-only keys given as flags (the workflow passes them as resources, not params).
    for key in ("num_workers", "checkpoint_interval_s"):
        if getattr(args, key) is not None:
            config["training"] = {**config["training"], key: getattr(args, key)}
    return train_model(
        args.split,
        args.chips_root,
        args.out_dir,
        config,
        accelerator=args.accelerator or config["training"]["accelerator"],
        devices=args.devices or config["training"]["devices"],
        strategy=args.strategy or config["training"]["strategy"],
        num_nodes=args.num_nodes,
        progress=sys.stderr.isatty(),  # bars in a terminal; in a log file, a line per epoch
    )


@_stage(
    "predict",
    "predict a whole scene into a land-cover GeoTIFF",
    "s2lc predict --checkpoint results/models/size300/unet-resnet34/model.pt "
    "--scene results/scenes/demo.tif --out demo_landcover.tif",
    needs_config=False,
)
def _predict(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.devices import choose_device
    from s2landcover.predict import predict_scene

    prediction_process_settings(args.threads, choose_device(args.device).type)
    return predict_scene(
        args.checkpoint,
        args.scene,
        args.out,
        config["prediction"],
        device=args.device,
        threads=args.threads,
        validity_path=args.validity,
    )


@_stage(
    "classify-chips",
    "label every chip with its dominant class (task: classification)",
    "s2lc classify-chips --checkpoint results/models/size300/chips-cnn/model.pt "
    "--chips-root results/chips/size300 --split results/splits/size300/split.parquet "
    "--out-dir results/predictions/size300/chips-cnn/chips",
    needs_config=False,
)
def _classify_chips(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.classify import predict_chips

    return predict_chips(
        args.checkpoint,
        args.chips_root,
        args.split,
        args.out_dir,
        scenes=args.scenes,
        batch_size=args.batch_size,
        device=args.device,
    )


@_stage(
    "evaluate",
    "per-class metrics, plots and the report",
    "s2lc evaluate --config my.yaml --predictions results/predictions/size300/unet/*.tif "
    "--masks results/masks/demo.tif --scenes results/scenes/demo.tif "
    "--split results/splits/size300/split.parquet "
    "--model-dir results/models/size300/unet --out-dir results/evaluation/size300/unet",
)
def _evaluate(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.evaluate import evaluate_model

    def by_scene(paths: Sequence[str]) -> dict[str, Path]:
        return {Path(p).name.removesuffix(".tif"): Path(p) for p in paths}

    return evaluate_model(
        by_scene(args.predictions),
        by_scene(args.masks),
        by_scene(args.scenes),
        args.split,
        args.model_dir,
        args.out_dir,
        _classes(config),
        config["evaluation"],
        validity=by_scene(args.validity) if args.validity else None,
        baseline_predictions=by_scene(args.baseline_predictions or []),
        run_config=dict(config),  # the report's provenance block shows it
        benchmarks_dir=args.benchmarks,
    )


@_stage(
    "validity",
    "write a scene's valid-observation raster (clear/cloud/shadow/cirrus/snow)",
    "s2lc validity --config config.yaml --scene-name demo --scene results/scenes/demo.tif "
    "--out results/validity/demo.tif",
)
def _validity(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.validity import write_validity

    source = dict(_scene_entry(config, args.scene_name)["source"])
    if args.source_path:  # products made or fetched by the workflow (demo, download)
        if source["type"] == "stac":
            source = {"type": "band_files"}
        source["path"] = args.source_path
    return write_validity(
        args.scene, args.out, config["validity"], args.scene_name, source, scl_path=args.scl
    )


@_stage(
    "stack",
    "stack the scene stacks of several dates of one area into one input (band names say the date)",
    "s2lc stack --scenes results/scenes/april.tif results/scenes/august.tif"
    " --dates 2024-04-15 2024-08-15 --out results/scenes/catalonia.tif",
    needs_config=False,
)
def _stack(args: argparse.Namespace, config: dict[str, Any]) -> dict[str, Any]:
    from s2landcover.dates import write_stack

    return write_stack(args.scenes, args.dates, args.out, names=args.names)


@_stage(
    "stack-validity",
    "combine the validity rasters of a stack's dates into the stack's validity raster",
    "s2lc stack-validity --validity results/validity/april.tif results/validity/august.tif"
    " --scene results/scenes/catalonia.tif --out results/validity/catalonia.tif",
    needs_config=False,
)
def _stack_validity(args: argparse.Namespace, config: dict[str, Any]) -> dict[str, Any]:
    from s2landcover.dates import combine_validity

    return combine_validity(args.validity, args.scene, args.out, allow_partial=args.allow_partial)


@_stage(
    "composite",
    "one map of an area from its dated maps (the most reliable date per pixel), with source dates",
    "s2lc composite --predictions april.tif august.tif --confidence april_confidence.tif"
    " august_confidence.tif --dates 2024-04-15 2024-08-15 --out catalonia.tif",
    needs_config=False,
)
def _composite(args: argparse.Namespace, config: dict[str, Any]) -> dict[str, Any]:
    from s2landcover.dates import write_composite

    return write_composite(
        args.predictions, args.dates, args.out, confidence_paths=args.confidence, names=args.names
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``s2lc`` (one subparser per stage)."""
    parser = argparse.ArgumentParser(prog="s2lc", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--version", action="version", version=f"s2lc {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str) -> argparse.ArgumentParser:
        handler = _HANDLERS[name]
        needs = handler.needs_config  # type: ignore[attr-defined]
        p = sub.add_parser(
            name,
            help=handler.help_text,  # type: ignore[attr-defined]
            description=handler.help_text[0].upper() + handler.help_text[1:] + ".",  # type: ignore[attr-defined]
            epilog=f"example:\n  {handler.example}",  # type: ignore[attr-defined]
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        group = p.add_mutually_exclusive_group()
        group.add_argument(
            "--config",
            help="YAML configuration (default: config.yaml in the current folder"
            + ("" if needs else "; without one, the defaults of the schema")
            + ")",
        )
        group.add_argument(
            "--config-json",
            nargs="+",
            metavar="JSON",
            help='configuration sections as JSON objects, e.g. \'{"prediction": {"tta": true}}\' '
            "(used by the workflow: one object per section the stage reads, already validated "
            "as a whole at workflow start; each is validated here on its own)",
        )
        return p

    add("validate-config")
    p = add("make-demo-landcover")
    p.add_argument("--out", required=True, help="output GeoTIFF of the 1 m land-cover map")
    p = add("make-demo-scene")
    p.add_argument("--scene", required=True, help="scene name in the scene table")
    p.add_argument("--landcover", required=True, help="the demo land-cover map it is drawn from")
    p.add_argument("--out", required=True, help="output .SAFE folder")
    p = add("download")
    p.add_argument("--scene", required=True, help="scene name (a source of type stac)")
    p.add_argument("--out-dir", required=True, help="folder for the band files")
    p = add("download-mask")
    p.add_argument(
        "--download-dirs", nargs="+", required=True, help="download folders of the scenes"
    )
    p.add_argument("--year", type=int, default=2021, help="WorldCover year (2020 or 2021)")
    p.add_argument("--out", required=True, help="output GeoTIFF of WorldCover over the scenes")
    p = add("ingest")
    p.add_argument("--scene", required=True, help="scene name in the scene table")
    p.add_argument("--out", required=True, help="output scene stack GeoTIFF")
    p.add_argument("--source-path", help="product path made by the workflow (demo, download)")
    p.add_argument("--scl-out", help="also write the scene classification band here")
    p.add_argument(
        "--threads", type=int, help="reading/resampling threads (default: CPUs, at most 4)"
    )
    p = add("downsample-mask")
    p.add_argument("--source", required=True, help="land-cover map (any GDAL raster)")
    p.add_argument("--scene", required=True, help="scene stack whose grid the mask takes")
    p.add_argument("--out", required=True, help="output mask GeoTIFF")
    p.add_argument("--threads", type=int, default=1, help="threads warping windows (default: 1)")
    p.add_argument(
        "--dask-scheduler",
        help="dask scheduler address whose workers fill the windows ('local' or '': threads of "
        "this process; default: compute.dask_scheduler of the config)",
    )
    p = add("tile")
    p.add_argument(
        "--scene-name", required=True, help="scene name, recorded in the chip index (e.g. april)"
    )
    p.add_argument("--scene", required=True, help="scene stack GeoTIFF")
    p.add_argument("--mask", required=True, help="mask GeoTIFF on the scene's grid")
    p.add_argument("--scl", help="scene classification band (optional)")
    p.add_argument("--validity", help="validity raster: cloud pixels get label 0 (optional)")
    p.add_argument("--out-dir", required=True, help="chip store folder of this scene")
    p.add_argument(
        "--tile-size", type=int, help="chip side in pixels (default: tile_size of the config)"
    )
    p.add_argument("--threads", type=int, default=1, help="threads reading windows (default: 1)")
    p = add("filter")
    p.add_argument(
        "--index", nargs="+", required=True, help="index.parquet of each scene's chip store"
    )
    p.add_argument("--out", required=True, help="output selected.parquet")
    p = add("split")
    p.add_argument("--selected", required=True, help="selected.parquet from filter")
    p.add_argument(
        "--out-dir", required=True, help="output folder (split.parquet, footprints.gpkg)"
    )
    p = add("train")
    p.add_argument("--split", required=True, help="split.parquet")
    p.add_argument("--chips-root", required=True, help="results/chips/size{tile}")
    p.add_argument("--out-dir", required=True, help="model folder")
    p.add_argument(
        "--accelerator", help="auto, cpu, gpu (default: training.accelerator of the config)"
    )
    p.add_argument(
        "--devices", help="a count of GPUs or 'auto' (default: training.devices of the config)"
    )
    p.add_argument("--strategy", help="auto, ddp, ... (default: training.strategy of the config)")
    p.add_argument(
        "--num-workers",
        type=lambda text: text if text == "auto" else int(text),
        help="data-loader worker processes, a count or auto "
        "(default: training.num_workers of the config)",
    )
    p.add_argument(
        "--checkpoint-interval-s",
        type=float,
        help="least seconds between two saves of last.ckpt "
        "(default: training.checkpoint_interval_s of the config)",
    )
    p.add_argument(
        "--num-nodes", type=int, default=1, help="machines (srun: one task per GPU on each)"
    )
    p.add_argument(
        "--architecture", help="override model.architecture (pixel_gbm: the pixel baseline)"
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for training (default: every CPU this process may use)",
    )
    p = add("predict")
    p.add_argument("--checkpoint", required=True, help="model.pt written by train")
    p.add_argument("--scene", required=True, help="scene stack GeoTIFF with the model's bands")
    p.add_argument("--out", required=True, help="output land-cover GeoTIFF")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for inference (default: every CPU this process may use)",
    )
    p.add_argument("--validity", help="validity raster: invalid pixels become 255 (optional)")
    p = add("classify-chips")
    p.add_argument("--checkpoint", required=True, help="model.pt of a task: classification model")
    p.add_argument("--chips-root", required=True, help="results/chips/size{tile}")
    p.add_argument("--split", required=True, help="split.parquet")
    p.add_argument("--out-dir", required=True, help="folder for chip rasters, chips.gpkg, metrics")
    p.add_argument("--scenes", nargs="+", help="scenes to classify (default: all in the split)")
    p.add_argument("--batch-size", type=int, default=16, help="chips per batch (default: 16)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p = add("evaluate")
    p.add_argument("--predictions", nargs="+", required=True, help="predicted GeoTIFF per scene")
    p.add_argument("--masks", nargs="+", required=True, help="mask per scene ({scene}.tif)")
    p.add_argument("--scenes", nargs="+", required=True, help="scene stack per scene ({scene}.tif)")
    p.add_argument("--split", required=True, help="split.parquet (which chips are val / test)")
    p.add_argument("--model-dir", required=True, help="model folder (metrics.csv of training)")
    p.add_argument(
        "--out-dir", required=True, help="folder for report.html, metrics.json and the figures"
    )
    p.add_argument("--validity", nargs="*", help="validity raster per scene ({scene}.tif)")
    p.add_argument(
        "--baseline-predictions", nargs="*", help="the pixel baseline's GeoTIFF per scene"
    )
    p.add_argument(
        "--benchmarks", help="Snakemake's benchmark folder (results/benchmarks): time per stage"
    )
    p = add("validity")
    p.add_argument("--scene-name", required=True, help="scene name in the scene table")
    p.add_argument("--scene", required=True, help="scene stack GeoTIFF (the grid)")
    p.add_argument("--out", required=True, help="output validity GeoTIFF")
    p.add_argument("--source-path", help="product path made by the workflow (demo, download)")
    p.add_argument("--scl", help="ingest's SCL band on the scene grid (optional)")
    p = add("stack")
    p.add_argument("--scenes", nargs="+", required=True, help="scene stack of each date, in order")
    p.add_argument("--dates", nargs="+", required=True, help="date of each (YYYY-MM-DD)")
    p.add_argument("--names", nargs="+", help="scene name of each (tags; default file stems)")
    p.add_argument("--out", required=True, help="output stacked GeoTIFF")
    p = add("stack-validity")
    p.add_argument("--validity", nargs="+", required=True, help="validity raster of each date")
    p.add_argument("--scene", required=True, help="the stacked scene (its grid)")
    p.add_argument("--out", required=True, help="output validity GeoTIFF of the stack")
    p.add_argument(
        "--allow-partial", action="store_true", help="valid where any date is (default: all)"
    )
    p = add("composite")
    p.add_argument("--predictions", nargs="+", required=True, help="class map of each date")
    p.add_argument("--confidence", nargs="+", help="confidence raster of each map (optional)")
    p.add_argument("--dates", nargs="+", required=True, help="date (label) of each map")
    p.add_argument("--names", nargs="+", help="scene / stack name of each (tags)")
    p.add_argument("--out", required=True, help="output composite map (and <stem>_source.tif)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``s2lc``; returns the exit status (0 ok, 2 bad input, 3 a remote source
    failed)."""
    args = build_parser().parse_args(argv)
    # Figures are only ever written to files: no display backend (a user's own choice wins).
    os.environ.setdefault("MPLBACKEND", "Agg")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    started = time.perf_counter()
    try:
        config = _config_of(args)
        result = _HANDLERS[args.command](args, config)
    except InputError as error:
        sys.stderr.write(f"s2lc {args.command}: error: {error}\n")
        return 2
    except AcquisitionError as error:
        sys.stderr.write(
            f"s2lc {args.command}: remote source failed: {error} (not a problem of your input; "
            "run again later, a partial download resumes)\n"
        )
        return 3
    if isinstance(result, dict):
        log.info("%s summary: %s", args.command, json.dumps(result, default=str, sort_keys=True))
    log.info("%s finished in %.1f s", args.command, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
