# lora-repro: `make help` lists every target.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Offline by default: nothing here may reach the hub; runs log to W&B offline.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export OMP_WAIT_POLICY ?= PASSIVE
export GLUE_DIR ?= $(wildcard ../shared/data/glue)

.PHONY: help install test test-slow test-all lint bench-lora clean

help: ## list every target
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

install: ## create .venv from nothing: torch==2.13.0 first (CPU build here), then the project
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	@$(PY) -c "import torch, transformers, peft; print('installed: torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"

test: ## fast test suite (offline, a few minutes on 2 cores)
	$(PY) -m pytest -q

test-slow: ## slow tests only (real MiniLM, longer runs)
	$(PY) -m pytest -q -m slow

test-all: ## every test CI runs (default + slow)
	$(PY) -m pytest -q -m 'not gpu and not slurm'

lint: ## ruff
	$(VENV)/bin/ruff check lora_repro analysis tests scripts

bench-lora: ## step time: our LoRA vs full FT vs PEFT on MiniLM; merged vs base inference
	$(PY) scripts/bench_lora.py

clean: ## remove caches (keeps .venv and results)
	rm -rf .pytest_cache **/__pycache__ build *.egg-info
