# Every target does its own set-up: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
EXPORT := $(VENV)/.installed-export
PYTEST_ARGS ?=

.PHONY: setup run test lint unit integration integration-test fuzz bench model bundle deploy destroy clean keys

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

# A longer schemathesis run of openapi.yaml against the local stack (`make test` runs a bounded one).
FUZZ_EXAMPLES ?= 500
fuzz: $(RUNTIME)
	PAI_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/integration/test_openapi_contract.py -m integration \
		-rs -p no:cacheprovider --timeout=3600 $(PYTEST_ARGS)

# Search (design scan vs index at 1K/10K/100K memories), cold starts, embedding (int8 ONNX vs
# sentence-transformers fp32) and cost, in one run of a few minutes; writes benchmarks/RESULTS.md.
# Not part of `make test`, which runs a smoke run of it (tests/integration/test_bench_smoke.py).
bench: $(EXPORT)
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.bench $(ARGS)
	$(BIN)/python -m benchmarks.chat_latency

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

# API keys: ARGS="create --user alice [--label laptop]", "list [--user alice]", "revoke KEY_ID"; each takes
# --env, --region and --endpoint-url (http://127.0.0.1:4566 while `make run` is going).
keys: $(RUNTIME)
	$(BIN)/python scripts/api_keys.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
