# Land-cover mapping from Sentinel-2: scenes + a land-cover map -> chips -> U-Net -> a land-cover
# GeoTIFF per scene. Stages and files: see README.md and workflow/rules/.


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/scenes.smk"
include: "workflow/rules/validity.smk"
include: "workflow/rules/masks.smk"
include: "workflow/rules/chips.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/prediction.smk"
include: "workflow/rules/baseline.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/dates.smk"


rule all:
    default_target: True
    input:
        final_outputs(),


onsuccess:
    # Where the maps and the report are, and the headline metrics (s2landcover/run_summary.py).
    from s2landcover.run_summary import run_summary

    sys.stderr.write(run_summary(final_outputs()) + "\n")
