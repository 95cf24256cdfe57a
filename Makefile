# Every target does its own set-up: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
EXPORT := $(VENV)/.installed-export
PYTEST_ARGS ?=

.PHONY: setup run test lint unit integration model clean

$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[local,dev]"
	touch $@

# Export-only tools (torch, sentence-transformers, optimum): for `make model` and the rebuild test.
$(EXPORT): $(RUNTIME)
	$(BIN)/pip install --quiet -e ".[local,dev,export]"
	touch $@

setup: $(RUNTIME)

run: $(RUNTIME)
	$(BIN)/python -m pai_local

lint: $(RUNTIME)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/cfn-lint infra/template.yaml

unit: $(RUNTIME)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: $(RUNTIME)
	$(BIN)/pytest tests/integration -m integration $(PYTEST_ARGS)

test: $(EXPORT) lint
	$(BIN)/pytest $(PYTEST_ARGS)

model: $(EXPORT)
	$(BIN)/python scripts/build_model.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
