#!/usr/bin/env python3
"""Writes a wide landed CSV shaped like a real delivery the project had not seen:
19 columns (9 integers, 5 nullable floats, 4 strings with regex/allowed rules,
1 timestamp with a format), a 7-column primary key, ~0.1% bad values.

usage: gen_wide.py ROWS OUT.csv
"""
import random
import sys
from datetime import datetime, timedelta

rows, out = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(7)
BAD = 0.001
ZONES = ["north", "south", "east", "west", "centre"]
PAYMENTS = ["card", "cash", "voucher", "dispute"]
base = datetime(2025, 1, 1)
header = [
    "vendor_id", "route_id", "stop_seq", "trip_day", "trip_hour", "vehicle_id", "driver_id",  # the key
    "passengers", "distance_m",
    "fare", "tip", "tolls", "surcharge", "total",
    "zone", "payment", "plate", "comment",
    "picked_at",
]
with open(out, "w", buffering=1 << 20) as f:
    f.write(",".join(header) + "\n")
    def key(i):
        # The first four parts alone identify row i; the key is unique unless made not.
        return [i % 7, (i // 7) % 997, i // 6979 % 50, i // 348950, (i * 31) % 24, (i * 13) % 4001, (i * 17) % 3001]

    for i in range(rows):
        ints = [str(k) for k in key(i)] + [str(1 + i % 6), str((i * 7919) % 40000)]
        floats = [
            f"{(i % 5000) / 100:.2f}",
            "" if i % 3 == 0 else f"{(i % 700) / 100:.2f}",
            "" if i % 11 else "6.55",
            "" if i % 4 else "0.50",
            f"{(i % 9000) / 100:.2f}",
        ]
        strings = [
            ZONES[i % 5],
            PAYMENTS[i % 4],
            f"AB-{i % 10000:04d}",
            f"trip {i % 1000}",
        ]
        picked = (base + timedelta(seconds=i * 7 % 2_600_000)).strftime("%d/%m/%Y %H:%M")
        if rnd.random() < BAD:
            which = rnd.randrange(6)
            if which == 0:
                ints[8] = "-3"
            elif which == 1:
                floats[0] = "abc"
            elif which == 2:
                strings[0] = "nowhere"
            elif which == 3:
                strings[2] = "ZZ99"
            elif which == 4:
                picked = "31/02/2025 10:00"
            elif i > 0:
                ints[:7] = [str(k) for k in key(i - 1)]  # a duplicated key
        f.write(",".join(ints + floats + strings + [picked]) + "\n")
