# The two commands of the README. Both set up .venv themselves (CPU torch wheel, no CUDA build).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup reproduce test lint

$(BIN)/hnetbench: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/hnetbench

reproduce: setup
	$(BIN)/hnetbench reproduce

test: setup
	$(BIN)/python -m pytest tests; rc=$$?; [ -z "$(PYTEST_EXIT_FILE)" ] || echo $$rc > $(PYTEST_EXIT_FILE); exit $$rc

lint: setup
	$(BIN)/ruff check .
