# Configuration validation, wildcard constraints and input functions shared by all rules.
import os
import re
from pathlib import Path
import shlex
import sys

from s2landcover.config import (
    ConfigError,
    RUNTIME_KEYS,
    config_subset,
    model_bands,
    section_json,
    validate_config,
)
from s2landcover.pixel_model import baseline_rule_config, is_pixel_architecture

# The whole config is validated once, here, with the checks that relate sections (split.scenes
# against the scene table, chips.stride against tile_size, ...). Each job then gets the sections
# its command reads, already resolved, and its command validates only those, section by section.
try:
    _validated = validate_config(
        config, source="config (config.yaml and --config overrides)"
    )
except ConfigError as error:
    # A user mistake: one clear message, no traceback, nothing written.
    sys.stderr.write(f"Configuration error: {error}\n")
    sys.exit(1)
config.clear()
config.update(_validated)

SCENE_ENTRIES = {scene["name"]: scene for scene in config["scenes"]}
SCENES = list(SCENE_ENTRIES)
SCENE_SOURCES = {name: scene["source"] for name, scene in SCENE_ENTRIES.items()}
STAC_SCENES = [
    name for name, source in SCENE_SOURCES.items() if source["type"] == "stac"
]
# Stacked dates (workflow/rules/dates.smk, docs/dates.md): a stack is an input like a scene
# (results/scenes/{stack}.tif), made from its member scenes, which are ingested but used on their
# own only when their role says so (`none` by default).
STACK_ENTRIES = {stack["name"]: stack for stack in config["stacks"]}
STACKS = list(STACK_ENTRIES)
COMPOSITE_ENTRIES = {composite["name"]: composite for composite in config["composites"]}
# scenes[].role (and stacks[].role): `both` inputs are tiled, trained on, mapped and evaluated;
# `train` ones are only tiled and trained on; `map` ones are only mapped (no mask needed); `none`
# ones (stack members) only ingested.
INPUT_ENTRIES = {**SCENE_ENTRIES, **STACK_ENTRIES}
TRAIN_SCENES = [n for n, s in INPUT_ENTRIES.items() if s["role"] in ("train", "both")]
MAP_SCENES = [n for n, s in INPUT_ENTRIES.items() if s["role"] in ("map", "both")]
EVAL_SCENES = [n for n, s in INPUT_ENTRIES.items() if s["role"] == "both"]
TILE = config["tile_size"]
MODEL = config["model"]["name"]
RESULTS = "results"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
# Where raster stages run their windows: "local" threads, or a dask scheduler's address. Passed as
# a resource, not a param: it changes where a result is computed, not the result, so changing it
# must not re-run anything (Snakemake re-runs jobs whose params change, not their resources).
DASK_SCHEDULER = config["compute"]["dask_scheduler"] or "local"
# GPUs a training job asks the cluster for: training.devices when it is a count, else one.
TRAINING_GPUS = (
    config["training"]["devices"] if config["training"]["devices"] != "auto" else 1
)
# Runtime-only training keys (RUNTIME_KEYS: loader workers, accelerator, strategy, save interval):
# resources of train_model, so that changing them re-runs nothing (they are not in its params).
TRAINING_RUNTIME = {
    key: str(config["training"][key]) for key in RUNTIME_KEYS["training"]
}
# Threads of the rules that use the whole machine: every CPU, which Snakemake lowers to --cores
# (and a cluster profile sets per rule). A number, not workflow.cores, so that --summary, --dag,
# --report and -n work without --cores.
ALL_CORES = os.cpu_count() or 1
# The software of every rule (used with --use-conda; relative to workflow/rules/).
CONDA_ENV = "../../environment.yml"


# The names of the scene table (not stacks), for rules that read a scene's own files.
SCENE_PATTERN = "|".join(re.escape(name) for name in SCENES)


wildcard_constraints:
    scene="|".join(SCENES + STACKS),
    tile=r"\d+",
    model=r"[A-Za-z0-9_.-]+",


def cfg(*sections):
    """JSON of the config sections a job reads, as one param (one --config-json argument).
    Prefer sections(): one param per section gives readable rerun reasons."""
    return config_subset(config, list(sections))


def sections(*names):
    """One param per config section a job's command reads, each the JSON {"section": value}
    (runtime-only keys left out). Changing a section re-runs the job, and Snakemake's "params
    changed" reason shows only the changed sections, by name. Pass them all to --config-json.
    """
    return {name: section_json(name, config[name]) for name in names}


def scene_section(wildcards):
    """The scene table cut to this job's scene (without its role, which changes no product): adding
    or changing another scene re-runs nothing of this one."""
    entry = {k: v for k, v in SCENE_ENTRIES[wildcards.scene].items() if k != "role"}
    return section_json("scenes", [entry])


def tile_size_section(wildcards):
    """tile_size resolved from the path ({tile}), which is what the job makes."""
    return section_json("tile_size", int(wildcards.tile))


def _vrt_sources(path):
    """The files a GDAL VRT mosaic reads (its SourceFilename entries, recursively), so that a
    replaced tile of a mosaic re-runs what depends on it; [] for other files."""
    if not str(path).lower().endswith(".vrt") or not Path(path).is_file():
        return []
    import xml.etree.ElementTree as ElementTree

    files = []
    for element in ElementTree.parse(path).iter("SourceFilename"):
        name = (element.text or "").strip()
        parts = Path(name).parts
        if not name or (len(parts) > 1 and parts[1].startswith("vsi")):
            continue  # a GDAL virtual file system (/vsizip/..., /vsicurl/...): not a local file
        if element.get("relativeToVRT") == "1":
            name = str(Path(path).parent / name)
        if Path(name).is_file():
            files += [name, *_vrt_sources(name)]
    return sorted(set(files))


def _source_files(path):
    """Every file under a scene source path (a file, or a folder such as a .SAFE or a folder of
    band files), so that replacing any of them re-runs ingest. A missing path is returned as is:
    Snakemake then stops with "missing input files" naming it."""
    source = Path(path)
    if source.is_dir():
        files = sorted(str(p) for p in source.rglob("*") if p.is_file())
        return files or [path]
    files = [path, *_vrt_sources(path)]
    sidecar = Path(
        f"{path}.aux.xml"
    )  # GDAL's metadata (scale, offset, band names) beside it
    if sidecar.is_file():
        files.append(str(sidecar))
    return files


def scene_inputs(wildcards):
    """What ingest reads: the product the workflow makes (demo) or fetches (stac) as `product`,
    or the user's files (safe, band_files, geotiff) as `files`."""
    source = SCENE_SOURCES[wildcards.scene]
    kind = source["type"]
    if kind == "demo":
        return {"product": f"{RESULTS}/demo/{wildcards.scene}.SAFE"}
    if kind == "stac":
        return {"product": f"{RESULTS}/downloads/{wildcards.scene}"}
    if source.get("path"):
        return {"files": _source_files(source["path"])}
    return {}  # ingest names the missing `path`


def scene_product_arg(wildcards, input):
    """The --source-path argument of ingest for workflow-made products."""
    return f"--source-path {shlex.quote(input.product)}" if input.get("product") else ""


def scl_output_arg(wildcards, output):
    return f"--scl-out {shlex.quote(output.scl)}" if output.get("scl") else ""


def scl_band(wildcards):
    """The scene classification band on the 10 m grid, when ingest carries it."""
    return (
        f"{RESULTS}/scenes/{wildcards.scene}_scl.tif"
        if config["ingest"]["include_scl"]
        else []
    )


def scl_input_arg(wildcards, input):
    return f"--scl {shlex.quote(input.scl)}" if input.get("scl") else ""


def qml(path):
    """The QGIS style a stage writes beside a raster: ``<stem>.qml`` (io/qgis_styles.py)."""
    return str(Path(path).with_suffix(".qml"))


def ingest_outputs():
    """The scene stack, and the SCL band beside it when ingest.include_scl is set."""
    outputs = {"stack": f"{RESULTS}/scenes/{{scene}}.tif"}
    if config["ingest"]["include_scl"]:
        outputs["scl"] = f"{RESULTS}/scenes/{{scene}}_scl.tif"
    # The QGIS style ingest writes beside each raster (<stem>.qml, s2landcover/io/stack.py).
    return {**outputs, **{f"{k}_style": qml(v) for k, v in outputs.items()}}


def prediction_outputs():
    """The class map, and its confidence band beside it when prediction.confidence is set."""
    prefix = f"{RESULTS}/predictions/size{{tile}}/{{model}}/{{scene}}"
    outputs = {"classes": f"{prefix}.tif"}
    if config["prediction"]["confidence"]:
        outputs["confidence"] = f"{prefix}_confidence.tif"
    # The QGIS style predict writes beside each raster (<stem>.qml, io/prediction_writer.py).
    return {**outputs, **{f"{k}_style": qml(v) for k, v in outputs.items()}}


def mask_source(wildcards):
    """The land-cover map: the demo's 1 m map, or the configured file."""
    source = config["mask"]["source"]
    return f"{RESULTS}/demo/landcover_1m.tif" if source == "demo" else source


def mask_parts(wildcards):
    """The files a VRT mosaic given as the land-cover map reads (inputs too); [] otherwise."""
    source = config["mask"]["source"]
    return [] if source == "demo" else _vrt_sources(source)


def encoder_weights(wildcards):
    """The user's encoder weights file (model.encoder_weights), when given: an input of training."""
    path = config["model"]["encoder_weights"]
    return [path] if path else []


def chip_indexes(wildcards):
    return expand(
        "{results}/chips/size{tile}/{scene}/index.parquet",
        results=RESULTS,
        tile=wildcards.tile,
        scene=TRAIN_SCENES,
    )


def final_outputs():
    """Everything the default target builds: a prediction per mapped scene and the evaluation
    report (segmentation), or chip labels per trained-on scene with their metrics (classification).
    """
    prefix = f"size{TILE}/{MODEL}"
    if config["task"] == "classification":
        return [
            *expand(
                f"{RESULTS}/predictions/{prefix}/chips/{{scene}}.tif",
                scene=TRAIN_SCENES,
            ),
            f"{RESULTS}/predictions/{prefix}/chips/metrics.json",
        ]
    evaluation = [f"{RESULTS}/evaluation/{prefix}/report.html"] if EVAL_SCENES else []
    composites = expand(
        f"{RESULTS}/composites/{prefix}/{{name}}.tif", name=COMPOSITE_ENTRIES
    )
    return [
        *expand(f"{RESULTS}/predictions/{prefix}/{{scene}}.tif", scene=MAP_SCENES),
        *evaluation,
        *composites,
    ]


def chip_stores(wildcards):
    return expand(
        "{results}/chips/size{tile}/{scene}/{name}",
        results=RESULTS,
        tile=wildcards.tile,
        scene=TRAIN_SCENES,
        name=["index.parquet", "images.npy", "masks.npy", "meta.json"],
    )


# Valid observations (workflow/rules/validity.smk, docs/clouds.md).
def validity_raster(wildcards):
    """The scene's validity raster, or [] when clouds are not screened."""
    if config["validity"]["source"] == "none":
        return []
    return f"{RESULTS}/validity/{wildcards.scene}.tif"


def validity_rasters(wildcards):
    """The validity rasters of every scene (evaluation), or []."""
    if config["validity"]["source"] == "none":
        return []
    return expand("{results}/validity/{scene}.tif", results=RESULTS, scene=EVAL_SCENES)


def validity_arg(wildcards, input):
    """--validity with the input's validity raster(s), or nothing."""
    paths = input.get("validity")
    if not paths:
        return ""
    paths = [paths] if isinstance(paths, str) else list(paths)
    return "--validity " + " ".join(shlex.quote(str(path)) for path in paths)


def validity_file(wildcards):
    """A user-supplied mask for the scene (validity.files), so that changing it re-runs."""
    return config["validity"]["files"].get(wildcards.scene, [])


# The pixel baseline (workflow/rules/baseline.smk): the report sets the model beside it unless
# evaluation.pixel_baseline is false or the model is the pixel classifier itself.
PIXEL_BASELINE = config["evaluation"]["pixel_baseline"] and not is_pixel_architecture(
    config["model"]["architecture"]
)


def pixel_baseline_sections():
    """The sections the pixel baseline's training reads, one param each (model: architecture
    pixel_gbm with model.pixel; training: the seed), so that changing the network's settings does
    not re-train the baseline."""
    sections = {
        name: section_json(name, value)
        for name, value in baseline_rule_config(config).items()
        if name != "tile_size"  # resolved from the path: tile_size_section
    }
    # The bands of the trained-on inputs (a stack's dated names), as for the network.
    sections["bands"] = section_json("bands", model_bands(config))
    return sections


def pixel_baseline_maps(wildcards):
    """The pixel baseline's map of every evaluated scene, or [] when there is no baseline."""
    if not PIXEL_BASELINE:
        return []
    return expand(
        "{results}/baselines/size{tile}/pixel/{scene}.tif",
        results=RESULTS,
        tile=wildcards.tile,
        scene=EVAL_SCENES,
    )


def pixel_baseline_arg(wildcards, input):
    """--baseline-predictions with the pixel baseline's maps, or nothing."""
    paths = input.get("baseline")
    if not paths:
        return ""
    paths = [paths] if isinstance(paths, str) else list(paths)
    return "--baseline-predictions " + " ".join(
        shlex.quote(str(path)) for path in paths
    )


# Several dates (workflow/rules/dates.smk, docs/dates.md).
def model_bands_section(wildcards):
    """The `bands` section training gets: the bands of the trained-on inputs (the dated names of
    a stack, such as 2024-04-15:B04; the config's bands otherwise)."""
    return section_json("bands", model_bands(config))


def stack_members(wildcards):
    return expand(
        "{results}/scenes/{scene}.tif",
        results=RESULTS,
        scene=STACK_ENTRIES[wildcards.stack]["scenes"],
    )


def stack_member_validity(wildcards):
    return expand(
        "{results}/validity/{scene}.tif",
        results=RESULTS,
        scene=STACK_ENTRIES[wildcards.stack]["scenes"],
    )


def stack_dates(wildcards):
    """The member scenes' dates, in stack order (quoted arguments)."""
    members = STACK_ENTRIES[wildcards.stack]["scenes"]
    return " ".join(shlex.quote(SCENE_ENTRIES[m]["date"]) for m in members)


def stack_names(wildcards):
    return " ".join(shlex.quote(m) for m in STACK_ENTRIES[wildcards.stack]["scenes"])


def input_date(name):
    """The date label of a scene, or of a stack its dates joined by '+'."""
    if name in STACK_ENTRIES:
        return "+".join(SCENE_ENTRIES[m]["date"] for m in STACK_ENTRIES[name]["scenes"])
    return SCENE_ENTRIES[name]["date"] or name


def composite_predictions(wildcards):
    prefix = f"{RESULTS}/predictions/size{wildcards.tile}/{wildcards.model}"
    members = COMPOSITE_ENTRIES[wildcards.composite]["scenes"]
    return {
        "predictions": [f"{prefix}/{m}.tif" for m in members],
        "confidence": [f"{prefix}/{m}_confidence.tif" for m in members],
    }


def composite_dates(wildcards):
    members = COMPOSITE_ENTRIES[wildcards.composite]["scenes"]
    return " ".join(shlex.quote(input_date(m)) for m in members)


def composite_names(wildcards):
    return " ".join(
        shlex.quote(m) for m in COMPOSITE_ENTRIES[wildcards.composite]["scenes"]
    )


# Evaluation outputs (workflow/rules/evaluation.smk) and what Snakemake's report shows of them.
EVALUATION = f"{RESULTS}/evaluation/size{{tile}}/{{model}}"
PROVENANCE_SECTIONS = sections(
    *(
        n
        for n in config
        if n not in ("evaluation", "classes", "scenes", "compute", "download")
    )
)
# Their --config-json arguments (one quoted JSON object per section).
PROVENANCE_ARGS = " ".join(
    f"{{params.provenance_{name}:q}}" for name in PROVENANCE_SECTIONS
)


def evaluation_figures():
    """The figures and the key-numbers table that evaluate writes beside report.html, flagged for
    Snakemake's report (snakemake --report report.zip; captions in workflow/report/)."""

    def flagged(name, caption, subcategory, **labels):
        return report(
            f"{EVALUATION}/{name}",
            caption=f"../report/{caption}.rst",
            category="Evaluation",
            subcategory=subcategory,
            labels={"model": "{model}", "figure": name, **labels},
        )

    outputs = {
        "key_numbers": flagged("key_numbers.tsv", "key_numbers", "Key numbers"),
        "confusion": flagged("confusion_matrix.png", "confusion_matrix", "Key numbers"),
        "curves": report(
            f"{EVALUATION}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
            subcategory="U-Net",
            labels={"model": "{model}", "figure": "training_curves.png"},
        ),
    }
    if PIXEL_BASELINE:
        outputs["baselines"] = flagged("baselines.png", "baselines", "Key numbers")
    if config["evaluation"]["sample_chips"] > 0:
        outputs["samples"] = flagged("samples.png", "samples", "Maps", scene="several")
    for scene in EVAL_SCENES:
        outputs[f"overview_{scene}"] = flagged(
            f"overview_{scene}.png", "overview", "Maps", scene=scene
        )
    return outputs
