#!/usr/bin/env python3
"""`make bench-rule-edit`: what a one-line rule edit costs (#49).

Twelve monthly periods of BENCH_ROWS rows each (default 300,000) are run
once; then a rule is relaxed that rejected rows in one month only (its
`allowed` list gains the value only that month delivered). `run --from --to`
over the twelve after the edit is timed against a full re-validation of the
twelve (the first run: ingest, validate, load), and the rows it moved and
the loads it rewrote are counted; then the rule is tightened back and timed
the same way. Results to bench/results/<date>-rule-edit.md.

Environment: BENCH_ROWS, PIPELINE_BIN (default the release build),
DATABASE_URL (default: the project's local PostgreSQL; a database
`bench_rule_edit` is made there).
"""
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work" / "rule_edit"
ROWS = int(os.environ.get("BENCH_ROWS", "300000"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BIN = os.environ.get("PIPELINE_BIN", str(TARGET / "release" / "pipeline"))
MONTHS = [f"2013-{m:02d}" for m in range(1, 13)]

CONFIG = """version: 1
landed_dir: landed
stage_dir: stage
datasets:
  flights:
    file_pattern: '^flights_(?P<period>\\d{{4}}-\\d{{2}})\\.csv$'
    period: month
    primary_key: [id]
    min_quality_score: 0
    columns:
      id:        {{ type: int, required: true }}
      origin:    {{ type: string, allowed: [{allowed}] }}
      carrier:   {{ type: string, regex: '^[A-Z0-9]{{2}}$' }}
      dep_delay: {{ type: float, min: -120, max: 2000 }}
      flown:     {{ type: date }}
"""


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def run(args, env):
    start = time.perf_counter()
    proc = subprocess.run([BIN, *args], cwd=WORK, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode not in (0, 99):
        sys.exit(f"bench: {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return took, proc


def psql(url, sql):
    out = subprocess.run(["psql", url, "-At", "-c", sql], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def main():
    base = os.environ.get("DATABASE_URL") or subprocess.run(
        [str(ROOT / "scripts" / "postgres.sh"), "start"], capture_output=True, text=True, check=True
    ).stdout.strip()
    u = urlparse(base)
    admin = urlunparse(u._replace(path="/postgres"))
    url = urlunparse(u._replace(path="/bench_rule_edit"))
    psql(admin, "DROP DATABASE IF EXISTS bench_rule_edit")
    psql(admin, "CREATE DATABASE bench_rule_edit")
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "landed").mkdir(parents=True)
    (WORK / "datasets_config.yml").write_text(CONFIG.format(allowed="JFK, LGA, EWR"))
    rng = random.Random(7)
    log(f"writing 12 months of {ROWS:,} rows")
    for n, month in enumerate(MONTHS):
        with open(WORK / "landed" / f"flights_{month}.csv", "w") as f:
            f.write("id,origin,carrier,dep_delay,flown\n")
            for i in range(ROWS):
                # May alone delivers SFO, in 1 row of 100: rejected by `allowed`.
                origin = "SFO" if month == "2013-05" and i % 100 == 0 else ("JFK", "LGA", "EWR")[i % 3]
                delay = rng.randint(-30, 300)
                f.write(f"{n * ROWS + i},{origin},{'AA' if i % 2 else 'B6'},{delay},{month}-{1 + i % 28:02d}\n")
    env = dict(os.environ, DATABASE_URL=url, PIPELINE_LOG="warn")
    run(["migrate"], env)
    full, _ = run(["run", "--from", MONTHS[0], "--to", MONTHS[-1]], env)
    loads_before = psql(url, "SELECT count(*) FROM meta.load_log WHERE status = 'loaded'")
    (WORK / "datasets_config.yml").write_text(CONFIG.format(allowed="JFK, LGA, EWR, SFO"))
    plan, planned = run(["--json", "run", "--plan", "--from", MONTHS[0], "--to", MONTHS[-1]], env)
    edit, _ = run(["run", "--from", MONTHS[0], "--to", MONTHS[-1]], env)
    loads_after = psql(url, "SELECT count(*) FROM meta.load_log WHERE status = 'loaded'")
    rejudged = psql(url, "SELECT count(*) FROM meta.validation_log WHERE kept_from IS NOT NULL")
    may = psql(url, "SELECT count(*) FROM stage.flights WHERE _data_period = '2013-05'")
    amended = psql(url, "SELECT count(*) FROM meta.validation_log WHERE amended_from IS NOT NULL")
    appended = psql(url, "SELECT coalesce(sum(rows_appended), 0) FROM meta.load_log")
    ratio = edit / full
    # Tightened back: SFO leaves `allowed`, so May's SFO rows leave stage again.
    (WORK / "datasets_config.yml").write_text(CONFIG.format(allowed="JFK, LGA, EWR"))
    tighten_plan, _ = run(["--json", "run", "--plan", "--from", MONTHS[0], "--to", MONTHS[-1]], env)
    tighten, _ = run(["run", "--from", MONTHS[0], "--to", MONTHS[-1]], env)
    withdrawn = psql(url, "SELECT coalesce(sum(rows_withdrawn), 0) FROM meta.validation_log")
    may_after = psql(url, "SELECT count(*) FROM stage.flights WHERE _data_period = '2013-05'")
    loads_tightened = psql(url, "SELECT count(*) FROM meta.load_log WHERE status = 'loaded'")
    lines = [
        f"# Rule edit, {date.today()}: one relaxed rule touching one month of twelve",
        "",
        f"12 monthly periods of {ROWS:,} rows (id, origin, carrier, dep_delay, flown; 1 % of May's "
        "rows from SFO, which `allowed` rejects). Then `allowed` gains SFO. Release build, "
        f"{os.cpu_count()} cores, the project's PostgreSQL.",
        "",
        "| step | seconds |",
        "|---|---|",
        f"| first run of the twelve (ingest, validate, load) | {full:.2f} |",
        f"| `run --plan` after the edit (judges each period's kept rows) | {plan:.2f} |",
        f"| `run` after the edit | {edit:.2f} |",
        "",
        f"The run after the edit took {ratio:.1%} of the first run's time (target: ≤ 10 % of a full "
        f"re-validation). Loads: {loads_before} before, {loads_after} after; "
        f"{rejudged} period(s) re-judged without a rewrite; {amended} verdict(s) amended (their "
        f"quarantined rows judged again, the file not read) and {appended} row(s) appended to stage; "
        f"May holds {may} rows.",
        "",
        "Then the rule is tightened back (SFO leaves `allowed`): May's cleaned rows that the rule "
        "now rejects are found by their `origin` alone and judged with its quarantined rows; the "
        "file is not read, May's other cleaned rows are copied into the rewritten Delta period, and "
        "the withdrawn rows are deleted from May's stage partition by key.",
        "",
        "| step | seconds |",
        "|---|---|",
        f"| `run --plan` after the tightening | {tighten_plan:.2f} |",
        f"| `run` after the tightening | {tighten:.2f} |",
        "",
        f"{tighten / full:.1%} of the first run's time. {withdrawn} row(s) withdrawn to quarantine; "
        f"loads: {loads_tightened} in all; May holds {may_after} rows.",
    ]
    out = ROOT / "bench" / "results" / f"{date.today()}-rule-edit.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
