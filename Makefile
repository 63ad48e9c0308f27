# Two commands do all set-up on a machine with Python 3.11 and make:
#   make demo   install from the lock, generate demo batches, run the pipeline, show the champion
#   make test   install from the lock and run the test suite (what CI runs)
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

.PHONY: install prepare demo test bench clean

install:
	@# A Python that refuses system-wide installs (PEP 668) still takes a --user one.
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv \
		|| $(PYTHON) -m pip install --quiet --user --break-system-packages uv
	$(UV) sync --frozen

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
	@echo "Open the UIs (both bind 127.0.0.1):"
	@echo "  Dagster: DAGSTER_HOME=$(DAGSTER_HOME) $(RUN) dagster dev -w workspace.yaml   -> http://127.0.0.1:3000"
	@echo "  MLflow:  $(RUN) mlflow ui --backend-store-uri sqlite:///$(ML_PLATFORM_HOME)/mlflow/mlflow.db --host 127.0.0.1 --port 5000"

test: prepare
	$(RUN) ruff check ml_platform ml_platform_tests benchmarks
	$(RUN) pytest

# The performance benchmark (benchmarks/run.py): one to two hours on 2 cores; writes benchmarks/RESULTS.md.
# A quick look: make bench BENCH_ARGS="--sizes 10000 --repeats 1 --backfill 0 --output /tmp/bench.md"
BENCH_ARGS ?=
bench: prepare
	$(RUN) python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf .dagster_home data/warehouse mlflow reports schedules.yaml schedules.yaml.lock $(DBT_DIR)/target data/incoming/*.csv data/incoming/*.parquet
