# Chips: tile each scene, filter the chips, split them. Paths carry the tile size.


rule tile_scene:
    input:
        scene=f"{RESULTS}/scenes/{{scene}}.tif",
        mask=f"{RESULTS}/masks/{{scene}}.tif",
        scl=scl_band,
        validity=validity_raster,
    output:
        # The chip store of the contract (README): written as one folder, renamed into place at the end.
        index=f"{RESULTS}/chips/size{{tile}}/{{scene}}/index.parquet",
        images=f"{RESULTS}/chips/size{{tile}}/{{scene}}/images.npy",
        masks=f"{RESULTS}/chips/size{{tile}}/{{scene}}/masks.npy",
        meta=f"{RESULTS}/chips/size{{tile}}/{{scene}}/meta.json",
    log:
        f"{LOGS}/tile_scene/size{{tile}}/{{scene}}.log",
    benchmark:
        f"{BENCHMARKS}/tile_scene/size{{tile}}/{{scene}}.tsv"
    conda:
        CONDA_ENV
    threads: 4
    resources:
        mem_mb=3000,
        runtime=60,
    params:
        **sections("chips", "classes"),
        out_dir=lambda wildcards, output: str(Path(output.index).parent),
        scl=scl_input_arg,
        validity_arg=validity_arg,
    shell:
        "s2lc tile --config-json {params.chips:q} {params.classes:q} --tile-size {wildcards.tile}"
        " --scene-name {wildcards.scene:q} --scene {input.scene:q} --mask {input.mask:q}"
        " {params.scl} {params.validity_arg} --out-dir {params.out_dir:q} --threads {threads}"
        " 2> {log:q}"


rule filter_chips:
    input:
        chip_indexes,
    output:
        selected=f"{RESULTS}/chips/size{{tile}}/selected.parquet",
        summary=f"{RESULTS}/chips/size{{tile}}/filter_summary.json",
    log:
        f"{LOGS}/filter_chips/size{{tile}}.log",
    benchmark:
        f"{BENCHMARKS}/filter_chips/size{{tile}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        **sections("filter", "classes"),
    shell:
        "s2lc filter --config-json {params.filter:q} {params.classes:q} --index {input:q}"
        " --out {output.selected:q} 2> {log:q}"


rule split_chips:
    input:
        f"{RESULTS}/chips/size{{tile}}/selected.parquet",
    output:
        split=f"{RESULTS}/splits/size{{tile}}/split.parquet",
        footprints=f"{RESULTS}/splits/size{{tile}}/footprints.gpkg",
        summary=f"{RESULTS}/splits/size{{tile}}/split_summary.json",
    log:
        f"{LOGS}/split_chips/size{{tile}}.log",
    benchmark:
        f"{BENCHMARKS}/split_chips/size{{tile}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        **sections("split", "classes"),
        out_dir=lambda wildcards, output: str(Path(output.split).parent),
    shell:
        "s2lc split --config-json {params.split:q} {params.classes:q} --selected {input:q}"
        " --out-dir {params.out_dir:q} 2> {log:q}"
