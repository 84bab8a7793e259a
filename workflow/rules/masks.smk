# The land-cover map onto each scene's exact grid (GDAL warper, streaming).


rule downsample_mask:
    input:
        source=mask_source,
        parts=mask_parts,
        scene=f"{RESULTS}/scenes/{{scene}}.tif",
    output:
        mask=f"{RESULTS}/masks/{{scene}}.tif",
        style=f"{RESULTS}/masks/{{scene}}.qml",  # its QGIS style (io/warp.py)
    log:
        f"{LOGS}/downsample_mask/{{scene}}.log",
    benchmark:
        f"{BENCHMARKS}/downsample_mask/{{scene}}.tsv"
    conda:
        CONDA_ENV
    threads: 4
    resources:
        mem_mb=2000,
        runtime=120,
        dask_scheduler=DASK_SCHEDULER,
    params:
        **sections("mask", "classes"),
    shell:
        "s2lc downsample-mask --config-json {params.mask:q} {params.classes:q}"
        " --source {input.source:q} --scene {input.scene:q} --out {output.mask:q} --threads {threads}"
        " --dask-scheduler {resources.dask_scheduler:q} 2> {log:q}"
