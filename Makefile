# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv and install what they need.
# On CPU machines torch==2.13.0 (a local CPU build) is installed first; on a GPU machine pass TORCH="torch" (or any spec).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
DEMO_OUT ?= runs/demo
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

# Until `mmsearch-r1 demo` reproduces the paper's findings (see README, Status), this runs the part of it that
# is finished: a small world, a pretrained tiny model, and its evaluation in all three workflows.
demo: setup
	$(BIN)/mmsearch-r1 world build --out $(DEMO_OUT)/world --size small --seed 0
	$(BIN)/mmsearch-r1 pretrain --world $(DEMO_OUT)/world --out $(DEMO_OUT)/pretrained
	$(BIN)/mmsearch-r1 eval --model $(DEMO_OUT)/pretrained --data $(DEMO_OUT)/world/test.parquet --workflow direct,rag,on-demand --out $(DEMO_OUT)/eval

test: setup-dev
	bash scripts/test-deps.sh
	$(BIN)/python -m pytest -q

test-unit: setup-dev
	$(BIN)/python -m pytest -q tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
