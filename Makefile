# Two entry points on a fresh machine: `make run` (a whole local federation) and `make test`.
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
DEMO := runs/demo-assets
NODES ?= 3
ROUNDS ?= 3
MODEL ?= $(DEMO)/model
DATASET ?= $(DEMO)/reviews.parquet

.PHONY: run test test-containers lint system bench-quality bench-privacy bench-overhead bench-scaling bench-secagg

system:
	scripts/system-deps.sh

# The pinned torch goes in first: an unpinned one pulls a multi-GB CUDA build.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

$(DEMO)/reviews.parquet: | $(BIN)/.installed
	$(BIN)/fedllm demo-assets $(DEMO)

run: system $(BIN)/.installed $(DEMO)/reviews.parquet
	$(BIN)/fedllm up --nodes $(NODES) --rounds $(ROUNDS) --model $(MODEL) --dataset $(DATASET)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Pinned hadolint, kubectl (kustomize), Kubernetes schemas, docker-compose: static deploy checks.
$(BIN)/.deploy-tools: scripts/deploy-tools.sh $(BIN)/.installed
	VENV=$(VENV) scripts/deploy-tools.sh
	touch $@

test: lint $(BIN)/.deploy-tools
	scripts/system-deps.sh prometheus
	$(BIN)/mkdocs build --strict --quiet
	$(BIN)/pytest

# Real containers: Docker engine, images from a local base, `docker compose up` of a federation.
test-containers: $(BIN)/.installed $(BIN)/.deploy-tools
	scripts/container-images.sh
	$(BIN)/pytest -m containers tests/containers -s

bench-quality: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/quality.py --out bench/quality.json

# Accuracy vs ε (DP-SGD), site-level DP, DP-SGD time/memory (MiniLM, real reviews): bench/privacy.json.
bench-privacy: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/privacy.py --out bench/privacy.json --plot docs/privacy.png

# Secure aggregation's cost: round time and bytes per site, 3/5/8 sites, tiny GPT-2 and MiniLM.
bench-secagg: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/secagg.py --out bench/secagg.json

# A SuperNode vs a bare PEFT loop (MiniLM on real reviews, then the tiny GPT-2): bench/overhead.json.
BENCH_DEMO := runs/bench-demo
$(BENCH_DEMO)/reviews.parquet: | $(BIN)/.installed
	$(BIN)/fedllm demo-assets --reviews 4000 $(BENCH_DEMO)

bench-overhead: $(BIN)/.installed $(BENCH_DEMO)/reviews.parquet
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/overhead.py --model minilm --examples 600 --out bench/overhead.json --section minilm
	$(BIN)/python bench/overhead.py --model $(BENCH_DEMO)/model --dataset $(BENCH_DEMO)/reviews.parquet \
		--examples 4000 --rounds 3 --out bench/overhead.json --section tiny-gpt2

# Round time and bytes vs nodes and LoRA rank, and the 100-site estimate: bench/scaling.json.
bench-scaling: $(BIN)/.installed $(BENCH_DEMO)/reviews.parquet
	$(BIN)/python bench/scaling.py --model $(BENCH_DEMO)/model --dataset $(BENCH_DEMO)/reviews.parquet \
		--out bench/scaling.json
