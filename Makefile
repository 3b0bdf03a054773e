# Two commands do all the set-up: `make demo` and `make test` (each creates .venv when missing).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup test lint emulator demo demo-model clean help

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/:/'

$(STAMP): requirements.txt setup.py package.xml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required (the ROS 2 wheels are cp311), found {sys.version.split()[0]}"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with the pinned dependencies (once; reused afterwards)

lint: $(STAMP)  ## ruff over the whole tree
	$(VENV)/bin/ruff check .

emulator:  ## qemu-user (Debian), so the INT8 test also runs on an emulated AVX2-only CPU; installed when root
	@command -v qemu-x86_64 >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && apt-get install -y -qq qemu-user >/dev/null; } \
	  || echo "note: qemu-user is not installed (as root: apt-get install qemu-user); the AVX2-only INT8 test is skipped"

test: $(STAMP) lint emulator  ## lint, then the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)  ## the main job on the embedded synthetic data (see README)
	$(PY) -m equiseg_ros.demo $(DEMO_ARGS)

demo-model: $(STAMP)  ## retrain the shipped demo model (~35 min of one core; same quality, not the same bytes)
	$(PY) experiments/demo_model.py $(DEMO_MODEL_ARGS)

clean:  ## remove the environment and generated outputs
	rm -rf $(VENV) runs build install log *.egg-info
