# The two commands of the README. Both set up .venv themselves (CPU torch wheel, no CUDA build).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup reproduce test lint

$(BIN)/hnetbench: pyproject.toml
	$(PY) -m venv $(VENV)
# the venv's own pip is recent enough (no self-upgrade). Keep pip's .pyc compilation: with
# PYTHONDONTWRITEBYTECODE set (as on these machines) nothing would cache them, and every process
# would pay ~2 s more to import torch
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/hnetbench

reproduce: setup
	$(BIN)/hnetbench reproduce

# pytest's own exit status is make's; a run that collects no tests exits 5 (tests/conftest.py says why).
# One pytest worker per core (pytest-xdist), whole files per worker: 12.5 -> 9.6 min on 2 cores
test: setup
	$(BIN)/python -m pytest -n auto --dist loadfile tests

lint: setup
	$(BIN)/ruff check .
