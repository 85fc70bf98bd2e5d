# scan_pipeline: `make demo` and `make test` work on a fresh Debian machine (as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO := build/demo

.PHONY: install demo test bench bench-ledger lint docs check samples clean

install: $(STAMP)
	@bash scripts/install_system_deps.sh

# The venv is rebuilt only when the project's dependencies change.
$(STAMP): pyproject.toml
	bash scripts/install_system_deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,chart,dask]'
	$(PY) -m pip install -q --no-deps rapidocr-onnxruntime==1.4.4
	touch $(STAMP)

demo: install
	rm -rf $(DEMO)
	$(VENV)/bin/scan-pipeline process samples --ledger $(DEMO)/ledger.csv --debug-dir $(DEMO)/overlays \
		--report $(DEMO)/report.html || [ $$? -eq 10 ]

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) scripts/bench.py --sheets 20
	$(PY) scripts/bench_postal.py --out bench-postal.json
	$(PY) scripts/bench_rows.py --out bench-rows.json
	$(PY) scripts/bench_photos.py --sheets 4 --seed 2051 --out bench-photos.json
	$(PY) scripts/bench_photos.py --factors all --sheets 40 --seed 2052 --out bench-photos-all.json
	$(PY) scripts/bench_batch.py --pages 100 --runs local:10,local:16,local:100,dask:16 --out bench-batch.json
	$(PY) scripts/bench_review.py --ledger build/bench/ledger.csv --corpus build/bench/corpus --out bench-review.json

# Ledger merge + dedup at campaign scale (1,000,000 rows; ROWS=100000 for a quick run).
ROWS ?= 1000000
bench-ledger: install
	$(PY) scripts/bench_ledger.py --rows $(ROWS) --out bench-ledger.json

# ruff, mypy (strict on core/), and docs/cli.md current with the code
lint: install
	$(VENV)/bin/ruff check scan_pipeline tests scripts
	$(VENV)/bin/mypy
	$(PY) scripts/cli_docs.py --check

docs: install
	$(PY) scripts/cli_docs.py

check: lint test

# Regenerate the committed samples (a PDF scan, photo JPEGs, a bilevel TIFF) and their truth.
samples: install
	rm -rf samples && $(VENV)/bin/scan-pipeline samples generate samples --sheets 3 --seed 3 \
		--modes scan,photo,bilevel --formats pdf,jpg,tiff

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
