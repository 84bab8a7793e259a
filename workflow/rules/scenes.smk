# Scenes in: the synthetic demo, STAC downloads, and ingest into the 10 m scene stack.


rule make_demo_landcover:
    conda:
        CONDA_ENV
    output:
        f"{RESULTS}/demo/landcover_1m.tif",
    params:
        config=cfg("demo"),
    log:
        f"{LOGS}/make_demo_landcover.log",
    benchmark:
        f"{BENCHMARKS}/make_demo_landcover.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "s2lc make-demo-landcover --config-json {params.config:q} --out {output} 2> {log}"


rule make_demo_scene:
    conda:
        CONDA_ENV
    input:
        landcover=f"{RESULTS}/demo/landcover_1m.tif",
    output:
        directory(f"{RESULTS}/demo/{{scene}}.SAFE"),
    params:
        config=cfg("demo", "scenes", "bands"),
    log:
        f"{LOGS}/make_demo_scene/{{scene}}.log",
    benchmark:
        f"{BENCHMARKS}/make_demo_scene/{{scene}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "s2lc make-demo-scene --config-json {params.config:q} --scene {wildcards.scene}"
        " --landcover {input.landcover} --out {output} 2> {log}"


rule download_scene:
    conda:
        CONDA_ENV
    output:
        directory(f"{RESULTS}/downloads/{{scene}}"),
    params:
        config=cfg("scenes", "bands", "download"),
    log:
        f"{LOGS}/download_scene/{{scene}}.log",
    benchmark:
        f"{BENCHMARKS}/download_scene/{{scene}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=120,
        downloads=1,
    retries: 2
    shell:
        "s2lc download --config-json {params.config:q} --scene {wildcards.scene}"
        " --out-dir {output} 2> {log}"


rule download_mask:
    conda:
        CONDA_ENV
    input:
        expand(f"{RESULTS}/downloads/{{scene}}", scene=STAC_SCENES),
    output:
        f"{RESULTS}/downloads/worldcover_{{year}}.tif",
    params:
        config=cfg("download"),
    wildcard_constraints:
        year=r"20\d\d",
    log:
        f"{LOGS}/download_mask/worldcover_{{year}}.log",
    benchmark:
        f"{BENCHMARKS}/download_mask/worldcover_{{year}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
        downloads=1,
    retries: 2
    shell:
        "s2lc download-mask --config-json {params.config:q} --download-dirs {input}"
        " --year {wildcards.year} --out {output} 2> {log}"


rule ingest_scene:
    conda:
        CONDA_ENV
    input:
        product=scene_product,
    output:
        **ingest_outputs(),
    params:
        config=cfg("scenes", "bands", "ingest"),
        product=scene_product_arg,
        scl=scl_output_arg,
    log:
        f"{LOGS}/ingest_scene/{{scene}}.log",
    benchmark:
        f"{BENCHMARKS}/ingest_scene/{{scene}}.tsv"
    threads: 2
    resources:
        mem_mb=3000,
        runtime=60,
    shell:
        "s2lc ingest --config-json {params.config:q} --scene {wildcards.scene}"
        " {params.product} --out {output.stack} {params.scl} --threads {threads} 2> {log}"
