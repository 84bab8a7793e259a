# Valid observations: per scene, a raster of clear / cloud / cloud shadow / cirrus / snow / no data
# on the scene's grid (docs/clouds.md). Tiling, prediction and evaluation read it; with
# validity.source: none there is none and the report says clouds were not screened.


rule scene_validity:
    input:
        unpack(scene_inputs),
        scene=f"{RESULTS}/scenes/{{scene}}.tif",
        scl=scl_band,
        file=validity_file,
    output:
        f"{RESULTS}/validity/{{scene}}.tif",
    log:
        f"{LOGS}/scene_validity/{{scene}}.log",
    benchmark:
        f"{BENCHMARKS}/scene_validity/{{scene}}.tsv"
    # Scenes of the scene table only: a stack's validity comes from stack_validity.
    wildcard_constraints:
        scene=SCENE_PATTERN,
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        **sections("validity"),
        scenes=scene_section,
        product=scene_product_arg,
        scl=scl_input_arg,
    shell:
        "s2lc validity --config-json {params.validity:q} {params.scenes:q}"
        " --scene-name {wildcards.scene:q} --scene {input.scene:q} {params.product} {params.scl}"
        " --out {output:q} 2> {log:q}"
