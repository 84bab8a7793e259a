"""Land-cover mapping from Sentinel-2 scenes: logic behind the Snakemake pipeline."""

__version__ = "0.1.0"
