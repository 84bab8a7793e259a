"""The ``s2lc`` command: one subcommand per pipeline stage.

Every stage can run without Snakemake::

    s2lc ingest --config config.yaml --scene demo --out results/scenes/demo.tif
    s2lc predict --checkpoint results/models/size300/unet-resnet34/model.pt \\
        --scene results/scenes/demo.tif --out demo_landcover.tif

Settings come from ``--config FILE`` (default ``config.yaml``), validated against the schema. The
workflow passes ``--config-json`` with only the sections a stage reads instead, so that changing
another section does not re-run that stage. User mistakes (:class:`InputError`) are printed as one
message without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from s2landcover.config import config_from_json, load_config
from s2landcover.errors import InputError

log = logging.getLogger("s2landcover")

Handler = Callable[[argparse.Namespace, dict[str, Any]], Any]
_HANDLERS: dict[str, Handler] = {}


def _config_of(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "config_json", None):
        return config_from_json(args.config_json)
    return load_config(args.config)


def _classes(config: dict[str, Any]):  # type: ignore[no-untyped-def]
    from s2landcover.classes import ClassTable

    return ClassTable.from_config(config["classes"])


def _dask_scheduler(args: argparse.Namespace, config: dict[str, Any]) -> str | None:
    """--dask-scheduler ("" or "local": threads) or else the config's compute.dask_scheduler."""
    if args.dask_scheduler is not None:
        return None if args.dask_scheduler in ("", "local") else args.dask_scheduler
    return config["compute"]["dask_scheduler"] or None


def _scene_entry(config: dict[str, Any], name: str) -> dict[str, Any]:
    for scene in config["scenes"]:
        if scene["name"] == name:
            return scene
    raise InputError(
        f"scene {name!r} is not in the scene table; scenes: {[s['name'] for s in config['scenes']]}"
    )


def _stage(name: str, help_text: str) -> Callable[[Handler], Handler]:
    def register(function: Handler) -> Handler:
        function.help_text = help_text  # type: ignore[attr-defined]
        _HANDLERS[name] = function
        return function

    return register


@_stage("validate-config", "validate a configuration file and print it with defaults filled in")
def _validate_config(args: argparse.Namespace, config: dict[str, Any]) -> None:
    json.dump(config, sys.stdout, indent=2)
    sys.stdout.write("\n")


@_stage("make-demo-landcover", "write the synthetic 1 m land-cover map of the demo")
def _make_demo_landcover(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from s2landcover.demo import make_demo_landcover

    make_demo_landcover(args.out, config["demo"])


@_stage("make-demo-scene", "write a synthetic Sentinel-2 L2A SAFE product of the demo")
def _make_demo_scene(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from s2landcover.demo import make_demo_scene

    scene = _scene_entry(config, args.scene)
    make_demo_scene(
        args.out, args.landcover, config["demo"], scene["name"], scene["date"], config["bands"]
    )


@_stage("download", "search a STAC API and download one scene's band assets")
def _download(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.download import download_scene

    scene = _scene_entry(config, args.scene)
    return download_scene(scene["source"], config["bands"], config["download"], args.out_dir)


@_stage(
    "download-mask", "cut ESA WorldCover to the downloaded scenes' bounds (the mask of STAC runs)"
)
def _download_mask(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.download import download_worldcover_for_scenes

    out = download_worldcover_for_scenes(
        args.download_dirs, args.out, args.year, config["download"]
    )
    return {"worldcover": str(out)}


@_stage("ingest", "turn a scene product into the 10 m scene stack")
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


@_stage("downsample-mask", "warp the land-cover map onto a scene's grid")
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


@_stage("tile", "cut a scene and its mask into chips")
def _tile(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.chips import tile_scene

    return tile_scene(
        args.scene,
        args.mask,
        args.scene_name,
        args.out_dir,
        args.tile_size or config["tile_size"],
        config["chips"],
        _classes(config),
        threads=args.threads,
        scl_path=args.scl,
    )


@_stage("filter", "choose the chips to train on, recording why each other chip was dropped")
def _filter(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.chips import filter_chips

    return filter_chips(args.index, args.out, config["filter"], _classes(config))


@_stage("split", "split the kept chips into train / val / test without spatial leakage")
def _split(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.split import split_chips

    return split_chips(args.selected, args.out_dir, config["split"], _classes(config))


@_stage("train", "train the model on the chips")
def _train(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.pixel_model import is_pixel_architecture, train_pixel_model

    if getattr(args, "architecture", None):  # the workflow's pixel baseline
        config = {**config, "model": {**config["model"], "architecture": args.architecture}}
    if is_pixel_architecture(config["model"]["architecture"]):
        return train_pixel_model(args.split, args.chips_root, args.out_dir, config)  # before torch
    from s2landcover.training.train import train_model

    return train_model(
        args.split,
        args.chips_root,
        args.out_dir,
        config,
        accelerator=args.accelerator or config["training"]["accelerator"],
        devices=args.devices or config["training"]["devices"],
        strategy=args.strategy or config["training"]["strategy"],
        num_nodes=args.num_nodes,
    )


@_stage("predict", "predict a whole scene into a land-cover GeoTIFF")
def _predict(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.predict import predict_scene

    return predict_scene(
        args.checkpoint,
        args.scene,
        args.out,
        config["prediction"],
        device=args.device,
        threads=args.threads,
    )


@_stage("classify-chips", "label every chip with its dominant class (task: classification)")
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


@_stage("evaluate", "per-class metrics, plots and the report")
def _evaluate(args: argparse.Namespace, config: dict[str, Any]) -> dict:
    from s2landcover.evaluate import evaluate_model

    def by_scene(paths: Sequence[str]) -> dict[str, Path]:
        return {Path(p).name.removesuffix(".tif"): Path(p) for p in paths}

    return evaluate_model(
        by_scene(args.predictions),
        by_scene(args.masks),
        by_scene(args.scenes),
        args.split,
        args.chips_root,
        args.model_dir,
        args.out_dir,
        _classes(config),
        config["evaluation"],
        baseline_predictions=by_scene(args.baseline_predictions or []),
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``s2lc`` (one subparser per stage)."""
    parser = argparse.ArgumentParser(prog="s2lc", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str) -> argparse.ArgumentParser:
        handler = _HANDLERS[name]
        p = sub.add_parser(name, help=handler.help_text, description=handler.help_text)  # type: ignore[attr-defined]
        group = p.add_mutually_exclusive_group()
        group.add_argument(
            "--config", default="config.yaml", help="YAML configuration (default: config.yaml)"
        )
        group.add_argument(
            "--config-json", help="configuration sections as JSON (used by the workflow)"
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
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--dask-scheduler",
        help="dask scheduler address whose workers fill the windows ('local' or '': threads of "
        "this process; default: compute.dask_scheduler of the config)",
    )
    p = add("tile")
    p.add_argument("--scene-name", required=True)
    p.add_argument("--scene", required=True, help="scene stack GeoTIFF")
    p.add_argument("--mask", required=True, help="mask GeoTIFF on the scene's grid")
    p.add_argument("--scl", help="scene classification band (optional)")
    p.add_argument("--out-dir", required=True, help="chip store folder of this scene")
    p.add_argument(
        "--tile-size", type=int, help="chip side in pixels (default: tile_size of the config)"
    )
    p.add_argument("--threads", type=int, default=1)
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
        "--num-nodes", type=int, default=1, help="machines (srun: one task per GPU on each)"
    )
    p.add_argument(
        "--architecture", help="override model.architecture (pixel_gbm: the pixel baseline)"
    )
    p = add("predict")
    p.add_argument("--checkpoint", required=True, help="model.pt written by train")
    p.add_argument("--scene", required=True, help="scene stack GeoTIFF with the model's bands")
    p.add_argument("--out", required=True, help="output land-cover GeoTIFF")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")
    p.add_argument("--threads", type=int, help="CPU threads for inference")
    p = add("classify-chips")
    p.add_argument("--checkpoint", required=True, help="model.pt of a task: classification model")
    p.add_argument("--chips-root", required=True, help="results/chips/size{tile}")
    p.add_argument("--split", required=True, help="split.parquet")
    p.add_argument("--out-dir", required=True, help="folder for chip rasters, chips.gpkg, metrics")
    p.add_argument("--scenes", nargs="+", help="scenes to classify (default: all in the split)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p = add("evaluate")
    p.add_argument("--predictions", nargs="+", required=True, help="predicted GeoTIFF per scene")
    p.add_argument("--masks", nargs="+", required=True, help="mask per scene ({scene}.tif)")
    p.add_argument("--scenes", nargs="+", required=True, help="scene stack per scene ({scene}.tif)")
    p.add_argument("--split", required=True)
    p.add_argument("--chips-root", required=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument(
        "--baseline-predictions", nargs="*", help="the pixel baseline's GeoTIFF per scene"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``s2lc``; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
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
    if isinstance(result, dict):
        log.info("%s summary: %s", args.command, json.dumps(result, default=str, sort_keys=True))
    log.info("%s finished in %.1f s", args.command, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
