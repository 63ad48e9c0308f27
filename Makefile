# Two commands do all set-up on a machine with Python 3.11 and make:
#   make demo   install from the lock, generate demo batches, run the pipeline, show the champion
#   make test   install from the lock and run the test suite (what CI runs)
# then make ui  Dagster's UI (webserver and daemon) and MLflow's UI on 127.0.0.1; Ctrl-C stops both
# and, on demand, make bench   the performance benchmark (benchmarks/)
#                make cluster the cluster deployment on 127.0.0.1 (PostgreSQL, Redis, MLflow server,
#                             Celery workers, Dagster); make cluster-down stops it
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

WORKERS ?= 2

.PHONY: install prepare demo ui test bench clean cluster cluster-down

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

# Debian packages a target needs and this machine lacks, installed in one apt-get (as root or with
# sudo); without a way to install them, a warning says what will not work.
define apt_install
	@missing=""; for command in $(1); do command -v $$command >/dev/null || missing="$$missing $$command"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else SUDO=none; fi; \
		if [ "$$SUDO" != none ] && command -v apt-get >/dev/null; then \
			$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else echo "warning: no$$missing and no way to install it (apt-get as root or with sudo): $(2)"; fi; fi
endef

# The cluster deployment: every part on 127.0.0.1 under .cluster/, supervised; see the README.
# Debian's redis-server starts no service: the cluster runs its own. PostgreSQL's binaries must be installed.
cluster: prepare
	$(call apt_install,redis-server,the cluster cannot start)
	$(RUN) ml-platform cluster up --workers $(WORKERS)

cluster-down:
	$(RUN) ml-platform cluster down

# The browser tests (ml_platform_tests/test_ui_browser.py) drive the distribution's Chromium with
# Playwright (Playwright's own browser download needs the internet); the cluster tests start redis-server.
test: prepare
	$(call apt_install,chromium redis-server,the browser or cluster tests will fail)
	$(RUN) ruff check ml_platform ml_platform_tests benchmarks
	$(RUN) pytest

# The performance benchmark (benchmarks/run.py): one to two hours on 2 cores; writes benchmarks/RESULTS.md.
# A quick look: make bench BENCH_ARGS="--sizes 10000 --repeats 1 --backfill 0 --output /tmp/bench.md"
BENCH_ARGS ?=
bench: prepare
	$(RUN) python -m benchmarks.run $(BENCH_ARGS)

clean:
	@$(RUN) ml-platform cluster down >/dev/null 2>&1 || true
	rm -rf .cluster .dagster_home data/warehouse data/step_outputs data/dbt_runs mlflow reports schedules.yaml schedules.yaml.lock $(DBT_DIR)/target data/incoming/*.csv data/incoming/*.parquet
