# Configuration validation, wildcard constraints and input functions shared by all rules.
import sys

from s2landcover.config import ConfigError, config_subset, validate_config

try:
    _validated = validate_config(config, source="config (config.yaml and --config overrides)")
except ConfigError as error:
    # A user mistake: one clear message, no traceback, nothing written.
    sys.stderr.write(f"Configuration error: {error}\n")
    sys.exit(1)
config.clear()
config.update(_validated)

SCENES = [scene["name"] for scene in config["scenes"]]
SCENE_SOURCES = {scene["name"]: scene["source"] for scene in config["scenes"]}
STAC_SCENES = [name for name, source in SCENE_SOURCES.items() if source["type"] == "stac"]
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
TRAINING_GPUS = config["training"]["devices"] if config["training"]["devices"] != "auto" else 1
# The software of every rule (used with --use-conda; relative to workflow/rules/).
CONDA_ENV = "../../environment.yml"


wildcard_constraints:
    scene="|".join(SCENES),
    tile=r"\d+",
    model=r"[A-Za-z0-9_.-]+",


def cfg(*sections):
    """JSON of the config sections a job reads (its params): changing them re-runs the job."""
    return config_subset(config, list(sections))


def scene_product(wildcards):
    """What ingest reads for a scene the workflow makes (demo) or fetches (stac); [] otherwise."""
    kind = SCENE_SOURCES[wildcards.scene]["type"]
    if kind == "demo":
        return f"{RESULTS}/demo/{wildcards.scene}.SAFE"
    if kind == "stac":
        return f"{RESULTS}/downloads/{wildcards.scene}"
    return []


def scene_product_arg(wildcards, input):
    """The --source-path argument of ingest for workflow-made products."""
    return f"--source-path {input.product}" if input.get("product") else ""


def scl_output_arg(wildcards, output):
    return f"--scl-out {output.scl}" if output.get("scl") else ""


def scl_band(wildcards):
    """The scene classification band on the 10 m grid, when ingest carries it."""
    return f"{RESULTS}/scenes/{wildcards.scene}_scl.tif" if config["ingest"]["include_scl"] else []


def scl_input_arg(wildcards, input):
    return f"--scl {input.scl}" if input.get("scl") else ""


def ingest_outputs():
    """The scene stack, and the SCL band beside it when ingest.include_scl is set."""
    outputs = {"stack": f"{RESULTS}/scenes/{{scene}}.tif"}
    if config["ingest"]["include_scl"]:
        outputs["scl"] = f"{RESULTS}/scenes/{{scene}}_scl.tif"
    return outputs


def prediction_outputs():
    """The class map, and its confidence band beside it when prediction.confidence is set."""
    prefix = f"{RESULTS}/predictions/size{{tile}}/{{model}}/{{scene}}"
    outputs = {"classes": f"{prefix}.tif"}
    if config["prediction"]["confidence"]:
        outputs["confidence"] = f"{prefix}_confidence.tif"
    return outputs


def mask_source(wildcards):
    """The land-cover map: the demo's 1 m map, or the configured file."""
    source = config["mask"]["source"]
    return f"{RESULTS}/demo/landcover_1m.tif" if source == "demo" else source


def chip_indexes(wildcards):
    return expand(
        "{results}/chips/size{tile}/{scene}/index.parquet",
        results=RESULTS,
        tile=wildcards.tile,
        scene=SCENES,
    )


def final_outputs():
    """Everything the default target builds: a prediction per scene and the evaluation report
    (segmentation), or chip labels per scene with their metrics (classification)."""
    prefix = f"size{TILE}/{MODEL}"
    if config["task"] == "classification":
        return [
            *expand(f"{RESULTS}/predictions/{prefix}/chips/{{scene}}.tif", scene=SCENES),
            f"{RESULTS}/predictions/{prefix}/chips/metrics.json",
        ]
    return [
        *expand(f"{RESULTS}/predictions/{prefix}/{{scene}}.tif", scene=SCENES),
        f"{RESULTS}/evaluation/{prefix}/report.html",
    ]


def chip_stores(wildcards):
    return expand(
        "{results}/chips/size{tile}/{scene}/{name}",
        results=RESULTS,
        tile=wildcards.tile,
        scene=SCENES,
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
    return expand("{results}/validity/{scene}.tif", results=RESULTS, scene=SCENES)


def validity_arg(wildcards, input):
    """--validity with the input's validity raster(s), or nothing."""
    paths = input.get("validity")
    if not paths:
        return ""
    return "--validity " + " ".join([paths] if isinstance(paths, str) else list(paths))


def validity_file(wildcards):
    """A user-supplied mask for the scene (validity.files), so that changing it re-runs."""
    return config["validity"]["files"].get(wildcards.scene, [])
