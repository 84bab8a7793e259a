# Prediction: the whole scene with overlapping windows and blended logits, streamed to a COG.


rule predict_scene:
    conda:
        CONDA_ENV
    input:
        model=f"{RESULTS}/models/size{{tile}}/{{model}}/model.pt",
        scene=f"{RESULTS}/scenes/{{scene}}.tif",
    output:
        **prediction_outputs(),
    params:
        config=cfg("prediction"),
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
        " --scene {input.scene} --out {output.classes} --threads {threads} 2> {log}"
