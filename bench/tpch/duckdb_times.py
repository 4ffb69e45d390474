"""The bench's DuckDB peer: each model's SQL run by DuckDB over the lake's
Parquet files of the same tables (stage.<t> as a view over
<stage_dir>/cleaned/<t>/**/*.parquet). Prints `model milliseconds rows` lines;
the best of ROUNDS runs (default 2).

    python3 bench/tpch/duckdb_times.py <stage_dir>/cleaned <sql/mart>
"""
import os
import sys
import time

import duckdb


def main():
    cleaned, sql_dir = sys.argv[1], sys.argv[2]
    rounds = int(os.environ.get("ROUNDS", "2"))
    con = duckdb.connect()
    con.execute("CREATE SCHEMA stage")
    for t in sorted(os.listdir(cleaned)):
        con.execute(f"CREATE VIEW stage.{t} AS SELECT * FROM read_parquet('{cleaned}/{t}/**/*.parquet')")
    for f in sorted(os.listdir(sql_dir)):
        if not f.endswith(".sql"):
            continue
        sql = open(os.path.join(sql_dir, f)).read()
        best, rows = None, 0
        for _ in range(rounds):
            start = time.perf_counter()
            rows = len(con.execute(sql).fetchall())
            ms = (time.perf_counter() - start) * 1000
            best = ms if best is None else min(best, ms)
        print(f"{f[:-4]} {best:.0f} {rows}")


if __name__ == "__main__":
    main()
