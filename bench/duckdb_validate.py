#!/usr/bin/env python3
"""DuckDB peer of `pipeline validate`: the same 7 rules over the same CSV, valid
rows and rejects (with their reasons) written to Parquet. 2 threads.

usage: duckdb_validate.py IN.csv|IN.parquet OUTDIR
"""
import sys

import duckdb

src, outdir = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET threads = 2")
# A Parquet source is read by its own types, the best DuckDB can do with it; the
# checks below then cast text that is already typed, which DuckDB does cheaply.
if src.endswith(".parquet"):
    source = f"""SELECT CAST(id AS VARCHAR) AS id, email, CAST(amount AS VARCHAR) AS amount,
                       CAST(qty AS VARCHAR) AS qty, kind, CAST(created AS VARCHAR) AS created,
                       strftime(seen_at, '%Y-%m-%d %H:%M:%S') AS seen_at, note
                  FROM read_parquet('{src}')"""
else:
    source = f"SELECT * FROM read_csv('{src}', all_varchar = true, header = true)"
con.execute(f"""
CREATE TEMP TABLE checked AS
WITH raw AS ({source}),
typed AS (
  SELECT *,
    TRY_CAST(trim(id) AS BIGINT)                         AS id_t,
    TRY_CAST(trim(amount) AS DOUBLE)                     AS amount_t,
    TRY_CAST(trim(qty) AS BIGINT)                        AS qty_t,
    TRY_STRPTIME(trim(created), '%Y-%m-%d')::DATE        AS created_t,
    TRY_STRPTIME(trim(seen_at), '%Y-%m-%d %H:%M:%S')     AS seen_t
  FROM raw
),
flagged AS (
  SELECT *, count(*) OVER (PARTITION BY id_t) AS key_n FROM typed
)
SELECT *, concat_ws('; ',
    CASE WHEN id IS NULL OR trim(id) = '' THEN 'id: required' END,
    CASE WHEN trim(id) <> '' AND id_t IS NULL THEN 'id: type' END,
    CASE WHEN id_t IS NOT NULL AND key_n > 1 THEN 'id: unique' END,
    CASE WHEN email IS NOT NULL AND NOT regexp_matches(email, '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$') THEN 'email: regex' END,
    CASE WHEN trim(amount) <> '' AND amount_t IS NULL THEN 'amount: type' END,
    CASE WHEN amount_t < 0 THEN 'amount: min' END,
    CASE WHEN trim(qty) <> '' AND qty_t IS NULL THEN 'qty: type' END,
    CASE WHEN qty_t < 0 THEN 'qty: min' END,
    CASE WHEN qty_t > 1000 THEN 'qty: max' END,
    CASE WHEN kind IS NOT NULL AND kind NOT IN ('click', 'view', 'buy', 'share', 'like') THEN 'kind: allowed' END,
    CASE WHEN trim(created) <> '' AND created_t IS NULL THEN 'created: format' END,
    CASE WHEN trim(seen_at) <> '' AND seen_t IS NULL THEN 'seen_at: format' END
  ) AS errors
FROM flagged
""")
con.execute(f"""COPY (SELECT id_t AS id, email, amount_t AS amount, qty_t AS qty, kind, created_t AS created,
                        seen_t AS seen_at, note FROM checked WHERE errors = '')
               TO '{outdir}/valid.parquet' (FORMAT parquet)""")
con.execute(f"""COPY (SELECT id, email, amount, qty, kind, created, seen_at, note, errors FROM checked WHERE errors <> '')
               TO '{outdir}/rejects.parquet' (FORMAT parquet)""")
print(con.execute("SELECT count(*) FILTER (WHERE errors = ''), count(*) FILTER (WHERE errors <> '') FROM checked").fetchone())
