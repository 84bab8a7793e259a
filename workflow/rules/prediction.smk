# Prediction: the whole scene with overlapping windows and blended logits, streamed to a COG.


rule predict_scene:
    input:
        model=f"{RESULTS}/models/size{{tile}}/{{model}}/model.pt",
        scene=f"{RESULTS}/scenes/{{scene}}.tif",
        validity=validity_raster,
    output:
        **prediction_outputs(),
    log:
        f"{LOGS}/predict_scene/size{{tile}}/{{model}}/{{scene}}.log",
    benchmark:
        f"{BENCHMARKS}/predict_scene/size{{tile}}/{{model}}/{{scene}}.tsv"
    conda:
        CONDA_ENV
    threads: ALL_CORES
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=1,
    params:
        **sections("prediction"),
        validity_arg=validity_arg,
    shell:
        "s2lc predict --config-json {params.prediction:q} --checkpoint {input.model:q}"
        " --scene {input.scene:q} --out {output.classes:q} --threads {threads}"
        " {params.validity_arg} 2> {log:q}"


rule predict_chips:
    input:
        model=f"{RESULTS}/models/size{{tile}}/{{model}}/model.pt",
        split=f"{RESULTS}/splits/size{{tile}}/split.parquet",
        chips=chip_stores,
    output:
        rasters=expand(
            "{results}/predictions/size{{tile}}/{{model}}/chips/{scene}.tif",
            results=RESULTS,
            scene=TRAIN_SCENES,
        ),
        layer=f"{RESULTS}/predictions/size{{tile}}/{{model}}/chips/chips.gpkg",
        metrics=f"{RESULTS}/predictions/size{{tile}}/{{model}}/chips/metrics.json",
    log:
        f"{LOGS}/predict_chips/size{{tile}}/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/predict_chips/size{{tile}}/{{model}}.tsv"
    conda:
        CONDA_ENV
    threads: ALL_CORES
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1,
    params:
        **sections("classification"),
        chips_root=lambda wildcards: f"{RESULTS}/chips/size{wildcards.tile}",
        out_dir=lambda wildcards, output: str(Path(output.metrics).parent),
    shell:
        "s2lc classify-chips --config-json {params.classification:q}"
        " --checkpoint {input.model:q} --chips-root {params.chips_root:q} --split {input.split:q}"
        " --out-dir {params.out_dir:q} 2> {log:q}"
