# vmware.osam developer entry points. Everything runs from the repo root and
# uses the venv that scripts/setup.sh keeps in .venv/.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python

.PHONY: help setup test demo bench faults faults-quick clean

help:
	@echo "make setup   Debian packages, .venv/, pinned requirements, daemons (editable)"
	@echo "make test    setup, then the whole test suite (ARGS='-k foo -x' passes options to pytest)"
	@echo "make demo    sentinel -> gateway -> receiver on loopback (osam demo)"
	@echo "make bench   benchmarks against rsync / lsyncd anchors (bench/run.py)"
	@echo "make faults  fault campaigns, full (root; ARGS='--seed N --only NAME' replays one)"
	@echo "make faults-quick  the same, a few faults each (what the test suite runs)"
	@echo "make clean   remove caches and build leftovers (keeps .venv/)"

setup:
	bash scripts/setup.sh

test:
	bash scripts/test.sh $(ARGS)

demo:
	bash scripts/demo.sh $(ARGS)

bench: setup
	$(PY) bench/run.py $(ARGS)

faults:
	$(PY) -m tests.faults.run $(ARGS)

faults-quick:
	$(PY) -m tests.faults.run --quick $(ARGS)

# .venv/ stays: `rm -rf .venv` and `make setup` for a fresh one.
clean:
	find . -path ./.venv -prune -o -path ./.git -prune -o \
	    \( -name __pycache__ -o -name .pytest_cache -o -name .hypothesis \) -type d -print0 \
	    | xargs -0 -r rm -rf
	rm -rf build dist daemons/build bench/out
