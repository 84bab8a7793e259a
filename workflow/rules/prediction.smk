# Prediction: the whole scene with overlapping windows and blended logits, streamed to a COG.


rule predict_scene:
    conda:
        CONDA_ENV
    input:
        model=f"{RESULTS}/models/size{{tile}}/{{model}}/model.pt",
        scene=f"{RESULTS}/scenes/{{scene}}.tif",
        validity=validity_raster,
    output:
        **prediction_outputs(),
    params:
        config=cfg("prediction"),
        validity=validity_arg,
    log:
        f"{LOGS}/predict_scene/size{{tile}}/{{model}}/{{scene}}.log",
    benchmark:
        f"{BENCHMARKS}/predict_scene/size{{tile}}/{{model}}/{{scene}}.tsv"
    threads: workflow.cores
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=1,
    shell:
        "s2lc predict --config-json {params.config:q} --checkpoint {input.model}"
        " --scene {input.scene} --out {output.classes} --threads {threads} {params.validity} 2> {log}"


rule predict_chips:
    conda:
        CONDA_ENV
    input:
        model=f"{RESULTS}/models/size{{tile}}/{{model}}/model.pt",
        split=f"{RESULTS}/splits/size{{tile}}/split.parquet",
        chips=chip_stores,
    output:
        rasters=expand(
            "{results}/predictions/size{{tile}}/{{model}}/chips/{scene}.tif",
            results=RESULTS,
            scene=SCENES,
        ),
        layer=f"{RESULTS}/predictions/size{{tile}}/{{model}}/chips/chips.gpkg",
        metrics=f"{RESULTS}/predictions/size{{tile}}/{{model}}/chips/metrics.json",
    params:
        config=cfg("classification"),
        chips_root=lambda wildcards: f"{RESULTS}/chips/size{wildcards.tile}",
        out_dir=lambda wildcards, output: str(Path(output.metrics).parent),
    log:
        f"{LOGS}/predict_chips/size{{tile}}/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/predict_chips/size{{tile}}/{{model}}.tsv"
    threads: workflow.cores
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1,
    shell:
        "s2lc classify-chips --config-json {params.config:q} --checkpoint {input.model}"
        " --chips-root {params.chips_root} --split {input.split} --out-dir {params.out_dir} 2> {log}"
