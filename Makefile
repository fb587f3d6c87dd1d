# Quickstart targets. Each creates .venv (CPU torch when there is no GPU) and installs rlkit2 into it.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c   # a failed training run must not go on to evaluate
VENV ?= .venv
PY := $(VENV)/bin/python
ENV ?= HalfCheetah-v5
STEPS ?= 100000
export MUJOCO_GL ?= egl

.PHONY: train test test-quick docs bench-throughput clean

# Train PPO (study preset) on a MuJoCo env for a short budget, then evaluate the saved policy.
train:
	scripts/setup_env.sh
	$(PY) scripts/train.py --agent ppo --env $(ENV) --total_steps $(STEPS) --run_name quickstart-ppo-$(subst /,_,$(ENV))-$$(date +%Y%m%d-%H%M%S) | tee .last_train.log
	$(PY) scripts/evaluate.py $$(sed -n 's/^run directory : //p' .last_train.log) --episodes 10

# Run the test suite on CPU, with the extras its tests need (dev: envpool, minigrid, wandb, onnx; ray: the sweep
# tests; bench: SB3 as a sweep's peer trial; docs: tests/test_docs.py builds the documentation site with warnings
# as errors).
test:
	scripts/setup_env.sh dev,ray,bench,docs
	$(PY) -m pytest -q

# The same without the learning tests (marked slow): the quick check while editing. CI runs `make test`.
test-quick:
	scripts/setup_env.sh dev,ray,bench,docs
	$(PY) -m pytest -q -m "not slow"

# Build the documentation site into site/ with warnings as errors (a broken link or docstring reference fails);
# preview it with `.venv/bin/mkdocs serve` (http://127.0.0.1:8000, this machine only).
docs:
	scripts/setup_env.sh docs
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(PY) -m mkdocs build --strict

bench-throughput:
	scripts/setup_env.sh bench
	$(PY) scripts/bench/throughput.py

clean:
	rm -rf $(VENV) .last_train.log site
