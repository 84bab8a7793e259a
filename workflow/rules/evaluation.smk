# Evaluation: per-class metrics over the full scenes, plots and one report per run.


rule evaluate_model:
    input:
        predictions=expand(
            "{results}/predictions/size{{tile}}/{{model}}/{scene}.tif",
            results=RESULTS,
            scene=EVAL_SCENES,
        ),
        masks=expand("{results}/masks/{scene}.tif", results=RESULTS, scene=EVAL_SCENES),
        scenes=expand(
            "{results}/scenes/{scene}.tif", results=RESULTS, scene=EVAL_SCENES
        ),
        split=f"{RESULTS}/splits/size{{tile}}/split.parquet",
        metrics=f"{RESULTS}/models/size{{tile}}/{{model}}/metrics.csv",
        validity=validity_rasters,
        baseline=pixel_baseline_maps,
    output:
        **evaluation_figures(),
        report=report(
            f"{EVALUATION}/report.html",
            caption="../report/report_html.rst",
            category="Evaluation",
            subcategory="Report",
            labels={"model": "{model}", "figure": "report.html"},
        ),
        metrics=f"{EVALUATION}/metrics.json",
    log:
        f"{LOGS}/evaluate_model/size{{tile}}/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate_model/size{{tile}}/{{model}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=3000,
        runtime=60,
    params:
        **sections("evaluation", "classes"),
        # The other sections, for the report's provenance block (scenes: dates come from the
        # stacks; compute and download change no result).
        **{f"provenance_{name}": value for name, value in PROVENANCE_SECTIONS.items()},
        model_dir=lambda wildcards, input: str(Path(input.metrics).parent),
        out_dir=lambda wildcards, output: str(Path(output.report).parent),
        validity_arg=validity_arg,
        baseline_arg=pixel_baseline_arg,
        benchmarks=BENCHMARKS,
    shell:
        "s2lc evaluate --config-json {params.evaluation:q} {params.classes:q} "
        + PROVENANCE_ARGS
        + " --predictions {input.predictions:q} --masks {input.masks:q} --scenes {input.scenes:q}"
        " --split {input.split:q}"
        " --model-dir {params.model_dir:q} --out-dir {params.out_dir:q} {params.validity_arg}"
        " {params.baseline_arg} --benchmarks {params.benchmarks:q} 2> {log:q}"
