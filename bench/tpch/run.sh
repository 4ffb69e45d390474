#!/usr/bin/env bash
# TPC-H at scale factor SF (default 1), the transform shape of `make bench`: the
# eight tables loaded as `period: none` datasets (ingest, validate, load-stage),
# then the 21 single-statement TPC-H queries of sql/mart run by `pipeline
# transform` (DataFusion over the lake, rows copied into PostgreSQL), beside:
# PostgreSQL running the same SQL itself (CREATE TABLE AS into schema peer, each
# statement cancelled after PG_TIMEOUT, default 120 s), plain DataFusion over the
# lake's Parquet files (examples/tpch_datafusion.rs) and DuckDB over the same
# files (duckdb_times.py); ROUNDS rounds (default 2). Each model's result is
# compared with DuckDB's answer over the CSV files (duckdb_check.py). Prints the
# ratios the issue asks for: pipeline / PostgreSQL summed over the queries
# PostgreSQL finishes, and pipeline / DataFusion alone over all. Data from
# tpchgen-cli (PyPI), kept in WORK between runs. SKIP_PG=1 leaves PostgreSQL's
# own timings out (they do not change with the pipeline; 7 minutes a round).
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

# The same PostgreSQL settings as `make bench`: production durability (the test
# cluster runs with fsync and synchronous_commit off), put back on exit.
durable() {
    for setting in fsync synchronous_commit full_page_writes; do
        if [ "$1" = on ]; then psql "$admin" -qc "ALTER SYSTEM SET $setting = on"
        else psql "$admin" -qc "ALTER SYSTEM RESET $setting"; fi
    done
    psql "$admin" -qAtc "SELECT pg_reload_conf()" >/dev/null
}
durable on
trap 'durable off' EXIT
settings=$(psql "$admin" -qAtc "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_level', 'shared_buffers')")
say "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB"
say "PostgreSQL settings (as make bench): $settings"
say "command: SF=$sf ROUNDS=$rounds bench/tpch/run.sh (binary $bin)"

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
timeout_ms=$(( ${PG_TIMEOUT:-120} * 1000 ))
declare -A ours peers rss
for r in $(seq 1 "$rounds"); do
    # pipeline: every model, replaced whole (peak RSS of the whole transform)
    /usr/bin/time -f "%M" -o "$work/rss-$r" env DATABASE_URL=$url "$bin" --json transform \
        >"$work/transform-$r.json" 2>"$work/transform-$r.log" || { tail -5 "$work/transform-$r.log" >&2; }
    rss[$r]=$(( $(tail -1 "$work/rss-$r") / 1024 ))
    for q in "$work"/sql/mart/*.sql; do
        m=$(basename "$q" .sql)
        ms=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(next((x["duration_ms"] for x in d.get("models", []) if x["model"] == "mart."+sys.argv[2] and x["status"] == "done"), "-"))' "$work/transform-$r.json" "$m")
        ours[$m]="${ours[$m]:-} $ms"
        start=$(date +%s%N)
        if [ "${SKIP_PG:-0}" = 1 ]; then
            peers[$m]="${peers[$m]:-} -"
        elif psql "$url" -qc "SET statement_timeout = $timeout_ms" -c "DROP TABLE IF EXISTS peer.$m" \
                -c "CREATE TABLE peer.$m AS $(cat "$q")" >/dev/null 2>&1; then
            peers[$m]="${peers[$m]:-} $(( ($(date +%s%N) - start) / 1000000 ))"
        else
            peers[$m]="${peers[$m]:-} -"
        fi
    done
done
say "DataFusion alone and DuckDB over the lake's Parquet files"
df_bin=${DF_BIN:-${CARGO_TARGET_DIR:-$here/../../target}/release/examples/tpch_datafusion}
declare -A alone duck
if [ -x "$df_bin" ]; then
    for r in $(seq 1 "$rounds"); do
        while read -r m ms _; do alone[$m]="${alone[$m]:-} $ms"; done < <("$df_bin" "$work/stage/cleaned" "$work/sql/mart")
    done
else
    say "no $df_bin (cargo build --release --example tpch_datafusion): DataFusion alone not measured"
fi
if python3 -c "import duckdb" 2>/dev/null; then
    while read -r m ms _; do duck[$m]=$ms; done < <(ROUNDS=$rounds python3 "$here/duckdb_times.py" "$work/stage/cleaned" "$work/sql/mart")
fi
best() { tr ' ' '\n' | { grep -E '^[0-9]+$' || true; } | sort -n | head -1; }
printf '%-5s %-8s %-18s %-18s %-14s %-8s\n' model status "pipeline ms" "postgres ms" "datafusion ms" "duckdb"
sum_ours=0; sum_pg=0; sum_ours_all=0; sum_df=0
for q in "$work"/sql/mart/*.sql; do
    m=$(basename "$q" .sql)
    st=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(next((x["status"] for x in d.get("models", []) if x["model"] == "mart."+sys.argv[2]), "-"))' "$work/transform-$rounds.json" "$m")
    o=$(echo "${ours[$m]}" | best); p=$(echo "${peers[$m]}" | best); a=$(echo "${alone[$m]:-}" | best)
    printf '%-5s %-8s %-18s %-18s %-14s %-8s\n' "$m" "$st" "${ours[$m]}" "${peers[$m]}" "${alone[$m]:-}" "${duck[$m]:--}"
    if [ -n "$o" ]; then
        sum_ours_all=$((sum_ours_all + o))
        [ -n "$a" ] && sum_df=$((sum_df + a))
        if [ -n "$p" ]; then sum_ours=$((sum_ours + o)); sum_pg=$((sum_pg + p)); fi
    fi
done
say "peak RSS of transform per round (MiB): ${rss[*]}"
[ "$sum_pg" -gt 0 ] && say "pipeline / PostgreSQL over the queries PostgreSQL finished, sums of bests: $sum_ours / $sum_pg ms = $(echo "scale=3; $sum_ours / $sum_pg" | bc)"
[ "$sum_df" -gt 0 ] && say "pipeline / DataFusion alone over all, sums of bests: $sum_ours_all / $sum_df ms = $(echo "scale=3; $sum_ours_all / $sum_df" | bc)"
# The same ratios round by round (each round runs the pipeline, then each query
# in PostgreSQL, alternating), as make bench states them: median and min.
for q in "$work"/sql/mart/*.sql; do
    m=$(basename "$q" .sql)
    echo "$m|${ours[$m]}|${peers[$m]}|${alone[$m]:-}"
done | python3 "$here/ratios.py" | while read -r line; do say "$line"; done
# The issue's reference: DuckDB's answers to the same SQL over the same files.
if python3 -c "import duckdb" 2>/dev/null; then
    say "each model's table against DuckDB's answer on the same CSV files"
    python3 "$here/duckdb_check.py" "$work/landed" "$work/sql/mart" "$url" || say "some models differ from DuckDB"
else
    say "no DuckDB (python3 -m pip install duckdb): not compared with it"
fi
