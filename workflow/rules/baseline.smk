# The pixel baseline (evaluation.pixel_baseline): a pixel classifier trained on the same training
# chips and mapped over every evaluated scene, so that the report sets the model beside it.


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
    threads: ALL_CORES
    resources:
        mem_mb=3000,
        runtime=60,
    params:
        **pixel_baseline_sections(),
        tile_size=tile_size_section,
        chips_root=lambda wildcards: f"{RESULTS}/chips/size{wildcards.tile}",
        out_dir=lambda wildcards, output: str(Path(output.model).parent),
    shell:
        "s2lc train --config-json {params.model:q} {params.training:q} {params.classes:q}"
        " {params.bands:q} {params.task:q} {params.tile_size:q} --threads {threads}"
        " --split {input.split:q} --chips-root {params.chips_root:q} --out-dir {params.out_dir:q}"
        " 2> {log:q}"


rule predict_pixel_baseline:
    input:
        model=f"{RESULTS}/baselines/size{{tile}}/pixel/model.pt",
        scene=f"{RESULTS}/scenes/{{scene}}.tif",
        validity=validity_raster,
    output:
        f"{RESULTS}/baselines/size{{tile}}/pixel/{{scene}}.tif",
    log:
        f"{LOGS}/predict_pixel_baseline/size{{tile}}/{{scene}}.log",
    benchmark:
        f"{BENCHMARKS}/predict_pixel_baseline/size{{tile}}/{{scene}}.tsv"
    conda:
        CONDA_ENV
    threads: ALL_CORES
    resources:
        mem_mb=3000,
        runtime=120,
    params:
        prediction=section_json(
            "prediction", {**config["prediction"], "confidence": False}
        ),
        validity_arg=validity_arg,
    shell:
        "s2lc predict --config-json {params.prediction:q} --checkpoint {input.model:q}"
        " --scene {input.scene:q} --out {output:q} --threads {threads} {params.validity_arg}"
        " 2> {log:q}"
