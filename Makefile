# `make demo` runs the pipeline over the sample data; `make test` runs every test.
# Both start the project's own PostgreSQL (scripts/postgres.sh) unless DATABASE_URL is set.

CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
PROFILE ?= dev
# Tests build the Ballista engine too (tests/it/cluster.rs starts a real cluster);
# `make test FEATURES=` tests the default build alone.
FEATURES ?= ballista
BIN_DIR := $(CARGO_TARGET_DIR)/$(if $(filter release,$(PROFILE)),release,debug)

.PHONY: demo test build fmt lint bench bench-curves bench-tpch bench-rule-edit airflow-test postgres postgres-stop clean-stage

# The same features as `make test` and `make airflow-test`, so the three share one
# build of the dependencies.
build:
	cargo build --profile $(PROFILE) --features "$(FEATURES)"

## demo: build, start PostgreSQL, migrate, run every stage over data/landed/
demo: build
	PIPELINE_BIN=$(BIN_DIR)/pipeline scripts/demo.sh

## test: unit and integration tests against a real PostgreSQL; stops the
## PostgreSQL and S3 servers it started (not those given or already running)
test:
	@scripts/test-deps.sh
	@pg_up=$$(scripts/postgres.sh status >/dev/null 2>&1 && echo 1); \
	  s3_up=$$(scripts/s3.sh status >/dev/null 2>&1 && echo 1); \
	  rc=1; url="$${DATABASE_URL:-$$(scripts/postgres.sh start)}" && \
	  { DATABASE_URL="$$url" cargo test --all-targets --features "$(FEATURES)"; rc=$$?; } ; \
	  [ -n "$$S3_ENDPOINT$$s3_up" ] || scripts/s3.sh stop; \
	  [ -n "$$DATABASE_URL$$pg_up" ] || scripts/postgres.sh stop; \
	  exit $$rc

## airflow-test: the shipped DAG run by real Airflow (installed in a venv) against PostgreSQL
airflow-test:
	@url="$${DATABASE_URL:-$$(scripts/postgres.sh start)}" && cargo build --features "$(FEATURES)" && \
	  DATABASE_URL="$$url" orchestration/airflow/test_dag.sh

fmt:
	cargo fmt

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features ballista -- -D warnings
	scripts/one-build.sh ballista
	@if cargo tree -d -e normal --features ballista | grep -qE '^(arrow|datafusion|object_store) v'; then \
	  echo "lint: a second arrow, datafusion or object_store is built (cargo tree -d)"; exit 1; fi

## bench: throughput and memory against DuckDB, psql \copy and Postgres (see bench/bench.py; results in bench/results/)
bench:
	bench/run.sh

## bench-curves: validate and load-stage time and peak RSS at 0.3/3/10/30 M rows, plotted (bench/curves.py)
bench-curves:
	CARGO_TARGET_DIR=$${CARGO_TARGET_DIR:-$$PWD/target} cargo build --release
	python3 bench/curves.py

## bench-rule-edit: a one-line rule edit touching one month of twelve, against the first run of the twelve (bench/rule_edit.py)
bench-rule-edit:
	CARGO_TARGET_DIR=$${CARGO_TARGET_DIR:-$$PWD/target} cargo build --release
	python3 bench/rule_edit.py

## bench-tpch: TPC-H SF 1 (tpchgen-cli), the 21 models through transform beside PostgreSQL's own CREATE TABLE AS, DataFusion alone and DuckDB over the lake's Parquet, results checked against DuckDB's
bench-tpch:
	CARGO_TARGET_DIR=$${CARGO_TARGET_DIR:-$$PWD/target} cargo build --release --bin pipeline --example tpch_datafusion
	command -v tpchgen-cli >/dev/null || python3 -m pip install -q tpchgen-cli || cargo install tpchgen-cli --locked
	python3 -c "import duckdb" 2>/dev/null || python3 -m pip install -q duckdb
	@url="$${DATABASE_URL:-$$(scripts/postgres.sh start)}" && DATABASE_URL="$$url" bench/tpch/run.sh

postgres:
	@scripts/postgres.sh start

postgres-stop:
	@scripts/postgres.sh stop

clean-stage:
	rm -rf data/stage
