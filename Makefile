# Two commands do all set-up on a machine with Python 3.11 and make:
#   make demo   install from the lock, generate demo batches, run the pipeline, show the champion
#   make test   install from the lock and run the test suite (what CI runs)
# then make ui  Dagster's UI (webserver and daemon) and MLflow's UI on 127.0.0.1; Ctrl-C stops both
# and, on demand, make bench   the performance benchmark (benchmarks/)
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
RUN := $(UV) run --frozen
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export ML_PLATFORM_HOME ?= $(CURDIR)
DBT_DIR := ml_platform/dbt_project

DEMO_BATCHES ?= 3
DEMO_ROWS ?= 5000
DAGSTER_PORT ?= 3000
MLFLOW_PORT ?= 5000

.PHONY: install prepare demo ui test bench clean

install:
	@# A Python that refuses system-wide installs (PEP 668) still takes a --user one.
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv \
		|| $(PYTHON) -m pip install --quiet --user --break-system-packages uv
	@# Compiled bytecode in the venv: without it, a Python started with PYTHONDONTWRITEBYTECODE (as on
	@# the CI machines) compiles Dagster and MLflow again in every process, 3x the import time of each
	@# CLI command, run worker and test subprocess.
	$(UV) sync --frozen --compile-bytecode

# dagster-dbt reads dbt's manifest when the definitions load; `dagster dev` would prepare it,
# the CLI and CI do not, so set-up parses the dbt project itself.
prepare: install
	$(RUN) dbt parse --quiet --project-dir $(DBT_DIR) --profiles-dir $(DBT_DIR)

demo: prepare
	$(RUN) ml-platform demo-data --batches $(DEMO_BATCHES) --rows $(DEMO_ROWS) --drift 0.03
	$(RUN) ml-platform batches scan
	$(RUN) ml-platform run --all
	$(RUN) ml-platform champion
	@echo
	@echo "Results:"
	@echo "  warehouse (one DuckDB file per batch): $(ML_PLATFORM_HOME)/data/warehouse/"
	@echo "  evaluation reports (JSON):             $(ML_PLATFORM_HOME)/reports/<batch>/evaluation_report.json"
	@echo "  MLflow store and artifacts:            $(ML_PLATFORM_HOME)/mlflow/"
	@echo "Open the UIs: make ui   (Dagster http://127.0.0.1:3000, MLflow http://127.0.0.1:5000; Ctrl-C stops both)"

# Dagster's webserver and daemon (`dagster dev`) and MLflow's UI on the platform's store, on 127.0.0.1.
ui: prepare
	$(RUN) ml-platform ui --dagster-port $(DAGSTER_PORT) --mlflow-port $(MLFLOW_PORT)

# The browser tests (ml_platform_tests/test_ui_browser.py) drive the distribution's Chromium with
# Playwright (Playwright's own browser download needs the internet). Without it they fail and say why.
test: prepare
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else SUDO=none; fi; \
		if [ "$$SUDO" != none ] && command -v apt-get >/dev/null; then \
			$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else echo "warning: no chromium and no way to install it (apt-get as root or with sudo): the browser tests will fail"; fi; }
	$(RUN) ruff check ml_platform ml_platform_tests benchmarks
	$(RUN) pytest

# The performance benchmark (benchmarks/run.py): one to two hours on 2 cores; writes benchmarks/RESULTS.md.
# A quick look: make bench BENCH_ARGS="--sizes 10000 --repeats 1 --backfill 0 --output /tmp/bench.md"
BENCH_ARGS ?=
bench: prepare
	$(RUN) python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf .dagster_home data/warehouse mlflow reports schedules.yaml schedules.yaml.lock $(DBT_DIR)/target data/incoming/*.csv data/incoming/*.parquet
