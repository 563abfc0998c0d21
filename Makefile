# The two commands of the README: `make study` (set up, run the default study, analyse it) and
# `make test` (set up, run the tests). Setup is idempotent: it reinstalls only when pyproject changes.
VENV ?= .venv
PYTHON ?= python3
STUDY ?= study/quick.yaml
STORAGE ?= results

# Installs are pinned by constraints.txt: the exact versions the test suite passed on (`make lock`
# regenerates it from the venv and prints what changed). `pip install -e .` without it still works
# within pyproject's ranges.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# torch 2.13.0 first: the CPU build; a looser pin would pull a multi-GB CUDA build
	$(VENV)/bin/pip install -q torch==2.13.0 -c constraints.txt
	$(VENV)/bin/pip install -q -e '.[test]' -c constraints.txt
	touch $@

.PHONY: setup study test bench lock
setup: $(VENV)/.installed

# Exact versions of this venv (fsv itself left out; local labels such as +cpu dropped, so the lock
# resolves on PyPI alone); refuses lines that name a file or URL instead of a version.
lock: $(VENV)/.installed
	$(VENV)/bin/pip freeze --exclude-editable | grep -v -i '^fsv==' | sed -E 's/\+[A-Za-z0-9.]+$$//' \
		| LC_ALL=C sort -f > constraints.txt.new
	@if grep -n ' @ \|file:\|://' constraints.txt.new; then echo "lock: the lines above are not PyPI versions"; \
		rm constraints.txt.new; exit 1; fi
	@diff constraints.txt constraints.txt.new | sed -n 's/^< /  was: /p; s/^> /  now: /p' | grep . \
		|| echo "constraints.txt: no change"
	@mv constraints.txt.new constraints.txt

study: $(VENV)/.installed
	$(VENV)/bin/fsv run $(STUDY) --storage $(STORAGE)

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q

bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/run_all.py
