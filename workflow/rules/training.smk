# Training: a segmentation-models-pytorch network on the training chips.


rule train_model:
    conda:
        CONDA_ENV
    input:
        split=f"{RESULTS}/splits/size{{tile}}/split.parquet",
        chips=chip_stores,
    output:
        # last.ckpt (the resume state) lives beside these but is not an output: Snakemake deletes
        # the outputs of a killed job, and running the rule again resumes from last.ckpt.
        model=f"{RESULTS}/models/size{{tile}}/{{model}}/model.pt",
        metrics=f"{RESULTS}/models/size{{tile}}/{{model}}/metrics.csv",
        curves=f"{RESULTS}/models/size{{tile}}/{{model}}/curves.png",
    params:
        config=cfg("model", "training", "classes", "bands", "tile_size", "task", "classification"),
        chips_root=lambda wildcards: f"{RESULTS}/chips/size{wildcards.tile}",
        out_dir=lambda wildcards, output: str(Path(output.model).parent),
    log:
        f"{LOGS}/train_model/size{{tile}}/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/train_model/size{{tile}}/{{model}}.tsv"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=TRAINING_GPUS,
    shell:
        "s2lc train --config-json {params.config:q} --split {input.split}"
        " --chips-root {params.chips_root} --out-dir {params.out_dir} 2> {log}"
