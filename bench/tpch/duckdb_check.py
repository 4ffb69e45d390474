#!/usr/bin/env python3
"""Compares each TPC-H model's table in PostgreSQL (mart.qNN, written by
`pipeline transform`) with DuckDB's answer to the same SQL over the same CSV
files, the columns typed as the datasets declare them (bench/tpch/config.py).

Usage: duckdb_check.py LANDED_DIR SQL_DIR DATABASE_URL. Rows are compared as
sorted lists: "exact" when every value is equal; "equal within 1e-9" when some
numbers differ by at most a relative 1e-9; "equal at the model's scale" when, in
addition, a model's decimal equals DuckDB's value cut to the decimal's scale (the
dialect's avg of a decimal is a decimal of scale + 4, truncated; DuckDB's is a
double). Prints one line per model and exits 1 when any differs.
"""
import csv
import io
import subprocess
import sys
from decimal import ROUND_DOWN, Decimal, InvalidOperation
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


def close(a, b):
    """DuckDB's a and the model's b within a relative 1e-9."""
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return a == b or abs(a - b) <= Decimal("1e-9") * max(abs(a), abs(b))
    return a == b


def at_scale(a, b):
    """DuckDB's a, cut to the scale of the model's decimal b, is b."""
    if isinstance(a, Decimal) and isinstance(b, Decimal) and b.as_tuple().exponent < 0:
        return a.quantize(Decimal(1).scaleb(b.as_tuple().exponent), rounding=ROUND_DOWN) == b
    return a == b


def verdict(duck_rows, pg_rows):
    if len(duck_rows) != len(pg_rows) or any(len(a) != len(b) for a, b in zip(duck_rows, pg_rows)):
        return "DIFFERS"
    pairs = [(x, y) for a, b in zip(duck_rows, pg_rows) for x, y in zip(a, b)]
    if all(x == y for x, y in pairs):
        return "exact"
    if all(close(x, y) for x, y in pairs):
        return "equal within 1e-9"
    if all(close(x, y) or at_scale(x, y) for x, y in pairs):
        return "equal at the model's scale"
    return "DIFFERS"


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
        said = verdict(duck_rows, pg_rows)
        print(f"{model}: {len(pg_rows)} rows, {said}")
        failed += said == "DIFFERS"
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
