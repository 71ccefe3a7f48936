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

$(VENV)/.dev: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.demo
	$(VENV)/bin/tunesmith quickstart

test: $(VENV)/.dev
	$(PY) -m pytest

bench: $(VENV)/.dev
	$(PIP) install -q -e ".[bench]"
	$(PY) bench/text_classification.py

clean:
	rm -rf $(VENV) runs
