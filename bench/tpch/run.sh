#!/usr/bin/env bash
# TPC-H at scale factor SF (default 1), the transform shape of `make bench`: the
# eight tables loaded as `period: none` datasets (ingest, validate, load-stage),
# then the ten models of sql/mart (queries 1, 3, 5, 6, 9, 10, 12, 13, 14, 18) run by
# `pipeline transform`, beside PostgreSQL running the same SQL itself (CREATE TABLE
# AS into schema peer), ROUNDS times alternating. Each model's result is compared
# with PostgreSQL's (EXCEPT both ways). Data from tpchgen-cli (`cargo install
# tpchgen-cli`), kept in WORK between runs.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sf=${SF:-1}
rounds=${ROUNDS:-2}
work=${WORK:-/var/tmp/pipeline-tpch-sf$sf}
bin=${PIPELINE_BIN:-${CARGO_TARGET_DIR:-$here/../../target}/release/pipeline}
admin=${DATABASE_URL:?DATABASE_URL names the server (scripts/postgres.sh start)}
db=tpch_sf${sf//./_}
url=$(python3 -c 'import sys; from urllib.parse import urlparse; u = urlparse(sys.argv[1]); print(u._replace(path="/" + sys.argv[2]).geturl())' "$admin" "$db")
say() { echo "tpch: $*" >&2; }

mkdir -p "$work/landed"
if [ ! -f "$work/landed/lineitem.csv" ]; then
    command -v tpchgen-cli >/dev/null || { say "cargo install tpchgen-cli first"; exit 2; }
    say "generating SF $sf into $work/landed"
    tpchgen-cli csv -s "$sf" --output-dir "$work/landed"
fi
python3 "$here/config.py" "$work/datasets_config.yml"
rm -rf "$work/sql" && cp -r "$here/sql" "$work/sql"
cd "$work"
if [ "$(psql "$admin" -Atc "SELECT count(*) FROM pg_database WHERE datname = '$db'")" = 0 ]; then
    psql "$admin" -qc "CREATE DATABASE $db"
    DATABASE_URL=$url "$bin" migrate >/dev/null
    say "loading the tables (ingest, validate, load-stage)"
    start=$(date +%s.%N)
    DATABASE_URL=$url "$bin" ingest --all >/dev/null
    for t in region nation part supplier partsupp customer orders lineitem; do
        for step in validate load-stage; do
            DATABASE_URL=$url "$bin" --log-format json "$step" --dataset "$t" >/dev/null 2>"$work/$step-$t.log" ||
                { tail -5 "$work/$step-$t.log" >&2; exit 1; }
        done
    done
    say "loaded in $(echo "$(date +%s.%N) - $start" | bc) s"
    psql "$url" -qc "ANALYZE"
fi
psql "$url" -qc "CREATE SCHEMA IF NOT EXISTS peer"
declare -A ours peers
for r in $(seq 1 "$rounds"); do
    # pipeline: every model, replaced whole
    DATABASE_URL=$url "$bin" --json transform >"$work/transform-$r.json" 2>"$work/transform-$r.log" ||
        { tail -5 "$work/transform-$r.log" >&2; }
    for q in "$work"/sql/mart/*.sql; do
        m=$(basename "$q" .sql)
        ms=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(next((x["duration_ms"] for x in d.get("models", []) if x["model"] == "mart."+sys.argv[2]), "-"))' "$work/transform-$r.json" "$m")
        ours[$m]="${ours[$m]:-} $ms"
        start=$(date +%s%N)
        psql "$url" -qc "DROP TABLE IF EXISTS peer.$m" -c "CREATE TABLE peer.$m AS $(cat "$q")" >/dev/null
        peers[$m]="${peers[$m]:-} $(( ($(date +%s%N) - start) / 1000000 ))"
    done
done
printf '%-5s %-12s %-22s %-22s %s\n' model ran_in "pipeline ms (rounds)" "postgres ms (rounds)" "equal rows"
for q in "$work"/sql/mart/*.sql; do
    m=$(basename "$q" .sql)
    ran=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(next((x.get("ran_in") or x["status"] for x in d.get("models", []) if x["model"] == "mart."+sys.argv[2]), "-"))' "$work/transform-$rounds.json" "$m")
    diff=$(psql "$url" -Atc "SELECT (SELECT count(*) FROM (SELECT * FROM mart.$m EXCEPT ALL SELECT * FROM peer.$m) a)
                                  + (SELECT count(*) FROM (SELECT * FROM peer.$m EXCEPT ALL SELECT * FROM mart.$m) b)" 2>&1 || echo "?")
    printf '%-5s %-12s %-22s %-22s %s\n' "$m" "$ran" "${ours[$m]}" "${peers[$m]}" "$([ "$diff" = 0 ] && echo yes || echo "no ($diff rows differ)")"
done
# The issue's reference: DuckDB's answers to the same SQL over the same files.
if python3 -c "import duckdb" 2>/dev/null; then
    say "each model's table against DuckDB's answer on the same CSV files"
    python3 "$here/duckdb_check.py" "$work/landed" "$work/sql/mart" "$url" || say "some models differ from DuckDB"
else
    say "no DuckDB (python3 -m pip install duckdb): not compared with it"
fi
