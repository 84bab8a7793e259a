# Several dates of one area (docs/dates.md): scenes stacked into one input whose band names say the
# date, the stack's validity from its dates', and one composite map per area from dated maps.


# A stack is an input like a scene: its stacked file and validity raster take the place of those
# that ingest and scene_validity make for a scene.
ruleorder: stack_scene > ingest_scene
ruleorder: stack_validity > scene_validity


rule stack_scene:
    input:
        stack_members,
    output:
        f"{RESULTS}/scenes/{{stack}}.tif",
    log:
        f"{LOGS}/stack_scene/{{stack}}.log",
    benchmark:
        f"{BENCHMARKS}/stack_scene/{{stack}}.tsv"
    wildcard_constraints:
        stack="|".join(STACKS) or "^$",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        dates=stack_dates,
        names=stack_names,
    shell:
        "s2lc stack --scenes {input:q} --dates {params.dates} --names {params.names}"
        " --out {output:q} 2> {log:q}"


rule stack_validity:
    input:
        validity=stack_member_validity,
        scene=f"{RESULTS}/scenes/{{stack}}.tif",
    output:
        f"{RESULTS}/validity/{{stack}}.tif",
    log:
        f"{LOGS}/stack_validity/{{stack}}.log",
    benchmark:
        f"{BENCHMARKS}/stack_validity/{{stack}}.tsv"
    wildcard_constraints:
        stack="|".join(STACKS) or "^$",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        partial=lambda wildcards: (
            "--allow-partial"
            if STACK_ENTRIES[wildcards.stack]["allow_partial"]
            else ""
        ),
    shell:
        "s2lc stack-validity --validity {input.validity:q} --scene {input.scene:q}"
        " --out {output:q} {params.partial} 2> {log:q}"


rule composite_map:
    input:
        unpack(composite_predictions),
    output:
        classes=f"{RESULTS}/composites/size{{tile}}/{{model}}/{{composite}}.tif",
        source=f"{RESULTS}/composites/size{{tile}}/{{model}}/{{composite}}_source.tif",
    log:
        f"{LOGS}/composite_map/size{{tile}}/{{model}}/{{composite}}.log",
    benchmark:
        f"{BENCHMARKS}/composite_map/size{{tile}}/{{model}}/{{composite}}.tsv"
    wildcard_constraints:
        composite="|".join(COMPOSITE_ENTRIES) or "^$",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        dates=composite_dates,
        names=composite_names,
    shell:
        "s2lc composite --predictions {input.predictions:q} --confidence {input.confidence:q}"
        " --dates {params.dates} --names {params.names} --out {output.classes:q} 2> {log:q}"
