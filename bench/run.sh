#!/usr/bin/env bash
# make bench: release build, DuckDB from PyPI, then bench/bench.py (see its docstring).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release
python3 -c "import duckdb" 2>/dev/null || python3 -m pip install -q duckdb
exec python3 bench/bench.py
