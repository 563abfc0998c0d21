# The two commands of the README: `make study` (set up, run the default study, analyse it) and
# `make test` (set up, run the tests). Setup is idempotent: it reinstalls only when pyproject changes.
VENV ?= .venv
PYTHON ?= python3
STUDY ?= study/quick.yaml
STORAGE ?= results

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# torch 2.13.0 first: the CPU build; a looser pin would pull a multi-GB CUDA build
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

.PHONY: setup study test bench
setup: $(VENV)/.installed

study: $(VENV)/.installed
	$(VENV)/bin/fsv run $(STUDY) --storage $(STORAGE)

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q

bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/run_all.py
