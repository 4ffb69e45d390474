#!/usr/bin/env python3
"""`make bench-curves`: how validate and load-stage grow with the file.

Generates the narrow shape (bench/gen.py) at 0.3 M, 3 M, 10 M and 30 M rows,
validates each (time and peak RSS of the whole process) and loads 0.3 M, 3 M and
10 M rows into stage with PostgreSQL at production durability (fsync,
synchronous_commit and full_page_writes on). Writes the numbers as a table and a
plot (SVG, drawn here: no plotting library) to bench/results/<date>-curves.md/.svg.

Environment: CURVE_ROWS (default "300000,3000000,10000000,30000000"),
CURVE_LOAD_MAX (largest row count also loaded, default 10000000), CURVE_ROUNDS
(default 1), PIPELINE_BIN, DATABASE_URL as for bench/bench.py.
"""
import os
import shutil
import statistics
import subprocess
import sys
from datetime import date
from pathlib import Path
from urllib.parse import urlparse, urlunparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (measure, psql, durable, BIN, ROOT)

SIZES = [int(n) for n in os.environ.get("CURVE_ROWS", "300000,3000000,10000000,30000000").split(",")]
LOAD_MAX = int(os.environ.get("CURVE_LOAD_MAX", "10000000"))
ROUNDS = int(os.environ.get("CURVE_ROUNDS", "1"))
WORK = bench.BENCH / "work-curves"
CONFIG = """version: 1
landed_dir: landed
stage_dir: stage
datasets:
  events:
    file_pattern: '^events_(?P<period>\\d{4}-\\d{2})\\.csv$'
    period: month
    primary_key: [id]
    min_quality_score: 0
    columns: &columns
      id:      { type: int, required: true }
      email:   { type: string, regex: '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$' }
      amount:  { type: float, min: 0 }
      qty:     { type: int, min: 0 }
      kind:    { type: string, allowed: [click, view, buy, share, like] }
      created: { type: date }
      seen_at: { type: timestamp, format: '%Y-%m-%d %H:%M:%S' }
      note:    { type: string }
  # The same files with each repeated key replaced by a fresh one: read once.
  events_once:
    file_pattern: '^events-once_(?P<period>\\d{4}-\\d{2})\\.csv$'
    period: month
    primary_key: [id]
    min_quality_score: 0
    columns: *columns
"""


def period_of(i):
    return f"2024-{i + 1:02d}"


def main():
    if not Path(bench.BIN).exists():
        sys.exit(f"curves: {bench.BIN} is missing; build it with `cargo build --release`")
    admin = os.environ.get("DATABASE_URL") or subprocess.run(
        [bench.ROOT / "scripts/postgres.sh", "start"], check=True, capture_output=True, text=True
    ).stdout.strip()
    url = urlunparse(urlparse(admin)._replace(path="/pipeline_curves"))
    settings = bench.durable(admin, True)
    try:
        points = run(admin, url)
    finally:
        bench.durable(admin, False)
    write(points, settings)


def run(admin, url):
    bench.psql(admin, "DROP DATABASE IF EXISTS pipeline_curves WITH (FORCE)")
    bench.psql(admin, "CREATE DATABASE pipeline_curves")
    env = dict(os.environ, DATABASE_URL=url, PIPELINE_LOG="warn")
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "landed").mkdir(parents=True)
    (WORK / "datasets_config.yml").write_text(CONFIG)
    pl = [bench.BIN, "--config", str(WORK / "datasets_config.yml")]
    bench.measure(pl + ["migrate"], env, cwd=WORK)
    points = []
    for i, rows in enumerate(SIZES):
        period = period_of(i)
        csv = WORK / "landed" / f"events_{period}.csv"
        bench.log(f"generating {rows:,} rows")
        subprocess.run([sys.executable, bench.BENCH / "gen.py", str(rows), csv, WORK / "kinds.csv"], check=True)
        bench.measure(pl + ["ingest", "--file-path", csv.name], env, cwd=WORK)
        validate = pl + ["validate", "--dataset", "events", "--period", period]
        runs = [bench.measure(validate, env, cwd=WORK) for _ in range(ROUNDS)]
        point = {
            "rows": rows,
            "mb": csv.stat().st_size / 1e6,
            "validate_s": statistics.median(s for s, _ in runs),
            "validate_min": min(s for s, _ in runs),
            "validate_mib": statistics.median(m for _, m in runs),
        }
        bench.log(f"validate {rows:,}: {point['validate_s']:.2f} s, {point['validate_mib']:.0f} MiB")
        once = WORK / "landed" / f"events-once_{period}.csv"
        bench.without_repeated_keys(csv, once, 1)
        bench.measure(pl + ["ingest", "--file-path", once.name], env, cwd=WORK)
        validate = pl + ["validate", "--dataset", "events_once", "--period", period]
        runs = [bench.measure(validate, env, cwd=WORK) for _ in range(ROUNDS)]
        point["once_s"] = statistics.median(s for s, _ in runs)
        point["once_min"] = min(s for s, _ in runs)
        point["once_mib"] = statistics.median(m for _, m in runs)
        once.unlink()
        bench.log(f"validate once {rows:,}: {point['once_s']:.2f} s, {point['once_mib']:.0f} MiB")
        if rows <= LOAD_MAX:
            load = pl + ["load-stage", "--dataset", "events", "--period", period]
            loads = [bench.measure(load, env, cwd=WORK) for _ in range(ROUNDS)]
            point["load_s"] = statistics.median(s for s, _ in loads)
            point["load_min"] = min(s for s, _ in loads)
            point["load_mib"] = statistics.median(m for _, m in loads)
            point["loaded"] = int(bench.psql_value(url, f"SELECT count(*) FROM stage.events WHERE _data_period = '{period}'"))
            bench.log(f"load {point['loaded']:,}: {point['load_s']:.2f} s, {point['load_mib']:.0f} MiB")
        points.append(point)
        csv.unlink()  # the next size needs the disk
    return points


def svg(points):
    """Two panels side by side: seconds against rows, peak RSS against rows."""
    w, h, pad = 420, 300, 55
    max_rows = max(p["rows"] for p in points)

    def panel(x0, title, series, unit):
        top = max(v for _, pts in series for _, v in pts) * 1.1 or 1
        sx = lambda r: x0 + pad + (w - 2 * pad) * r / max_rows
        sy = lambda v: h - pad + 10 - (h - 2 * pad) * v / top
        out = [f'<text x="{x0 + w / 2}" y="20" text-anchor="middle" font-weight="bold">{title}</text>',
               f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(max_rows)}" y2="{sy(0)}" stroke="#444"/>',
               f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(0)}" y2="{sy(top)}" stroke="#444"/>',
               f'<text x="{x0 + w / 2}" y="{h - 5}" text-anchor="middle">rows (millions)</text>',
               f'<text x="{x0 + 14}" y="{h / 2}" transform="rotate(-90 {x0 + 14} {h / 2})" text-anchor="middle">{unit}</text>']
        for k in range(5):
            v = top * k / 4
            out.append(f'<text x="{sx(0) - 6}" y="{sy(v) + 4}" text-anchor="end" font-size="11">{v:.0f}</text>')
        for p in points:
            out.append(f'<text x="{sx(p["rows"])}" y="{sy(0) + 16}" text-anchor="middle" font-size="11">{p["rows"] / 1e6:g}</text>')
        for (name, pts), colour in zip(series, ["#1f77b4", "#2ca02c", "#d62728"]):
            path = " ".join(f"{sx(r):.1f},{sy(v):.1f}" for r, v in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
            out += [f'<circle cx="{sx(r):.1f}" cy="{sy(v):.1f}" r="3" fill="{colour}"/>' for r, v in pts]
            lx, ly = sx(pts[-1][0]) - 4, sy(pts[-1][1]) - 8
            out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="end" font-size="12" fill="{colour}">{name}</text>')
        return out

    time = [("validate", [(p["rows"], p["validate_s"]) for p in points]),
            ("validate, keys unique", [(p["rows"], p["once_s"]) for p in points]),
            ("load-stage", [(p["rows"], p["load_s"]) for p in points if "load_s" in p])]
    mem = [("validate", [(p["rows"], p["validate_mib"]) for p in points]),
           ("validate, keys unique", [(p["rows"], p["once_mib"]) for p in points]),
           ("load-stage", [(p["rows"], p["load_mib"]) for p in points if "load_mib" in p])]
    body = panel(0, "time", time, "seconds") + panel(w, "peak RSS", mem, "MiB")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w}" height="{h}" '
            f'font-family="sans-serif" font-size="13">\n<rect width="100%" height="100%" fill="white"/>\n'
            + "\n".join(body) + "\n</svg>\n")


def write(points, settings):
    # A day's earlier curves stay: later runs of the day get -2, -3, ...
    stem, n = f"{date.today().isoformat()}-curves", 1
    while (bench.BENCH / "results" / f"{stem}.md").exists():
        n += 1
        stem = f"{date.today().isoformat()}-curves-{n}"
    out_md = bench.BENCH / "results" / f"{stem}.md"
    out_svg = bench.BENCH / "results" / f"{stem}.svg"
    out_svg.write_text(svg(points))
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
    first = points[0]
    lines = [
        f"# Curves {date.today().isoformat()}",
        "",
        f"The narrow shape (bench/gen.py: 8 columns, 1-column key, ~0.1% bad values) at each size;",
        f"{os.cpu_count()} cores ({cpu}); {ROUNDS} run(s) per point (median, min in brackets). Binary {bench.BIN}.",
        f"PostgreSQL from scripts/postgres.sh at production durability ({settings}).",
        "Reproduce: `make bench-curves` (CURVE_ROWS, CURVE_LOAD_MAX, CURVE_ROUNDS). Commands per size:",
        "`pipeline ingest --file-path events_<P>.csv`, `pipeline validate --dataset events --period <P>`,",
        "`pipeline load-stage --dataset events --period <P>` (a new, empty period each time).",
        "\"keys unique\": the same file with each repeated key replaced by a fresh one",
        "(`pipeline validate --dataset events_once`), read once (duplicate_check in_pass); the",
        "file with its repeated keys takes the key-only pre-pass first (pre_pass).",
        "",
        f"![time and peak RSS against rows]({stem}.svg)",
        "",
        "| rows | CSV MB | validate s | rows/s | s per M rows (vs first) | validate peak RSS MiB | keys unique: validate s | s per M rows | peak RSS MiB | load-stage s | rows loaded/s | load peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    per_m0 = first["validate_s"] / (first["rows"] / 1e6)
    for p in points:
        per_m = p["validate_s"] / (p["rows"] / 1e6)
        load = (f"{p['load_s']:.2f} ({p['load_min']:.2f}) | {p['loaded'] / p['load_s']:,.0f} | {p['load_mib']:.0f}"
                if "load_s" in p else "— | — | —")
        lines.append(
            f"| {p['rows']:,} | {p['mb']:.0f} | {p['validate_s']:.2f} ({p['validate_min']:.2f}) | {p['rows'] / p['validate_s']:,.0f} "
            f"| {per_m:.2f} ({per_m / per_m0:.2f}×) | {p['validate_mib']:.0f} "
            f"| {p['once_s']:.2f} ({p['once_min']:.2f}) | {p['once_s'] / (p['rows'] / 1e6):.2f} | {p['once_mib']:.0f} | {load} |"
        )
    out_md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    bench.log(f"written to {out_md} and {out_svg}")


if __name__ == "__main__":
    main()
