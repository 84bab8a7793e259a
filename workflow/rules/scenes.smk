# Scenes in: the synthetic demo, STAC downloads, and ingest into the 10 m scene stack.


rule make_demo_landcover:
    output:
        f"{RESULTS}/demo/landcover_1m.tif",
    log:
        f"{LOGS}/make_demo_landcover.log",
    benchmark:
        f"{BENCHMARKS}/make_demo_landcover.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        **sections("demo"),
    shell:
        "s2lc make-demo-landcover --config-json {params.demo:q} --out {output:q} 2> {log:q}"


rule make_demo_scene:
    input:
        landcover=f"{RESULTS}/demo/landcover_1m.tif",
    output:
        directory(f"{RESULTS}/demo/{{scene}}.SAFE"),
    log:
        f"{LOGS}/make_demo_scene/{{scene}}.log",
    benchmark:
        f"{BENCHMARKS}/make_demo_scene/{{scene}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        **sections("demo", "bands"),
        scenes=scene_section,
    shell:
        "s2lc make-demo-scene --config-json {params.demo:q} {params.bands:q} {params.scenes:q}"
        " --scene {wildcards.scene:q} --landcover {input.landcover:q} --out {output:q} 2> {log:q}"


rule download_scene:
    output:
        directory(f"{RESULTS}/downloads/{{scene}}"),
    log:
        f"{LOGS}/download_scene/{{scene}}.log",
    benchmark:
        f"{BENCHMARKS}/download_scene/{{scene}}.tsv"
    retries: 2
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=120,
        downloads=1,
    params:
        **sections("bands", "download"),
        scenes=scene_section,
    shell:
        "s2lc download --config-json {params.bands:q} {params.download:q} {params.scenes:q}"
        " --scene {wildcards.scene:q} --out-dir {output:q} 2> {log:q}"


rule download_mask:
    input:
        expand(f"{RESULTS}/downloads/{{scene}}", scene=STAC_SCENES),
    output:
        f"{RESULTS}/downloads/worldcover_{{year}}.tif",
    log:
        f"{LOGS}/download_mask/worldcover_{{year}}.log",
    benchmark:
        f"{BENCHMARKS}/download_mask/worldcover_{{year}}.tsv"
    wildcard_constraints:
        year=r"20\d\d",
    retries: 2
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
        downloads=1,
    params:
        **sections("download"),
    shell:
        "s2lc download-mask --config-json {params.download:q} --download-dirs {input:q}"
        " --year {wildcards.year:q} --out {output:q} 2> {log:q}"


rule ingest_scene:
    input:
        unpack(scene_inputs),
    output:
        **ingest_outputs(),
    log:
        f"{LOGS}/ingest_scene/{{scene}}.log",
    benchmark:
        f"{BENCHMARKS}/ingest_scene/{{scene}}.tsv"
    # Scenes of the scene table only: a stack's stack comes from stack_scene.
    wildcard_constraints:
        scene=SCENE_PATTERN,
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=3000,
        runtime=60,
    params:
        **sections("bands", "ingest"),
        scenes=scene_section,
        product=scene_product_arg,
        scl=scl_output_arg,
    shell:
        "s2lc ingest --config-json {params.bands:q} {params.ingest:q} {params.scenes:q}"
        " --scene {wildcards.scene:q} {params.product} --out {output.stack:q} {params.scl}"
        " --threads {threads} 2> {log:q}"
