#!/usr/bin/env bash
# The demo: migrate, then every stage over the sample files in data/landed/.
# Uses DATABASE_URL when set, otherwise starts the project's own PostgreSQL.
# Stops with a clear line at the first stage that fails (or is not built yet).
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bin=${PIPELINE_BIN:-$repo/target/debug/pipeline}
[ -x "$bin" ] || { echo "demo: $bin is missing; run make build" >&2; exit 1; }
if [ -z "${DATABASE_URL:-}" ]; then
    DATABASE_URL=$(scripts/postgres.sh start) || exit 1
    export DATABASE_URL
fi

step() {
    echo >&2
    echo "demo: pipeline $*" >&2
    "$bin" "$@"
    local code=$?
    case $code in
    0 | 99) ;;
    3) echo "demo: pipeline $1 rejected its input (exit 3); carrying on" >&2 ;;
    *)
        echo "demo: stopped at 'pipeline $*' (exit $code)" >&2
        exit "$code"
        ;;
    esac
}

step migrate
step ingest --all
for period in 2025-05 2025-06; do
    step validate --dataset citizens --period "$period"
done
step validate --dataset regions
step load-stage --dataset regions
for period in 2025-05 2025-06; do
    step load-stage --dataset citizens --period "$period"
    step transform --period "$period"
done
step status
echo "demo: done" >&2
