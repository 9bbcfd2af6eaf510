# Entry points of the project. `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
LS_VENV := .venv-labelstudio
EV_VENV := .venv-evidently
BIN := $(VENV)/bin
# The CPU wheel of torch lies on these machines' disk; install it before the project so the
# project's range (which admits it) pulls no multi-GB CUDA build. The GPU image installs CUDA torch.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
TEST_WORKERS ?= 2

.PHONY: help venv venv-labelstudio venv-evidently install browser test test-fast lint format typecheck demo \
	bench-store bench-hostile bench-simulate bench-bootstrap bench-monitor bench-drift bench-selection bench-train bench-validate clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -c requirements/constraints.txt -e '.[dev]'
	touch $@

$(LS_VENV)/.installed: requirements/labelstudio.txt
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip uv
	$(LS_VENV)/bin/uv pip install -q --compile-bytecode --python $(LS_VENV)/bin/python -r requirements/labelstudio.txt
	touch $@

$(EV_VENV)/.installed: requirements/evidently.txt
	test -x $(EV_VENV)/bin/python || $(PYTHON) -m venv $(EV_VENV)
	$(EV_VENV)/bin/python -m pip install -q --upgrade pip uv
	$(EV_VENV)/bin/uv pip install -q --python $(EV_VENV)/bin/python -r requirements/evidently.txt
	touch $@

venv: $(VENV)/.installed  ## Create the project's virtualenv (.venv)

venv-labelstudio: $(LS_VENV)/.installed  ## Create Label Studio's own virtualenv (its pins clash with Airflow's)

venv-evidently: $(EV_VENV)/.installed  ## Create Evidently 0.7's own virtualenv for bench/evidently_peer.py (it needs pandas<3)

install: venv venv-labelstudio  ## Both virtualenvs

# The monitoring page's UI test drives Debian's Chromium through its own chromedriver (Selenium is told where
# both are, so nothing downloads a browser). Installed once; root or sudo needed for apt-get.
browser:  ## Debian's headless Chromium and chromedriver for the monitoring page's UI test (apt-get)
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends \
	    chromium chromium-driver fonts-dejavu-core >/dev/null

lint: venv  ## ruff lint and format check
	$(BIN)/ruff check src tests dags plugins bench
	$(BIN)/ruff format --check src tests dags plugins bench

format: venv  ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests dags plugins bench
	$(BIN)/ruff format src tests dags plugins bench

typecheck: venv  ## mypy on src/
	$(BIN)/mypy

test-fast: venv  ## Unit tests only (no services)
	$(BIN)/python -m pytest tests/unit -q $(PYTEST_ARGS)

# Two processes, each given whole test files (module-scoped worlds and servers stay in one process) but for the
# files tests/conftest.py spreads, in the order it sets; each starts the session's services it needs and runs torch
# at its share of the cores. TEST_WORKERS=0 runs in this process alone.
test: install browser lint typecheck  ## Everything: lint, types, unit, integration (real services) and DAG tests
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30 $(PYTEST_ARGS)

demo: install  ## The closed loop: 30 days of a new hospital through the Airflow scheduler, MLflow and Label Studio (~21-25 min)
	$(BIN)/pipeline demo

bench-store: venv  ## Bulk load / read back 1,000,000 inference-log rows on PostgreSQL beside plain COPY
	$(BIN)/python bench/bench_store.py --rows 1000000 --repeats 3 --out bench/results/store.json

bench-hostile: venv  ## Hostile input counted: pydicom's test files whole and damaged, landing batches with bad rows, half-written studies
	$(BIN)/python bench/bench_hostile.py --out bench/results/hostile.json

bench-monitor: venv  ## The whole monitor run on a 1,000,000-study window beside a plain read of the same rows
	$(BIN)/python bench/bench_monitor.py --rows 1000000 --repeats 3 --out bench/results/monitor.json

bench-drift: venv venv-evidently  ## Drift checks beside Evidently's DataDriftPreset: 1M vs 1M rows, and every scenario day by day
	cd bench && ../$(BIN)/python bench_drift.py --rows 1000000 --repeats 3 --scenarios --out results/drift.json

bench-selection: venv  ## Errors caught per label by each selection strategy (5% budget) and what 300 labels teach
	$(BIN)/python bench/bench_selection.py --out bench/results/selection.json

bench-simulate: venv  ## Studies/s generated at 128 and 1024 px (with DICOM write) and through the inference service
	$(BIN)/python bench/bench_simulate.py --out bench/results/simulate.json

bench-train: venv  ## DenseNet121 training images/s through the DICOM data path beside device tensors (512 px AMP on CUDA, else a 128 px CPU variant)
	$(BIN)/python bench/bench_train.py --out bench/results/train.json

bench-validate: venv  ## Validating one candidate against the champion on 5,000 test studies at 128 px on CPU (studies/s)
	$(BIN)/python bench/bench_validate.py --studies 5000 --repeats 3 --out bench/results/validate.json

bench-bootstrap: venv  ## Train the bootstrap champion in a scratch MLflow; AUROC on stable sites and the unseen scanner
	tmp=$$(mktemp -d) && cd $$tmp && PIPELINE_MLFLOW_TRACKING_URI=sqlite:///$$tmp/mlflow.db PIPELINE_STORAGE_ROOT=$$tmp/storage \
	  $(CURDIR)/$(BIN)/pipeline bootstrap --force --no-progress --scenario $(CURDIR)/scenarios/stable.yaml \
	  --new-site-scenario $(CURDIR)/scenarios/new_hospital.yaml --json $(CURDIR)/bench/results/bootstrap.json; \
	  status=$$?; rm -rf $$tmp; exit $$status

clean:  ## Remove virtualenvs, caches and local data
	rm -rf $(VENV) $(LS_VENV) $(EV_VENV) .pytest_cache .mypy_cache .ruff_cache data
