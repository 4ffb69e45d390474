#!/usr/bin/env bash
# make airflow-test: the shipped DAG run by real Airflow (`airflow dags test`) against
# the real binary and PostgreSQL, on a copy of the sample project:
#   1. period 2025-05: every dataset's group runs, stage and mart are filled;
#   2. the same period again: every group is skipped (check-counts exit 99), the
#      stage rows are untouched;
#   3. a corrected citizens file with the same number of rows: it is loaded;
#   4. an old period whose file never came (2013-01): the tasks run (no silent empty
#      run before a start date) and the run fails when the sensor gives up;
#   5. the next present month (2025-06) after it runs green on its own;
#   6. with pipeline_first_period set, an earlier period fails at once, saying so;
#   7. a re-delivery of a loaded month that ingest refuses: the run fails (it used to
#      end green with every task skipped).
# Airflow is installed in a venv (AIRFLOW_VENV, default /var/tmp/pipeline-airflow)
# from PyPI when missing. Needs PIPELINE_BIN (default: the debug build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$PWD
venv=${AIRFLOW_VENV:-/var/tmp/pipeline-airflow}
bin=${PIPELINE_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/pipeline}
[ -x "$bin" ] || { echo "airflow-test: $bin is missing; run cargo build" >&2; exit 2; }

if [ ! -x "$venv/bin/airflow" ]; then
    echo "airflow-test: installing apache-airflow into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "apache-airflow==2.10.5"
fi

fail() { echo "airflow-test: FAILED: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r datasets_config.yml sql "$work/"
mkdir -p "$work/data"
cp -r data/landed "$work/data/"

admin=${DATABASE_URL:-$(scripts/postgres.sh start)}
db=airflow_test_$$
psql "$admin" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
url=$(python3 -c 'import sys; from urllib.parse import urlparse; u = urlparse(sys.argv[1]); print(u._replace(path="/" + sys.argv[2]).geturl())' "$admin" "$db")
trap 'rm -rf "$work"; psql "$admin" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null' EXIT
DATABASE_URL=$url "$bin" --config "$work/datasets_config.yml" migrate >/dev/null 2>"$work/migrate.log" ||
    { cat "$work/migrate.log" >&2; fail "migrate"; }

export AIRFLOW_HOME=$work/airflow
export AIRFLOW__CORE__DAGS_FOLDER=$repo/orchestration/airflow
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING
export AIRFLOW_VAR_PIPELINE_BIN=$bin
export AIRFLOW_VAR_PIPELINE_CONFIG=$work/datasets_config.yml
export AIRFLOW_VAR_PIPELINE_DATABASE_URL=$url
# A failure must show now, not after a 10-minute retry delay; a missing file within
# half a minute, not five days.
export AIRFLOW_VAR_PIPELINE_RETRIES=0
export AIRFLOW_VAR_PIPELINE_POKE_INTERVAL_MINUTES=0.1
export AIRFLOW_VAR_PIPELINE_ARRIVAL_TIMEOUT_MINUTES=0.5
"$venv/bin/airflow" db migrate >/dev/null 2>&1

q() { psql "$url" -qAtc "$1"; }

dag_test() {
    timeout "${AIRFLOW_TEST_TIMEOUT:-300}" "$venv/bin/airflow" dags test pipeline_monthly "$1" >"$work/dag.log" 2>&1 || {
        cp "$work/dag.log" "${TMPDIR:-/tmp}/airflow-test-dag.log"
        grep -E "ERROR|exited|Exception" "$work/dag.log" | grep -v "^ " | head -30 >&2
        fail "airflow dags test $1"
    }
}
# A run that must fail, its log matching $2.
dag_test_fails() {
    if timeout "${AIRFLOW_TEST_TIMEOUT:-300}" "$venv/bin/airflow" dags test pipeline_monthly "$1" >"$work/dag.log" 2>&1; then
        cp "$work/dag.log" "${TMPDIR:-/tmp}/airflow-test-dag.log"
        fail "airflow dags test $1 succeeded"
    fi
    grep -q -- "$2" "$work/dag.log" || {
        cp "$work/dag.log" "${TMPDIR:-/tmp}/airflow-test-dag.log"
        fail "airflow dags test $1 failed without \"$2\" in its log"
    }
}
# A manual run at 2025-06-01 covers the interval that ends then: period 2025-05.
echo "airflow-test: run 1 (period 2025-05)" >&2
dag_test 2025-06-01
citizens=$(q "SELECT count(*) FROM stage.citizens WHERE _data_period = '2025-05'")
regions=$(q "SELECT count(*) FROM stage.regions")
mart=$(q "SELECT count(*) FROM mart.citizens_by_region WHERE _data_period = '2025-05'")
[ "$citizens" -gt 0 ] || fail "stage.citizens is empty for 2025-05"
[ "$regions" -gt 0 ] || fail "stage.regions (a period-less dataset) was not loaded"
[ "$mart" -gt 0 ] || fail "mart.citizens_by_region is empty for 2025-05"
loads=$(q "SELECT count(*) FROM meta.load_log WHERE status = 'loaded'")
validations=$(q "SELECT count(*) FROM meta.validation_log")

echo "airflow-test: run 2 (same period, nothing changed)" >&2
dag_test 2025-06-01
grep -q '"exit_dag":true' "$work/dag.log" || fail "check-counts did not find the period loaded"
[ "$(q "SELECT count(*) FROM meta.validation_log")" = "$validations" ] || fail "the re-run validated again"
[ "$(q "SELECT count(*) FROM meta.load_log WHERE status = 'loaded'")" = "$loads" ] || fail "the re-run loaded again"

echo "airflow-test: run 3 (a corrected file with the same number of rows)" >&2
python3 - "$work/data/landed/citizens_2025-05.csv" <<'PY'
import sys
path = sys.argv[1]
lines = open(path).read().splitlines()
header = lines[0].split(",")
amount = header.index("amount")
fields = lines[1].split(",")
fields[amount] = "4242.42"
lines[1] = ",".join(fields)
open(path, "w").write("\n".join(lines) + "\n")
PY
dag_test 2025-06-01
[ "$(q "SELECT count(*) FROM stage.citizens WHERE _data_period = '2025-05'")" = "$citizens" ] || fail "row count changed"
[ "$(q "SELECT count(*) FROM stage.citizens WHERE _data_period = '2025-05' AND amount = 4242.42")" = 1 ] ||
    fail "the corrected same-count file was not loaded"
echo "airflow-test: run 4 (period 2013-01, whose file never came)" >&2
dag_test_fails 2013-02-01 "AirflowSensorTimeout"
[ "$(q "SELECT count(*) FROM meta.validation_log WHERE period = '2013-01'")" = 0 ] || fail "2013-01 was validated"

echo "airflow-test: run 5 (period 2025-06, after the missing month)" >&2
dag_test 2025-07-01
[ "$(q "SELECT count(*) FROM stage.citizens WHERE _data_period = '2025-06'")" -gt 0 ] || fail "2025-06 was not loaded"

echo "airflow-test: run 6 (a period before pipeline_first_period)" >&2
AIRFLOW_VAR_PIPELINE_FIRST_PERIOD=2025-01 dag_test_fails 2013-02-01 "before pipeline_first_period 2025-01"

echo "airflow-test: run 7 (a re-delivery of 2025-05 that ingest refuses)" >&2
python3 - "$work/data/landed/citizens_2025-05.csv" <<'PY'
import sys
path = sys.argv[1]
rows = [line.split(",")[:-1] for line in open(path).read().splitlines()]
open(path, "w").write("\n".join(",".join(r) for r in rows) + "\n")
PY
dag_test_fails 2025-06-01 "needs a look"
[ "$(q "SELECT count(*) FROM stage.citizens WHERE _data_period = '2025-05'")" = "$citizens" ] || fail "stage changed"
echo "airflow-test: ok" >&2
