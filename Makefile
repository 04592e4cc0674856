# psy-agents — every target is a thin wrapper over `launch`.
# Two commands on a fresh machine:  `make demo`  and  `make test`.

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
LAUNCH   := $(BIN)/launch
STAMP    := $(VENV)/.installed
TORCH    ?= torch==2.13.0

AGENT    ?= criteria
WORKERS  ?= 1
BACKEND  ?= local
TRIALS   ?=
EPOCHS   ?=
EXPERIMENT ?= default
PYTEST_ARGS ?=

.PHONY: setup services test demo lint

# torch goes first so pip takes the local CPU build instead of resolving a multi-GB CUDA one.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# Starts PostgreSQL and a single-node Slurm if they are not running (idempotent).
services:
	bash .ci/services-up.sh

test: setup services
	$(BIN)/pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .

demo: setup
	$(LAUNCH) data validate --data-dir data/sample
	$(LAUNCH) hpo --agent criteria
