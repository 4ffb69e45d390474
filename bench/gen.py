#!/usr/bin/env python3
"""Writes a landed CSV of N rows with a realistic mix of types and ~0.1% bad values.

usage: gen.py ROWS OUT.csv KINDS.csv
"""
import random
import sys
from datetime import date, datetime, timedelta

rows, out, kinds_out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rnd = random.Random(42)
KINDS = ["click", "view", "buy", "share", "like"]
with open(kinds_out, "w") as f:
    f.write("kind,label,weight\n")
    for i, k in enumerate(KINDS):
        f.write(f"{k},{k.title()} events,{i + 1}\n")

BAD = 0.001  # share of rows with one bad value
base_day = date(2020, 1, 1)
base_ts = datetime(2025, 1, 1)
with open(out, "w", buffering=1 << 20) as f:
    f.write("id,email,amount,qty,kind,created,seen_at,note\n")
    for i in range(1, rows + 1):
        email = f"user{i % 100000}@example{i % 7}.org"
        amount = "" if i % 20 == 0 else f"{(i * 7919) % 100000 / 100:.2f}"
        qty = str(i % 1000)
        kind = KINDS[i % 5]
        created = (base_day + timedelta(days=i % 1800)).isoformat()
        seen = (base_ts + timedelta(seconds=i * 13 % 2_600_000)).strftime("%Y-%m-%d %H:%M:%S")
        note = f"note {i % 1000} for the event"
        ident = str(i)
        if rnd.random() < BAD:
            which = rnd.randrange(7)
            if which == 0:
                email = "not-an-email"
            elif which == 1:
                amount = "-5.00"
            elif which == 2:
                qty = "12x"
            elif which == 3:
                kind = "unknown"
            elif which == 4:
                created = "2025-02-30"
            elif which == 5:
                seen = "yesterday"
            else:
                ident = str(i - 1)  # a duplicated key
        f.write(f"{ident},{email},{amount},{qty},{kind},{created},{seen},\"{note}\"\n")
