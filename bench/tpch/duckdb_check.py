#!/usr/bin/env python3
"""Compares each TPC-H model's table in PostgreSQL (mart.qNN, written by
`pipeline transform`) with DuckDB's answer to the same SQL over the same CSV
files, the columns typed as the datasets declare them (bench/tpch/config.py).

Usage: duckdb_check.py LANDED_DIR SQL_DIR DATABASE_URL. Rows are compared as
sorted lists; text, dates and integers must be equal, other numbers within a
relative 1e-9 (DuckDB averages decimals as doubles). Prints one line per model
and exits 1 when any differs.
"""
import csv
import io
import subprocess
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from config import TABLES  # noqa: E402

DUCK = {"int": "BIGINT", "string": "VARCHAR", "date": "DATE"}


def duck_type(t):
    return DUCK.get(t, t.upper())


def value(text):
    """A cell as text, or as a Decimal when it is a number."""
    if text is None or text == "":
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return text


def same(a, b):
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        if a == b:
            return True
        return abs(a - b) <= Decimal("1e-9") * max(abs(a), abs(b))
    return a == b


def main():
    landed, sql_dir, url = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    con = duckdb.connect()
    con.execute("CREATE SCHEMA stage")
    for name, cols in TABLES.items():
        types = ", ".join(f"'{c}': '{duck_type(t)}'" for c, t in cols)
        con.execute(
            f"CREATE TABLE stage.{name} AS SELECT * FROM read_csv('{landed / (name + '.csv')}', "
            f"header = true, columns = {{{types}}})"
        )
    failed = 0
    for q in sorted(sql_dir.glob("*.sql")):
        model = q.stem
        duck_rows = [tuple(value(None if v is None else str(v)) for v in r) for r in con.execute(q.read_text()).fetchall()]
        out = subprocess.run(["psql", url, "-X", "--csv", "-c", f"SELECT * FROM mart.{model}"],
                             check=True, capture_output=True, text=True).stdout
        pg_rows = [tuple(value(v) for v in r) for r in list(csv.reader(io.StringIO(out)))[1:]]
        key = lambda r: tuple((x is None, str(x)) for x in r)  # noqa: E731
        duck_rows.sort(key=key)
        pg_rows.sort(key=key)
        equal = len(duck_rows) == len(pg_rows) and all(
            len(a) == len(b) and all(same(x, y) for x, y in zip(a, b)) for a, b in zip(duck_rows, pg_rows))
        exact = equal and all(x == y for a, b in zip(duck_rows, pg_rows) for x, y in zip(a, b))
        verdict = "exact" if exact else "equal within 1e-9" if equal else "DIFFERS"
        print(f"{model}: {len(pg_rows)} rows, {verdict}")
        failed += not equal
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
