# Every target does its own set-up: a fresh clone needs only `make run` or `make test`.
# Everything installed comes from the hashed lock files in requirements/ (see `make lock`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check
# uv installs the lock files (hash-checked, downloads in parallel, from its own cache on later runs);
# pip only bootstraps uv and builds llama.cpp's wheel.
INSTALL := $(BIN)/uv pip install --quiet --python $(BIN)/python --require-hashes
RUNTIME := $(VENV)/.installed-runtime
EXPORT := $(VENV)/.installed-export
PYTEST_ARGS ?=

.PHONY: setup lock run test lint unit integration integration-test fuzz bench model bundle deploy destroy clean keys bench-quality bench-learning browser

# llama-cpp-python comes first, as a wheel built once with portable CPU flags (scripts/llama_wheel.py),
# so the lock's install finds it in place and never compiles it with pip's own flags. The project itself
# goes on the venv's path with a .pth file, as an editable install would, without building anything, and
# its console script (`pai`, [project.scripts]) becomes a launcher in the venv's bin/.
$(RUNTIME): requirements/dev.txt requirements/uv.txt scripts/llama_wheel.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes --no-deps -r requirements/uv.txt
	$(BIN)/python scripts/llama_wheel.py --lock requirements/dev.txt
	$(INSTALL) -r requirements/dev.txt
	$(BIN)/python -c 'import sys, sysconfig, pathlib; pathlib.Path(sysconfig.get_path("purelib"), "pai.pth").write_text(sys.argv[1] + "\n")' "$(CURDIR)"
	$(BIN)/python scripts/install_cli.py
	touch $@

# Export-only tools (torch, sentence-transformers, optimum): for `make model` and the rebuild test.
# requirements/export.txt holds everything in dev.txt at the same versions, plus these. On x86_64 it
# locks torch's CPU build, which is not on PyPI: this machine type keeps that wheel in /opt/wheels.
TORCH_WHEELS ?= /opt/wheels
$(EXPORT): $(RUNTIME) requirements/export.txt
	$(INSTALL) $(if $(wildcard $(TORCH_WHEELS)),--find-links $(TORCH_WHEELS)) -r requirements/export.txt
	touch $@

setup: $(RUNTIME)

# The one command that updates the lock files after a change to pyproject.toml (UPGRADE=1: newest
# releases the pins allow, else the current locked versions are kept where they still fit). export.txt
# is resolved first, for every extra at once; the others are its subsets, at its versions:
#   export.txt  everything, torch's CPU build included (`make test`, `make model`, `make bench`)
#   dev.txt     runtime + local + dev + client (`make setup`, `make run`, `make lint`, `make unit`)
#   local.txt   runtime + local (the Dockerfile)
#   lambda.txt  what the Lambda bundle ships (`make bundle`): runtime less boto3 and huggingface-hub
#   uv.txt      uv alone, which pip installs first
# All resolve for Python 3.11 and newer on every platform (3.12/arm64 for Lambda).
UV ?= $(BIN)/uv
LOCK := $(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" $(if $(UPGRADE),--upgrade)
lock: $(if $(filter $(BIN)/uv,$(UV)),$(RUNTIME))
	$(LOCK) pyproject.toml --extra local --extra dev --extra client --extra export --override requirements/torch-cpu.txt \
		--find-links $(TORCH_WHEELS) -o requirements/export.txt
	$(LOCK) pyproject.toml --extra local --extra dev --extra client -c requirements/export.txt -o requirements/dev.txt
	$(LOCK) pyproject.toml --extra local -c requirements/export.txt -o requirements/local.txt
	$(LOCK) pyproject.toml -c requirements/export.txt --override requirements/lambda-exclude.txt \
		-o requirements/lambda.txt
	echo uv | $(LOCK) - -c requirements/export.txt -o requirements/uv.txt

run: $(RUNTIME)
	$(BIN)/python -m pai_local

# The repository's shell scripts: every *.sh git tracks, and CI's entry point (which has no suffix).
SHELL_SCRIPTS = .ci/run $(shell git ls-files '*.sh' 2>/dev/null)

lint: $(RUNTIME)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/cfn-lint infra/template.yaml infra/github-oidc.yaml
	$(BIN)/shellcheck $(SHELL_SCRIPTS)
	$(BIN)/jactionlint --shellcheck=$(BIN)/shellcheck

unit: $(RUNTIME)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# The headless Chromium the web app's tests drive (Debian's chromium and chromium-driver): installed
# when missing and this runs as root or with sudo; otherwise those tests skip, saying why.
browser:
	sh scripts/install_browser.sh

# On the backend AWS_EMULATOR selects: auto (default), moto, localstack, external.
integration integration-test: $(RUNTIME) browser
	$(BIN)/pytest tests/integration -m integration -rs $(PYTEST_ARGS)

test: $(EXPORT) lint browser
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
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.documents

# Retrieval quality on LoCoMo's three development conversations (read from ../shared/data/locomo-dev/):
# recall@5/@10 of the real handlers against fp32 MiniLM, BM25 and their fusion, in one run of a few
# minutes; writes its section of benchmarks/RESULTS.md.
bench-quality: $(EXPORT)
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.quality $(ARGS)

# Learning from chat on the scripted turns of benchmarks/data/learning_eval.json: precision, recall,
# correct updates and secret leaks (must be 0) for each available provider (no model, the offline
# model, and an OpenAI-compatible endpoint when PAI_OPENAI_BASE_URL is set); writes its section of
# benchmarks/RESULTS.md. ARGS="--providers rules offline" picks providers.
bench-learning: $(RUNTIME)
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.learning $(ARGS)

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
