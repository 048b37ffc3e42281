# aegis-tortoise: `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=
CURVES_ARGS ?=

.DEFAULT_GOAL := help

help:  ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## Create .venv and install the package with its dev tools

demo: $(STAMP)  ## Run the seed's walkthrough on in-memory sqlite
	$(PY) -m aegis_tortoise demo

test: $(STAMP)  ## Run the whole suite on sqlite and PostgreSQL
	$(PY) -m pytest $(PYTEST_ARGS)

fuzz: $(STAMP)  ## The differential suite (tests/differential) with many more generated cases
	AEGIS_DIFF_PROFILE=fuzz $(PY) -m pytest tests/differential $(PYTEST_ARGS)

bench: $(STAMP)  ## Benchmark against asyncpg, SQLAlchemy and plain Tortoise (writes bench/README.md)
	$(PY) bench/run.py $(BENCH_ARGS)

bench-curves: $(STAMP)  ## Cost curves at 1k-1M rows (CURVES_ARGS="--sizes 1000,10000"; writes bench/curves.png)
	$(PY) bench/curves.py $(CURVES_ARGS)

lint: $(STAMP)  ## ruff and mypy --strict
	$(VENV)/bin/ruff check aegis_tortoise compat tests examples bench
	$(VENV)/bin/mypy

docs: $(STAMP)  ## Build the documentation site into site/ (mkdocs build --strict)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

clean:  ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site

tortoise-suite: $(STAMP)  ## Tortoise 1.1.9's own tests through the library (sqlite, PostgreSQL)
	$(PY) -m tests.dropin.tortoise_suite.run

.PHONY: help install demo test fuzz bench bench-curves lint docs clean tortoise-suite

