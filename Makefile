# Two entry points (see README): `make compare` runs the main job, `make test` the tests.
# Both create .venv from requirements.txt first; nothing else needs installing by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

.PHONY: setup test compare
setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q tests

compare: setup
	$(PY) -m experiments.compare --config experiments/configs/multi30k.py:quick
