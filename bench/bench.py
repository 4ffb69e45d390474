#!/usr/bin/env python3
"""`make bench`: pipeline's stages side by side with DuckDB, psql \\copy and
PostgreSQL on the same input, each timed as a whole process with its peak RSS,
5 rounds alternating pipeline and peer; min and median to bench/results/<date>.md.

Shapes: narrow (8 columns, 1-column key, bench/gen.py), wide (19 columns,
7-column key, bench/gen_wide.py), and the narrow rows as typed Parquet.

load-stage: a period loaded into an empty period and replacing a loaded one,
beside psql \copy into an empty copy of the table and psql's DELETE + \copy;
the narrow rows as a full-refresh dataset replaced whole, beside psql \copy into
an empty copy; and the replace again on a busy machine (a busy loop per core),
with the default COPY streams and with PIPELINE_COPY_STREAMS=1.

Environment: BENCH_ROWS (default 3,000,000), BENCH_ROUNDS (default 5),
PIPELINE_BIN (default the release build), DATABASE_URL (default: the project's
local PostgreSQL).
"""
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / "work"
ROWS = int(os.environ.get("BENCH_ROWS", "3000000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BIN = os.environ.get("PIPELINE_BIN", str(TARGET / "release" / "pipeline"))
PERIOD = "2025-01"
COLS = "id, email, amount, qty, kind, created, seen_at, note, _data_period, _ingestion_id"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def measure(cmd, env=None, cwd=WORK, check=True):
    """Runs cmd; returns (seconds, peak RSS in MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if check and code not in (0, 99):
        sys.exit(f"bench: {' '.join(map(str, cmd))} exited {code}:\n{err[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def without_repeated_keys(src, dst, width):
    """Copies the CSV src to dst, giving a row whose first `width` fields repeat
    the previous row's key a fresh id (the generators' only repeated keys);
    returns how many were changed."""
    changed, previous = 0, None
    with open(src) as inp, open(dst, "w") as out:
        out.write(inp.readline())
        for n, line in enumerate(inp):
            fields = line.split(",", width)
            key = fields[:width]
            if key == previous:
                fields[0] = str(900_000_000 + n)
                key = fields[:width]
                changed += 1
            previous = key
            out.write(",".join(fields))
    return changed


def psql(url, sql, *extra):
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql, *extra], check=True, stdout=subprocess.PIPE)


def psql_value(url, sql):
    return subprocess.run(["psql", url, "-qAtc", sql], check=True, capture_output=True, text=True).stdout.strip()


def main():
    if not Path(BIN).exists():
        sys.exit(f"bench: {BIN} is missing; build it with `cargo build --release`")
    admin = os.environ.get("DATABASE_URL") or subprocess.run(
        [ROOT / "scripts/postgres.sh", "start"], check=True, capture_output=True, text=True
    ).stdout.strip()
    url = urlunparse(urlparse(admin)._replace(path="/pipeline_bench"))
    # Production durability for both sides: the test cluster runs with fsync and
    # synchronous_commit off, which nobody runs a stage database with.
    durable(admin, True)
    try:
        run(admin, url)
    finally:
        durable(admin, False)


def durable(admin, on):
    for setting in ("fsync", "synchronous_commit", "full_page_writes"):
        if on:
            psql(admin, f"ALTER SYSTEM SET {setting} = on")
        else:
            psql(admin, f"ALTER SYSTEM RESET {setting}")
    psql(admin, "SELECT pg_reload_conf()")
    shown = psql_value(admin, "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings "
                       "WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_level', 'shared_buffers')")
    log(f"PostgreSQL settings: {shown}")
    return shown


def run(admin, url):
    settings = psql_value(admin, "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings "
                          "WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_level', 'shared_buffers')")
    psql(admin, "DROP DATABASE IF EXISTS pipeline_bench WITH (FORCE)")
    psql(admin, "CREATE DATABASE pipeline_bench")
    env = dict(os.environ, DATABASE_URL=url, PIPELINE_LOG="warn")

    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "landed").mkdir(parents=True)
    shutil.copy(BENCH / "datasets_config.yml", WORK)
    shutil.copytree(BENCH / "sql", WORK / "sql")
    csv = WORK / "landed" / f"events_{PERIOD}.csv"
    log(f"generating {ROWS:,} rows")
    subprocess.run([sys.executable, BENCH / "gen.py", str(ROWS), csv, WORK / "landed" / "kinds.csv"], check=True)
    size_mb = csv.stat().st_size / 1e6
    wide = WORK / "landed" / f"trips_{PERIOD}.csv"
    log(f"generating {ROWS:,} wide rows")
    subprocess.run([sys.executable, BENCH / "gen_wide.py", str(ROWS), wide], check=True)
    wide_mb = wide.stat().st_size / 1e6
    # The narrow rows as a typed Parquet file, as a warehouse export would be
    # (values that do not fit their type become NULL).
    parquet = WORK / "landed" / f"events_pq_{PERIOD}.parquet"
    # In a child process: a fork of a large parent would count the parent's
    # memory in every later child's peak RSS.
    convert = f"""import duckdb; duckdb.connect().execute(\"\"\"COPY (
        SELECT TRY_CAST(id AS BIGINT) AS id, email, TRY_CAST(amount AS DOUBLE) AS amount,
               TRY_CAST(qty AS BIGINT) AS qty, kind, TRY_CAST(created AS DATE) AS created,
               TRY_STRPTIME(seen_at, '%Y-%m-%d %H:%M:%S') AS seen_at, note
          FROM read_csv('{csv}', all_varchar = true, header = true))
        TO '{parquet}' (FORMAT parquet)\"\"\")"""
    subprocess.run([sys.executable, "-c", convert], check=True)
    parquet_mb = parquet.stat().st_size / 1e6
    # The same file as a full-refresh dataset's (a hard link: no second copy).
    os.link(csv, WORK / "landed" / "events_whole.csv")
    # The same rows with each repeated key replaced by a fresh one (the generators
    # repeat the previous row's key in ~0.014% of the rows).
    once = {"events": WORK / "landed" / f"events-once_{PERIOD}.csv", "trips": WORK / "landed" / f"trips-once_{PERIOD}.csv"}
    once_fixed = {name: without_repeated_keys(src, once[name], width) for name, src, width in (("events", csv, 1), ("trips", wide, 7))}

    pl = [BIN, "--config", str(WORK / "datasets_config.yml")]
    for args in (["migrate"], ["ingest", "--all"], ["validate", "--dataset", "kinds"], ["load-stage", "--dataset", "kinds"]):
        measure(pl + args, env)

    results = {}

    def record(name, seconds, rss):
        results.setdefault(name, []).append((seconds, rss))

    validate = pl + ["validate", "--dataset", "events", "--period", PERIOD]
    load = pl + ["load-stage", "--dataset", "events", "--period", PERIOD]
    transform = pl + ["transform", "--period", PERIOD]
    duck = [sys.executable, BENCH / "duckdb_validate.py", str(csv), str(WORK)]
    validate_wide = pl + ["validate", "--dataset", "trips", "--period", PERIOD]
    duck_wide = [sys.executable, BENCH / "duckdb_validate_wide.py", str(wide), str(WORK)]
    validate_pq = pl + ["validate", "--dataset", "events_pq", "--period", PERIOD]
    duck_pq = [sys.executable, BENCH / "duckdb_validate.py", str(parquet), str(WORK)]
    validate_once = pl + ["validate", "--dataset", "events_once", "--period", PERIOD]
    duck_once = [sys.executable, BENCH / "duckdb_validate.py", str(once["events"]), str(WORK)]
    validate_wide_once = pl + ["validate", "--dataset", "trips_once", "--period", PERIOD]
    duck_wide_once = [sys.executable, BENCH / "duckdb_validate_wide.py", str(once["trips"]), str(WORK)]
    valid_csv = WORK / "valid.csv"
    validate_whole = pl + ["validate", "--dataset", "events_whole"]
    load_whole = pl + ["load-stage", "--dataset", "events_whole"]
    valid_whole = WORK / "valid_whole.csv"

    # Warm up and create what the peers mirror.
    measure(validate_wide, env)
    measure(validate_pq, env)
    measure(validate_once, env)
    measure(validate_wide_once, env)
    measure(validate, env)
    measure(load, env)
    measure(transform, env)
    measure(validate_whole, env)
    measure(load_whole, env)
    whole_cols = COLS.replace(", _data_period", "")
    psql(url, f"\\copy (SELECT {whole_cols} FROM stage.events_whole) TO '{valid_whole}' CSV")
    psql(url, "CREATE TABLE public.whole_peer (LIKE stage.events_whole INCLUDING DEFAULTS)")
    whole_copy = f"\\copy public.whole_peer ({whole_cols}) FROM '{valid_whole}' CSV"
    loaded = int(psql_value(url, f"SELECT count(*) FROM stage.events WHERE _data_period = '{PERIOD}'"))
    psql(url, f"\\copy (SELECT {COLS} FROM stage.events) TO '{valid_csv}' CSV")
    # The peer's table is what a stage table was before partitions: plain, with
    # the _data_period index that makes its DELETE of the period cheap.
    psql(url, "CREATE TABLE public.copy_peer (LIKE stage.events INCLUDING DEFAULTS)")
    psql(url, "CREATE INDEX ON public.copy_peer (_data_period)")
    psql(url, "CREATE TABLE public.mart_peer (LIKE mart.events_by_kind INCLUDING ALL)")
    copy_sql = f"\\copy public.copy_peer ({COLS}) FROM '{valid_csv}' CSV"
    replace_script = WORK / "replace.sql"
    replace_script.write_text(f"DELETE FROM public.copy_peer WHERE _data_period = '{PERIOD}';\n{copy_sql}\n")
    native = WORK / "native.sql"
    native.write_text(
        f"DELETE FROM public.mart_peer WHERE _data_period = '{PERIOD}';\n"
        "INSERT INTO public.mart_peer (label, created, events, amount, weighted_qty, _data_period)\n"
        "SELECT k.label, e.created, count(*), sum(e.amount), sum(e.qty * k.weight), "
        f"'{PERIOD}' FROM stage.events e JOIN stage.kinds k ON k.kind = e.kind\n"
        f"WHERE e._data_period = '{PERIOD}' GROUP BY k.label, e.created;\n"
    )

    for r in range(ROUNDS):
        log(f"round {r + 1}/{ROUNDS}")
        record("validate", *measure(validate, env))
        record("validate:duckdb", *measure(duck))
        record("validate (wide)", *measure(validate_wide, env))
        record("validate (wide):duckdb", *measure(duck_wide))
        record("validate (Parquet)", *measure(validate_pq, env))
        record("validate (Parquet):duckdb", *measure(duck_pq))
        record("validate (no repeated key)", *measure(validate_once, env))
        record("validate (no repeated key):duckdb", *measure(duck_once))
        record("validate (wide, no repeated key)", *measure(validate_wide_once, env))
        record("validate (wide, no repeated key):duckdb", *measure(duck_wide_once))
        psql(url, "TRUNCATE stage.events")
        record("load-stage (empty period)", *measure(load, env))
        psql(url, "TRUNCATE public.copy_peer")
        record("load-stage (empty period):psql \\copy", *measure(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", copy_sql]))
        record("load-stage (replace period)", *measure(load, env))
        record("load-stage (replace period):psql \\copy", *measure(["psql", url, "-v", "ON_ERROR_STOP=1", "-1", "-qf", str(replace_script)]))
        # The first reader of freshly loaded rows sets their hint bits (and
        # writes those pages): vacuumed first, neither side pays it for the other.
        psql(url, "VACUUM stage.events")
        record("load-stage (full refresh)", *measure(load_whole, env))
        psql(url, "TRUNCATE public.whole_peer")
        record("load-stage (full refresh):psql \\copy", *measure(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", whole_copy]))
        record("transform", *measure(transform, env))
        record("transform:postgres INSERT…SELECT", *measure(["psql", url, "-v", "ON_ERROR_STOP=1", "-1", "-qf", str(native)]))

    # A busy machine: a busy loop on every core while the replace runs, with
    # the default COPY streams and with one.
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        one_stream = dict(env, PIPELINE_COPY_STREAMS="1")
        for _ in range(ROUNDS):
            record("load-stage (replace period, busy)", *measure(load, env))
            record("load-stage (replace period, busy, 1 stream)", *measure(load, one_stream))
            record("load-stage (replace period, busy):psql \\copy", *measure(["psql", url, "-v", "ON_ERROR_STOP=1", "-1", "-qf", str(replace_script)]))
    finally:
        for b in busy:
            b.kill()

    # Where a loaded period's replace spends its time on the server, the same
    # work for both sides: the DELETE (with the WAL it writes; rolled back) and
    # the peer's \copy into the table with and without its _data_period index.
    explain = subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", "BEGIN",
         "-c", f"EXPLAIN (ANALYZE, WAL, FORMAT JSON) DELETE FROM public.copy_peer WHERE _data_period = '{PERIOD}'",
         "-c", "ROLLBACK"],
        check=True, capture_output=True, text=True).stdout
    delete_plan = json.loads(explain)[0]
    psql(url, "CREATE TABLE public.copy_noidx (LIKE stage.events INCLUDING DEFAULTS)")
    copy_times = {"with": [], "without": []}
    for _ in range(2):
        for which, table in (("with", "public.copy_peer"), ("without", "public.copy_noidx")):
            psql(url, f"TRUNCATE {table}")
            sql = copy_sql.replace("public.copy_peer", table)
            copy_times[which].append(measure(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", sql])[0])
    server = {
        "delete_s": delete_plan["Execution Time"] / 1000,
        "wal_records": delete_plan["Plan"].get("WAL Records", 0),
        "wal_fpi": delete_plan["Plan"].get("WAL FPI", 0),
        "wal_mb": delete_plan["Plan"].get("WAL Bytes", 0) / 1e6,
        "copy_s": min(copy_times["with"]),
        "copy_noidx_s": min(copy_times["without"]),
    }

    # Memory against file size: validate a quarter of the file too.
    quarter = WORK / "landed" / f"events_{PERIOD[:5]}02.csv"
    with open(csv) as src, open(quarter, "w") as dst:
        for i, line in enumerate(src):
            if i > ROWS // 4:
                break
            dst.write(line)
    measure(pl + ["ingest", "--all"], env, check=False)
    small = measure(pl + ["validate", "--dataset", "events", "--period", PERIOD[:5] + "02"], env)

    # The integrity issue's worst case for the uniqueness check: every key ten times.
    # 300,000 duplicated keys: collected within half the pool, each row looked up.
    dups = WORK / "landed" / f"events_{PERIOD[:5]}03.csv"
    with open(csv) as src, open(dups, "w") as dst:
        for i, line in enumerate(src):
            if i == 0:
                dst.write(line)
                continue
            _, rest = line.split(",", 1)
            dst.write(f"{(i - 1) // 10},{rest}")
    measure(pl + ["ingest", "--all"], env, check=False)
    dup_validate = pl + ["--json", "validate", "--dataset", "events", "--period", PERIOD[:5] + "03"]
    for _ in range(ROUNDS):
        record("validate (every key ×10)", *measure(dup_validate, env, check=False))
    dup_check = json.loads(subprocess.run(dup_validate, cwd=WORK, env=env, capture_output=True, text=True).stdout)

    med = {k: (statistics.median(s for s, _ in v), statistics.median(m for _, m in v)) for k, v in results.items()}
    low = {k: min(s for s, _ in v) for k, v in results.items()}
    rows_for = {
        "validate": ROWS,
        "validate (wide)": ROWS,
        "validate (Parquet)": ROWS,
        "validate (no repeated key)": ROWS,
        "validate (wide, no repeated key)": ROWS,
        "load-stage (empty period)": loaded,
        "load-stage (replace period)": loaded,
        "load-stage (full refresh)": loaded,
        "load-stage (replace period, busy)": loaded,
        "load-stage (replace period, busy, 1 stream)": loaded,
        "transform": loaded,
    }
    # Issue 51's targets: validate at 0.45x DuckDB, loads at 0.5x psql \copy
    # (a busy machine: never slower than it).
    targets = {
        "validate": 0.45,
        "validate (wide)": 0.45,
        "validate (Parquet)": 0.45,
        "validate (no repeated key)": 0.45,
        "validate (wide, no repeated key)": 0.45,
        "load-stage (empty period)": 0.5,
        "load-stage (replace period)": 0.5,
        "load-stage (full refresh)": 0.5,
        "load-stage (replace period, busy)": 1.0,
        "load-stage (replace period, busy, 1 stream)": 1.0,
        "transform": 1.5,
    }
    # Peers other than the stage's own: a replace beside \copy into an empty
    # copy of the table (nothing to delete), and the busy single-stream run
    # beside the same busy psql.
    peers = {
        "load-stage (replace period, busy, 1 stream)": "load-stage (replace period, busy):psql \\copy",
    }
    extra = [("load-stage (replace period)", "load-stage (empty period):psql \\copy", "psql \\copy into an empty copy", 0.5)]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    lines = [
        f"# Benchmark {date.today().isoformat()}",
        "",
        f"{ROWS:,} rows each: narrow {size_mb:.0f} MB CSV (8 columns, 1-column key, ~0.1% bad values over 7 rules),",
        f"wide {wide_mb:.0f} MB CSV (19 columns, 7-column key), the narrow rows as {parquet_mb:.0f} MB typed Parquet,",
        f"and the \"no repeated key\" shapes: the same CSVs with each repeated key ({once_fixed['events']:,} narrow, "
        f"{once_fixed['trips']:,} wide) replaced by a fresh one, validated in one read (duplicate_check in_pass)",
        "where the others take a key-only pre-pass first (pre_pass);",
        f"{loaded:,} valid rows loaded. {os.cpu_count()} cores ({cpu}), {ROUNDS} rounds alternating",
        "pipeline and peer; medians (min in brackets). Reproduce: `make bench` (BENCH_ROWS, BENCH_ROUNDS).",
        f"Binary {BIN}; PostgreSQL from scripts/postgres.sh with production durability for both",
        f"sides ({settings}).",
        "",
        "| stage | pipeline s | rows/s | peak RSS MiB | peer | peer s | peer RSS MiB | ratio | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows_of = [(stage, peers.get(stage) or next(k for k in med if k.startswith(stage + ":")), None, targets[stage])
               for stage in rows_for]
    for stage, peer, named, target in rows_of + extra:
        s, m = med[stage]
        ps, pm = med[peer]
        ratio = s / ps
        ok = "ok" if ratio <= target else "MISSED"
        lines.append(
            f"| {stage} | {s:.2f} ({low[stage]:.2f}) | {rows_for[stage] / s:,.0f} | {m:.0f} | {named or peer.split(':', 1)[1]} "
            f"| {ps:.2f} ({low[peer]:.2f}) | {pm:.0f} | {ratio:.2f} | ≤ {target} {ok} |"
        )
    lines += [
        "",
        f"validate peak RSS: {small[1]:.0f} MiB for {ROWS // 4:,} rows, {med['validate'][1]:.0f} MiB for {ROWS:,} rows.",
        "",
        f"Every key repeated ten times ({ROWS:,} rows, duplicate_check = {dup_check.get('duplicate_check')}, "
        f"{dup_check.get('rows_rejected'):,} rows rejected): {med['validate (every key ×10)'][0]:.2f} s, "
        f"peak RSS {med['validate (every key ×10)'][1]:.0f} MiB.",
        "",
        f"Where a loaded period's replace spends its server time (the same for both sides; psql, "
        f"best of 2): the DELETE of {loaded:,} rows {server['delete_s']:.2f} s, writing "
        f"{server['wal_mb']:.0f} MB of WAL ({server['wal_records']:,} records, {server['wal_fpi']:,} "
        f"full-page images); `\\copy` into the table {server['copy_s']:.2f} s, "
        f"{server['copy_noidx_s']:.2f} s into a copy without its `_data_period` index (the index is "
        f"{1 - server['copy_noidx_s'] / server['copy_s']:.0%} of the copy).",
        "",
        "Raw runs (seconds, MiB):",
        "",
    ]
    for k, v in results.items():
        lines.append(f"- {k}: " + ", ".join(f"{s:.2f}s/{m:.0f}" for s, m in v))
    report = "\n".join(lines) + "\n"
    # A day's earlier results stay: later runs of the day get -2, -3, ...
    out = BENCH / "results" / f"{date.today().isoformat()}.md"
    n = 1
    while out.exists():
        n += 1
        out = BENCH / "results" / f"{date.today().isoformat()}-{n}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(report)
    print(report)
    log(f"written to {out}")


if __name__ == "__main__":
    main()
