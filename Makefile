# Two commands for a fresh clone (see README.md):
#   make run    set up .venv if needed, then run the whole pipeline on config.yaml
#   make test   set up .venv if needed, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= all

.PHONY: setup run test lint format bench bench-full clean-results

setup: $(STAMP)

# Reinstalls when pyproject.toml changes. Extras: [slurm] the Snakemake SLURM executor, [distributed]
# dask.distributed for compute.dask_scheduler, [dev] pytest, ruff, snakefmt, mypy.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,slurm,distributed]"
	touch $(STAMP)

run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES)

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/mypy
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/snakefmt Snakefile workflow/rules

# Every stage on synthetic data, beside its reference (gdalwarp, the seeds' tiling, an in-memory
# stitcher); writes the table the README links to. About 8 minutes on 2 cores.
bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/bench_pipeline.py --out docs/benchmarks/README.md

# Every stage at full size: a synthetic 10,980 x 10,980 px 10-band tile and a 109,800 x 109,800 px
# 1 m map (results/bench_full/, ~5 GB, removed at the end); wall time, peak RSS and disk per stage
# into docs/benchmarks/full_size.md. About an hour on 2 loaded cores; not part of `make test`.
bench-full: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" nice -n 5 $(BIN)/python benchmarks/bench_full.py --out docs/benchmarks/full_size.md

clean-results:
	rm -rf results/* .snakemake
	touch results/.gitkeep
