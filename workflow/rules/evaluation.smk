# Evaluation: per-class metrics over the full scenes, plots and one report per run.


rule evaluate_model:
    conda:
        CONDA_ENV
    input:
        predictions=expand(
            "{results}/predictions/size{{tile}}/{{model}}/{scene}.tif",
            results=RESULTS,
            scene=SCENES,
        ),
        masks=expand("{results}/masks/{scene}.tif", results=RESULTS, scene=SCENES),
        scenes=expand("{results}/scenes/{scene}.tif", results=RESULTS, scene=SCENES),
        split=f"{RESULTS}/splits/size{{tile}}/split.parquet",
        metrics=f"{RESULTS}/models/size{{tile}}/{{model}}/metrics.csv",
        baseline=lambda wildcards: (
            expand(
                f"{RESULTS}/baselines/size{wildcards.tile}/pixel/{{scene}}.tif",
                scene=SCENES,
            )
            if PIXEL_BASELINE
            else []
        ),
    output:
        report=f"{RESULTS}/evaluation/size{{tile}}/{{model}}/report.html",
        metrics=f"{RESULTS}/evaluation/size{{tile}}/{{model}}/metrics.json",
    params:
        config=cfg("evaluation", "classes"),
        chips_root=lambda wildcards: f"{RESULTS}/chips/size{wildcards.tile}",
        model_dir=lambda wildcards, input: str(Path(input.metrics).parent),
        out_dir=lambda wildcards, output: str(Path(output.report).parent),
        baseline=lambda wildcards, input: (
            f"--baseline-predictions {' '.join(input.baseline)}"
            if input.baseline
            else ""
        ),
    log:
        f"{LOGS}/evaluate_model/size{{tile}}/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate_model/size{{tile}}/{{model}}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=60,
    shell:
        "s2lc evaluate --config-json {params.config:q} --predictions {input.predictions}"
        " --masks {input.masks} --scenes {input.scenes} --split {input.split}"
        " --chips-root {params.chips_root} --model-dir {params.model_dir}"
        " --out-dir {params.out_dir} {params.baseline} 2> {log}"
