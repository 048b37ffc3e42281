# aegis-tortoise: `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The demo needs the package alone, not the dev tools: a stamp of its own in the same .venv.
DEMO_STAMP := $(VENV)/.installed-demo
# Exact versions of every dependency and extra (make lock); make install and CI use it.
LOCK   := constraints.txt
LATEST := .venv-latest
PYTEST_ARGS ?=
BENCH_ARGS ?=
CURVES_ARGS ?=
# the operations `make bench` measures again in a process holding 1,000,000 objects
HEAP_OPS ?= list_first,relations,create_many,create_many_dicts
# Every extra in pyproject.toml, so an extra added later is locked too.
EXTRAS = $(shell $(PYTHON) -c "import tomllib; print(','.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']))")

.DEFAULT_GOAL := help

help:  ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

# The venv without pip of its own (ensurepip alone takes longer than the demo's packages):
# the interpreter's pip installs into it (pip --python); make install then adds pip. An
# interpreter without pip (Debian's python3 without python3-pip) or with a pip older than
# 22.3 gives the venv ensurepip's pip instead.
# (pip --python takes a path, not a name on PATH.)
HOST_PIP := $(shell $(PYTHON) -m pip --python "$$(command -v $(PYTHON))" --version >/dev/null 2>&1 && echo yes)
VPIP = $(if $(HOST_PIP),$(PYTHON) -m pip --python $(PY),$(PY) -m pip)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(if $(HOST_PIP),--without-pip) $(VENV)

$(STAMP): pyproject.toml $(LOCK) | $(VENV)/bin/python
	$(VPIP) install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev]'
	@touch $(STAMP) $(DEMO_STAMP)

# The demo runs from the checkout (PYTHONPATH=.): only the runtime dependencies, no build.
DEPS = $(shell $(PYTHON) -c "import shlex, tomllib; print(' '.join(shlex.quote(d) for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))")

$(DEMO_STAMP): pyproject.toml $(LOCK) | $(VENV)/bin/python
	$(VPIP) install -q -c $(LOCK) $(DEPS)
	@touch $(DEMO_STAMP)

install: $(STAMP)  ## Create .venv and install the package with its dev tools (locked versions)

demo: $(DEMO_STAMP)  ## Run the seed's walkthrough on in-memory sqlite (installs its dependencies only)
	PYTHONPATH=. $(PY) -m aegis_tortoise demo

test: $(STAMP)  ## Run the whole suite on sqlite and PostgreSQL
	$(PY) -m pytest $(PYTEST_ARGS)

lock:  ## Regenerate constraints.txt: the newest versions pyproject.toml allows, every extra
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q -e '.[$(EXTRAS)]'
	{ echo "# Exact versions of every dependency of aegis-tortoise and of its extras"; \
	  echo "# ($(EXTRAS)), for Python 3.11 on Linux: make install and CI install with"; \
	  echo "# pip -c $(LOCK). Regenerate with make lock after changing pyproject.toml."; \
	  .venv-lock/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip=='; \
	} > $(LOCK)
	rm -rf .venv-lock

test-latest:  ## The suite on the newest versions pyproject.toml allows (own venv, no lock)
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[dev]'
	@echo 'versions that differ from $(LOCK) (< locked, > newest):'
	@$(LATEST)/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip==' | diff $(LOCK) - | grep '^[<>] [^#]' || true
	$(LATEST)/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

fuzz: $(STAMP)  ## The generated suites (differential, hostile, stateful) with many more cases
	AEGIS_DIFF_PROFILE=fuzz $(PY) -m pytest tests/differential tests/hostile tests/stateful $(PYTEST_ARGS)

bench: $(STAMP)  ## Benchmark against asyncpg, SQLAlchemy and plain Tortoise (writes bench/README.md)
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/run.py --heap 1000000 --only $(HEAP_OPS) $(BENCH_ARGS)

bench-curves: $(STAMP)  ## Cost curves at 1k-1M rows (CURVES_ARGS="--sizes 1000,10000"; writes bench/curves.png)
	$(PY) bench/curves.py $(CURVES_ARGS)

lint: $(STAMP)  ## ruff and mypy --strict
	$(VENV)/bin/ruff check aegis_tortoise compat tests examples bench
	$(VENV)/bin/mypy

docs: $(STAMP)  ## Build the documentation site into site/ (mkdocs build --strict)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

clean:  ## Remove the virtualenvs and caches
	rm -rf $(VENV) $(LATEST) .venv-lock .pytest_cache .mypy_cache .ruff_cache site

tortoise-suite: $(STAMP)  ## Tortoise 1.1.9's own tests through the library (sqlite, PostgreSQL)
	$(PY) -m tests.dropin.tortoise_suite.run

.PHONY: help install demo test lock test-latest fuzz bench bench-curves lint docs clean tortoise-suite
