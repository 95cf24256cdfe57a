# Every target does its own set-up: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
EXPORT := $(VENV)/.installed-export
PYTEST_ARGS ?=

.PHONY: setup run test lint unit integration integration-test model bundle deploy destroy clean

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

# On the backend AWS_EMULATOR selects: auto (default), moto, localstack, external.
integration integration-test: $(RUNTIME)
	$(BIN)/pytest tests/integration -m integration -rs $(PYTEST_ARGS)

test: $(EXPORT) lint
	$(BIN)/pytest -rs $(PYTEST_ARGS)

model: $(EXPORT)
	$(BIN)/python scripts/build_model.py

# The Lambda artifacts for Python 3.12 / arm64, in build/bundle/.
bundle: $(RUNTIME)
	$(BIN)/python scripts/bundle.py

# ARGS="--env prod --region eu-west-1" (or --endpoint-url for an emulator); the standard AWS credential chain.
deploy: $(RUNTIME)
	$(BIN)/python scripts/deploy.py --rebuild $(ARGS)

destroy: $(RUNTIME)
	$(BIN)/python scripts/destroy.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
