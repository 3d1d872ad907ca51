# Two entry points (see README): `make compare` runs the main job, `make test` the tests.
# Both create .venv from the pinned requirements first; nothing else needs installing by hand.
#   make setup      runtime pins (requirements.txt), then this package, editable (`wt`, `experiments`)
#   make setup-dev  setup + the pinned development tools (requirements-dev.txt)
#   make test       the full suite, in parallel (pytest-xdist)
#   make test-fast  the edit-test loop: everything but the tests marked `slow`
#   make lint       ruff check, ruff format --check, mypy on wt/
# Test options: WORKERS=auto (pytest-xdist workers), ARGS="--durations=20 -x" (more pytest flags).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKERS ?= 2
ARGS ?=
PYTEST := $(PY) -m pytest -q -n $(WORKERS) $(ARGS)

# uv installs the same pinned wheels as pip (the same `pip freeze`), several times faster: it
# downloads in parallel and links files from its cache instead of unpacking each wheel again.
UV := $(PY) -m uv pip install --quiet --python $(PY)

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==0.13.9
	$(UV) -r requirements.txt
	$(UV) --no-deps -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(UV) -r requirements-dev.txt
	touch $@

.PHONY: setup setup-dev test test-fast lint compare
setup: $(VENV)/.installed

setup-dev: $(VENV)/.dev-installed

test: setup-dev
	$(PYTEST) tests

# One worker per test file: module-scoped fixtures (built datasets, a trained model) are built
# once, not once per worker. The full suite balances test by test: test_train.py alone holds
# most of its minutes.
test-fast: setup-dev
	$(PYTEST) --dist loadfile -m "not slow" tests

lint: setup-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

compare: setup
	$(PY) -m experiments.compare --config experiments/configs/multi30k.py:quick
