# Two commands set everything up on a fresh machine: `make demo` and `make test` (both create .venv when missing).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HASH := $(shell cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(HASH)
DEMO_DIR ?= results/demo

.PHONY: setup demo test bench bench-gpu bench-data bench-report

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-* && touch $@

# The main job on the embedded default (P1 quadratic_deep, no download): the study's whole P1 row, experiment=quick =
# 16 optimizers x 4 schedules x 4 budgets, 10 seeds per cell (7,168 runs; engine=auto trains them as cohorts,
# ~7 min on 2 cores). ENGINE=cohort_fast: P1's reordered closed form (~1 min; own run_ids, use another DEMO_DIR).
# Re-running finishes only what is missing; the table is printed from the Parquet records.
demo: setup
	$(VENV)/bin/valley -m experiment=quick results_dir=$(DEMO_DIR) $(if $(ENGINE),engine=$(ENGINE))
	$(VENV)/bin/valley-table $(DEMO_DIR)

test: setup
	$(PY) -m pytest -n 2 -p no:cacheprovider

# runs/s of engine=single (1 and 2 workers) vs engine=cohort / cohort_fast on P1 and every neural problem (smoke).
bench: setup
	$(PY) -m bench.benchmark

# The cohort engine's GPU figures (~6 min on one GPU): 3c3d single vs cohorts in fp32/tf32 with parity, P1 at
# M = 100,000, batched LSTM vs cuDNN; written to results/bench_gpu.json. SMOKE=1: tiny, on any device.
bench-gpu: setup
	$(PY) -m bench.gpu_benchmark $(if $(SMOKE),--smoke) --out $(or $(OUT),results/bench_gpu.json)

# Steps/s and the share of step time spent on data, per problem (smoke size on any machine; SIZE=full with data).
bench-data: setup
	$(PY) -m bench.data_benchmark --size $(or $(SIZE),smoke)

# valley-report on a synthetic results set the size of the full study (53,760 runs with per-epoch curves).
bench-report: setup
	$(PY) -m bench.analysis.benchmark
