# The two commands of the README. Both set up .venv themselves (CPU torch wheel, no CUDA build).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup reproduce test lint

$(BIN)/hnetbench: pyproject.toml
	$(PY) -m venv $(VENV)
# torch through pip: pip is the installer that finds the CPU wheel on this disk (uv would fetch a
# multi-GB CUDA build). The ~90 other packages through uv, from PyPI: 32 s instead of pip's 93 s
# here. Keep the .pyc compilation: with PYTHONDONTWRITEBYTECODE set (as on these machines)
# nothing would cache them, and every process would pay ~2 s more to import torch
	$(BIN)/pip install -q torch==2.13.0 uv
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode -e '.[dev]'
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
