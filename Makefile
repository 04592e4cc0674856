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
SEEDS    ?=
MODEL    ?= runs/train/$(AGENT)/model
SPLIT    ?= val
EXTRA    ?=
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

# The whole multi-stage chain (s0 -> s1 -> s2 -> refit) on the embedded defaults, with
# budgets cut so it ends in minutes on a CPU: 2 trials per stage, 2 epochs, 2 refit seeds.
demo: setup
	$(LAUNCH) data validate --data-dir data/sample
	$(LAUNCH) hpo --agent criteria --plan multi --trials 2 --epochs 2 --seeds 2 --experiment demo
	$(LAUNCH) status --experiment demo

# ---- thin wrappers over `launch` -------------------------------------------------------
# Variables: AGENT, WORKERS, BACKEND, EXPERIMENT, TRIALS, EPOCHS (empty: the stage file's
# value, no flag), SEEDS (refit), EXTRA (any further `launch` flags, passed last).
# The wrappers need `launch`, not a fresh install: `| $(LAUNCH)` installs only when it is
# missing, so `make -n hpo-s1` prints the launch line and nothing else.
TUNE_MAX := tune-criteria-max tune-evidence-max tune-share-max tune-joint-max
.PHONY: train eval hpo-s0 hpo-s1 hpo-s2 refit full-hpo full-hpo-all maximal-hpo-all $(TUNE_MAX)

opt = $(if $(2),$(1) $(2))
POOL = --workers $(WORKERS) --backend $(BACKEND) --experiment $(EXPERIMENT)
# $(call hpo,AGENT,STAGE FLAGS): one `launch hpo` line with the shared flags.
hpo = $(strip $(LAUNCH) hpo --agent $(1) $(2) $(POOL) $(call opt,--trials,$(TRIALS)) \
	$(call opt,--epochs,$(EPOCHS)) $(EXTRA))

$(LAUNCH):
	$(MAKE) setup

train: | $(LAUNCH)
	$(strip $(LAUNCH) train --agent $(AGENT) $(call opt,--epochs,$(EPOCHS)) $(EXTRA))

eval: | $(LAUNCH)
	$(strip $(LAUNCH) eval --model $(MODEL) --split $(SPLIT) $(EXTRA))

hpo-s0 hpo-s1 hpo-s2: | $(LAUNCH)
	$(call hpo,$(AGENT),--stage $(@:hpo-%=%))

refit: | $(LAUNCH)
	$(strip $(LAUNCH) hpo --agent $(AGENT) --stage refit $(POOL) $(call opt,--seeds,$(SEEDS)) \
		$(call opt,--epochs,$(EPOCHS)) $(EXTRA))

full-hpo: | $(LAUNCH)
	$(call hpo,$(AGENT),--plan multi)

full-hpo-all: | $(LAUNCH)
	$(call hpo,all,--plan multi)

$(TUNE_MAX): tune-%-max: | $(LAUNCH)
	$(call hpo,$*,--stage max)

maximal-hpo-all: | $(LAUNCH)
	$(call hpo,all,--stage max)
