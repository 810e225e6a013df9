# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv and install what they need.
# On CPU machines torch==2.13.0 (a local CPU build) is installed first; on a GPU machine pass TORCH="torch" (or any spec)
# and DEVICE=cuda, which runs every model stage of the demo there (`make clean` first if .venv holds the CPU build).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
DEMO_OUT ?= runs/demo
DEVICE ?= cpu
BIN := $(VENV)/bin

.PHONY: setup setup-dev demo test test-unit clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The stamp files make a second `make` skip the install.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev,web,dense]"
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

# The embedded demo, every stage (see docs/results.md); a second run reuses the finished stages.
demo: setup
	$(BIN)/mmsearch-r1 demo --out $(DEMO_OUT) --device $(DEVICE)

test: setup-dev
	bash scripts/test-deps.sh
	$(BIN)/python -m pytest -q

test-unit: setup-dev
	$(BIN)/python -m pytest -q tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
