#!/usr/bin/env bash
# The demo: migrate, then `pipeline run` for each sample period, then `status`.
# Uses DATABASE_URL when set, otherwise starts the project's own PostgreSQL.
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
    3) echo "demo: pipeline $1 rejected some input (exit 3): see the table above" >&2 ;;
    *)
        echo "demo: stopped at 'pipeline $*' (exit $code)" >&2
        exit "$code"
        ;;
    esac
}

step migrate
# The models' unit tests (sql/mart/*.yml): in memory, no database.
step test
for period in 2025-05 2025-06; do
    step run --period "$period"
done
# Run again: nothing changed, so every stage is skipped (exit 99).
step run --period 2025-06
step status
# The data-quality page, with each period's rejected rows beside it.
step report --out data/report
echo >&2
echo "demo: done. Open data/report/index.html, or try: psql \"$DATABASE_URL\" -c 'SELECT * FROM mart.citizens_by_region ORDER BY 1, _data_period'" >&2
