#!/usr/bin/env python3
"""Per-round ratios of `make bench-tpch`, as median and min over the rounds.

Reads lines `model|pipeline ms per round|postgres ms per round|datafusion ms
per round` (space-separated, `-` for a query that did not finish) and prints,
for each peer, the ratio of each round's sums over the queries both finished
in that round, then their median and min. A round's pipeline time is set
against the same round's peer time, so a slow moment of the machine weighs on
both sides alike.
"""
import statistics
import sys


def numbers(field):
    return [int(x) if x.isdigit() else None for x in field.split()]


def main():
    rows = []
    for line in sys.stdin:
        parts = line.rstrip("\n").split("|")
        if len(parts) == 4:
            rows.append([numbers(p) for p in parts[1:]])
    for name, peer in (("PostgreSQL", 1), ("DataFusion alone", 2)):
        ratios = []
        rounds = max((len(r[0]) for r in rows), default=0)
        for k in range(rounds):
            ours = theirs = 0
            for r in rows:
                o = r[0][k] if k < len(r[0]) else None
                # DataFusion alone runs its own rounds after: pair by index.
                p = r[peer][k] if k < len(r[peer]) else None
                if o is not None and p is not None:
                    ours, theirs = ours + o, theirs + p
            if theirs:
                ratios.append(ours / theirs)
        if ratios:
            listed = ", ".join(f"{x:.3f}" for x in ratios)
            print(
                f"pipeline / {name} per round: {listed}; "
                f"median {statistics.median(ratios):.3f}, min {min(ratios):.3f}"
            )


if __name__ == "__main__":
    main()
