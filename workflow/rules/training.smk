# Training: a segmentation-models-pytorch network on the training chips.


rule train_model:
    input:
        split=f"{RESULTS}/splits/size{{tile}}/split.parquet",
        chips=chip_stores,
        encoder_weights=encoder_weights,
    output:
        # last.ckpt (the resume state) lives beside these but is not an output: Snakemake deletes
        # the outputs of a killed job, and running the rule again resumes from last.ckpt.
        model=f"{RESULTS}/models/size{{tile}}/{{model}}/model.pt",
        metrics=f"{RESULTS}/models/size{{tile}}/{{model}}/metrics.csv",
        curves=f"{RESULTS}/models/size{{tile}}/{{model}}/curves.png",
    log:
        f"{LOGS}/train_model/size{{tile}}/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/train_model/size{{tile}}/{{model}}.tsv"
    conda:
        CONDA_ENV
    threads: ALL_CORES
    # Runtime-only keys (TRAINING_RUNTIME: they change how training runs, not what it learns) are
    # resources, not params, so that changing them re-runs nothing.
    resources:
        **TRAINING_RUNTIME,
        mem_mb=8000,
        runtime=720,
        gpu=TRAINING_GPUS,
    params:
        **sections("model", "training", "classes", "task", "classification"),
        # The trained-on inputs' bands: the dated names of a stack (common.smk).
        bands=model_bands_section,
        tile_size=tile_size_section,
        chips_root=lambda wildcards: f"{RESULTS}/chips/size{wildcards.tile}",
        out_dir=lambda wildcards, output: str(Path(output.model).parent),
    shell:
        "s2lc train --config-json {params.model:q} {params.training:q} {params.classes:q}"
        " {params.bands:q} {params.task:q} {params.classification:q} {params.tile_size:q}"
        " --num-workers {resources.num_workers} --accelerator {resources.accelerator:q}"
        " --strategy {resources.strategy:q}"
        " --checkpoint-interval-s {resources.checkpoint_interval_s} --threads {threads}"
        " --split {input.split:q} --chips-root {params.chips_root:q} --out-dir {params.out_dir:q}"
        # The log gets everything; the terminal gets the line per epoch (progress.py), as it comes.
        " 2>&1 | tee {log:q} | {{ grep --line-buffered -E 'training: epoch [0-9]+/' >&2 || true; }}"
