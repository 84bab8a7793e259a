# The pixel baseline (evaluation.pixel_baseline): a pixel classifier trained on the same training
# chips and mapped over every scene, so that the report sets the model beside it.
import json

from s2landcover.pixel_model import baseline_rule_config, is_pixel_architecture

# The report gets a pixel baseline unless switched off or the model is the pixel classifier itself.
PIXEL_BASELINE = config["evaluation"]["pixel_baseline"] and not is_pixel_architecture(
    config["model"]["architecture"]
)


rule train_pixel_baseline:
    input:
        split=f"{RESULTS}/splits/size{{tile}}/split.parquet",
        chips=chip_stores,
    output:
        model=f"{RESULTS}/baselines/size{{tile}}/pixel/model.pt",
        metrics=f"{RESULTS}/baselines/size{{tile}}/pixel/metrics.csv",
        curves=f"{RESULTS}/baselines/size{{tile}}/pixel/curves.png",
    log:
        f"{LOGS}/train_pixel_baseline/size{{tile}}.log",
    benchmark:
        f"{BENCHMARKS}/train_pixel_baseline/size{{tile}}.tsv"
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        mem_mb=3000,
        runtime=60,
    params:
        config=json.dumps(baseline_rule_config(config), sort_keys=True),
        chips_root=lambda wildcards: f"{RESULTS}/chips/size{wildcards.tile}",
        out_dir=lambda wildcards, output: str(Path(output.model).parent),
    shell:
        "s2lc train --config-json {params.config:q} --split {input.split}"
        " --chips-root {params.chips_root} --out-dir {params.out_dir} 2> {log}"


rule predict_pixel_baseline:
    input:
        model=f"{RESULTS}/baselines/size{{tile}}/pixel/model.pt",
        scene=f"{RESULTS}/scenes/{{scene}}.tif",
    output:
        f"{RESULTS}/baselines/size{{tile}}/pixel/{{scene}}.tif",
    log:
        f"{LOGS}/predict_pixel_baseline/size{{tile}}/{{scene}}.log",
    benchmark:
        f"{BENCHMARKS}/predict_pixel_baseline/size{{tile}}/{{scene}}.tsv"
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        mem_mb=3000,
        runtime=120,
    params:
        config=json.dumps({"prediction": {**config["prediction"], "confidence": False}}),
    shell:
        "s2lc predict --config-json {params.config:q} --checkpoint {input.model}"
        " --scene {input.scene} --out {output} --threads {threads} 2> {log}"
