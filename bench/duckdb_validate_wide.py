#!/usr/bin/env python3
"""DuckDB peer of `pipeline validate` on the wide shape (bench/gen_wide.py): every
column typed with TRY_CAST/TRY_STRPTIME, the same required/range/regex/allowed
rules, 7-column primary-key duplicates by window count, valid and rejected rows
(with reasons) to Parquet. 2 threads.

usage: duckdb_validate_wide.py IN.csv OUTDIR
"""
import sys

import duckdb

src, outdir = sys.argv[1], sys.argv[2]
KEY = ["vendor_id", "route_id", "stop_seq", "trip_day", "trip_hour", "vehicle_id", "driver_id"]
INTS = KEY + ["passengers", "distance_m"]
FLOATS = ["fare", "tip", "tolls", "surcharge", "total"]
con = duckdb.connect()
con.execute("SET threads = 2")
typed = ",\n    ".join(
    [f"TRY_CAST(trim({c}) AS BIGINT) AS {c}_t" for c in INTS]
    + [f"TRY_CAST(trim({c}) AS DOUBLE) AS {c}_t" for c in FLOATS]
    + ["TRY_STRPTIME(trim(picked_at), '%d/%m/%Y %H:%M') AS picked_at_t"]
)
checks = []
for c in KEY:
    checks.append(f"CASE WHEN {c} IS NULL OR trim({c}) = '' THEN '{c}: required' END")
for c in INTS + FLOATS:
    checks.append(f"CASE WHEN trim({c}) <> '' AND {c}_t IS NULL THEN '{c}: type' END")
checks += [
    "CASE WHEN trip_hour_t < 0 OR trip_hour_t > 23 THEN 'trip_hour: range' END",
    "CASE WHEN passengers_t < 0 OR passengers_t > 9 THEN 'passengers: range' END",
    "CASE WHEN distance_m_t < 0 THEN 'distance_m: min' END",
]
checks += [f"CASE WHEN {c}_t < 0 THEN '{c}: min' END" for c in FLOATS]
checks += [
    "CASE WHEN zone IS NULL OR trim(zone) = '' THEN 'zone: required' END",
    "CASE WHEN zone NOT IN ('north', 'south', 'east', 'west', 'centre') THEN 'zone: allowed' END",
    "CASE WHEN payment NOT IN ('card', 'cash', 'voucher', 'dispute') THEN 'payment: allowed' END",
    "CASE WHEN plate IS NOT NULL AND NOT regexp_matches(plate, '^[A-Z]{2}-[0-9]{4}$') THEN 'plate: regex' END",
    "CASE WHEN trim(picked_at) <> '' AND picked_at_t IS NULL THEN 'picked_at: format' END",
    "CASE WHEN key_n > 1 THEN 'key: unique' END",
]
key_t = ", ".join(f"{c}_t" for c in KEY)
con.execute(f"""
CREATE TEMP TABLE checked AS
WITH raw AS (SELECT * FROM read_csv('{src}', all_varchar = true, header = true)),
typed AS (SELECT *,
    {typed}
  FROM raw),
flagged AS (SELECT *, count(*) OVER (PARTITION BY {key_t}) AS key_n FROM typed)
SELECT *, concat_ws('; ', {", ".join(checks)}) AS errors FROM flagged
""")
valid_cols = ", ".join(
    [f"{c}_t AS {c}" for c in INTS + FLOATS] + ["zone", "payment", "plate", "comment", "picked_at_t AS picked_at"]
)
raw_cols = ", ".join(KEY + ["passengers", "distance_m"] + FLOATS + ["zone", "payment", "plate", "comment", "picked_at"])
con.execute(f"COPY (SELECT {valid_cols} FROM checked WHERE errors = '') TO '{outdir}/valid_wide.parquet' (FORMAT parquet)")
con.execute(f"COPY (SELECT {raw_cols}, errors FROM checked WHERE errors <> '') TO '{outdir}/rejects_wide.parquet' (FORMAT parquet)")
print(con.execute("SELECT count(*) FILTER (WHERE errors = ''), count(*) FILTER (WHERE errors <> '') FROM checked").fetchone())
