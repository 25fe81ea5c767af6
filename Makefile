# CNN Lab: two commands, `make book` and `make test`. Both create the environment first if needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cnnlab-installed
# Finished training runs are cached here, shared by nbmake and the book build (the second
# execution of a chapter reuses the first one's runs).
export CNNLAB_CACHE ?= $(CURDIR)/.cache/runs
# No tqdm bars in executed notebooks or logs.
export CNNLAB_PROGRESS ?= 0
export MPLBACKEND ?= Agg
# Per-cell limit for nbmake (a chapter may take 2-3 minutes in all).
NB_CELL_TIMEOUT ?= 300

.PHONY: book test unit notebooks browser env system-deps clean bench

env: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	bash scripts/system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

system-deps:
	bash scripts/system-deps.sh

book: env
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going
	@echo "The book is at $(CURDIR)/_build/html/index.html"

unit: env
	$(PY) -m pytest tests -m "not browser" -q

notebooks: env
	$(PY) -m pytest --nbmake --nbmake-timeout=$(NB_CELL_TIMEOUT) -q book

browser: env
	$(PY) -m pytest tests/browser -m browser -q

# Everything: unit tests, every chapter through nbmake, the book build, the browser test.
test: env
	$(MAKE) unit
	$(MAKE) notebooks
	$(MAKE) book
	$(MAKE) browser

bench: env
	$(PY) benchmarks/bench_fit.py

clean:
	rm -rf _build .cache
