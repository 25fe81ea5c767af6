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
# Let Python cache compiled bytecode in the environment (.venv) and the source tree. Where the
# shell sets PYTHONDONTWRITEBYTECODE (this machine's does), every kernel and worker process would
# otherwise recompile PyTorch, SciPy & co. from source each time it starts: importing what a
# chapter needs took 14-19 s instead of ~5.5 s, for each of ~25 processes a build starts.
unexport PYTHONDONTWRITEBYTECODE
# Per-cell limit for nbmake (a chapter may take 2-3 minutes in all).
NB_CELL_TIMEOUT ?= 300

.PHONY: book test unit colab notebooks browser env system-deps clean bench sync

env: $(STAMP)

# The system packages the book needs (apt) install side by side with the Python environment
# (scripts/install-python.sh: uv, else pip): on a fresh machine that saves the apt time. The
# browser's package comes with `browser`.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml scripts/install-python.sh
	bash scripts/system-deps.sh book & deps=$$!; \
	PYTHON=$(PYTHON) bash scripts/install-python.sh $(VENV); \
	status=$$?; wait $$deps; exit $$status
	touch $(STAMP)

system-deps:
	bash scripts/system-deps.sh all

# The book (_build/html): first every chapter with no run of its code in the book's jupyter-cache
# (_build/.jupyter_cache) runs through nbmake as in `make notebooks` (a rebuild re-runs only
# chapters whose code changed; after `make notebooks`, as in `make test`, none), then the build
# reads every chapter's outputs from that cache, fails on any cell error and on any Sphinx warning
# (-W; --keep-going reports them all first), then checks the site offline: internal links and
# anchors, no traceback or warning in an output, chapter page weights (scripts/check_site.py).
# MPLBACKEND is unset for the build so that ipykernel picks its inline backend and figures appear
# on the pages (with the Agg exported above for tests, a figure would print as "<Figure ...>").
# Then the Chinese edition (中文版) into _build/html/zh, from the catalogs in locales/ and the same
# jupyter-cache, so it executes nothing (scripts/i18n.py build; also -W).
# BOOK_TOC=path/to/toc.yml builds with another table of contents (e.g. a subset of chapters).
# A failed build forgets Sphinx's environment (_build/.doctrees): Sphinx warns only while it reads
# a page, so an incremental rebuild would skip the failing page and pass. The next build re-reads
# every page; executed notebooks still come from jupyter-cache, so that takes seconds.
# scripts/cost.py times the target in probe runs, with a probe between its parts.
BOOK_TOC ?=
book: env
	$(PY) scripts/cost.py start book "chapters not in jupyter-cache"
	$(MAKE) notebooks STAGE_ARGS="--not-cached$(if $(BOOK_TOC), --toc $(BOOK_TOC))"
	$(PY) scripts/cost.py mark "book build"
	env -u MPLBACKEND $(VENV)/bin/jupyter-book build . --warningiserror --keep-going \
	  $(if $(BOOK_TOC),--toc $(BOOK_TOC)) || { rm -rf _build/.doctrees; exit 1; }
	@echo "The book is at $(CURDIR)/_build/html/index.html"
	$(PY) scripts/cost.py mark "中文版 build, site checks"
	$(PY) scripts/i18n.py build $(if $(BOOK_TOC),--toc $(BOOK_TOC))
	$(PY) scripts/check_site.py $(if $(BOOK_TOC),--toc $(BOOK_TOC))
	$(PY) scripts/cost.py stop book

unit: env
	$(PY) -m pytest tests -m "not browser and not colab" -q

# Chapters run the way readers run them (tests/colab): in a fresh Colab-like environment with only
# what the first cell installs, alone in an empty folder; and by the README's local route.
colab: env
	$(PY) -m pytest tests/colab -m colab -q

# Bring each chapter's .md and .ipynb back in step after either was edited, and rewrite the cells
# every chapter shares (scripts/sync_chapters.py; `make unit` fails while anything is out of step).
sync: env
	$(PY) scripts/sync_chapters.py

# Every chapter through nbmake, run on copies in .cache/nbmake (with their stored data beside
# them, as in book/; not under _build, whose notebooks nbmake never collects). The executed
# copies then go into the book build's jupyter-cache, keyed by their code as the build looks a
# page up (scripts/notebooks.py), so `make book` after `make notebooks` (as in `make test`)
# executes no chapter a second time. Run without MPLBACKEND, like the book build, so that
# figures are images. STAGE_ARGS="--not-cached" runs only the chapters not yet in that cache
# (as `make book` does), nothing when there is none. With scripts/ on the path, `-p cost` takes a
# probe run before each chapter while `make book` or `make test` is being timed (scripts/cost.py).
STAGE_ARGS ?=
notebooks: env
	$(PY) scripts/notebooks.py stage .cache/nbmake $(STAGE_ARGS)
	if compgen -G ".cache/nbmake/*.ipynb" > /dev/null; then \
	  env -u MPLBACKEND PYTHONPATH=scripts $(PY) -m pytest -p cost --nbmake \
	    --nbmake-timeout=$(NB_CELL_TIMEOUT) --overwrite -q -p no:cacheprovider \
	    --junitxml=.cache/nbmake/junit.xml .cache/nbmake && \
	  $(PY) scripts/notebooks.py store .cache/nbmake; fi

# The built site as a reader sees it (run `make book` first): Playwright drives Debian's Chromium
# over every page served on 127.0.0.1 (tests/browser/test_browser.py; skipped only where chromium
# is not installed) plus the offline site checks. Screenshots: _build/screenshots/.
browser: env
	bash scripts/system-deps.sh browser
	$(if $(BOOK_TOC),CNNLAB_BOOK_TOC=$(BOOK_TOC)) $(PY) -m pytest tests/browser -m browser -q

# Everything: unit tests, the Colab and local routes, every chapter through nbmake, the book build,
# the browser test.
test: env
	$(PY) scripts/cost.py start test "unit tests"
	$(MAKE) unit
	$(PY) scripts/cost.py mark "Colab tests"
	$(MAKE) colab
	$(MAKE) notebooks
	$(MAKE) book
	$(PY) scripts/cost.py mark "browser tests"
	$(MAKE) browser
	$(PY) scripts/cost.py stop test

bench: env
	$(PY) benchmarks/bench_fit.py

clean:
	rm -rf _build .cache
