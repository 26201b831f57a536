#!/usr/bin/env python3
"""Prints a Markdown table from criterion's saved estimates (target/criterion).

Usage: scripts/bench-table.py GROUP_PREFIX [BASELINE_SUBSTRING]

For every benchmark whose id starts with GROUP_PREFIX: median time per iteration, items or
bytes per second (from the throughput criterion recorded), and, when BASELINE_SUBSTRING is
given, the ratio of its time to the baseline of the same size label (last path component),
measured in the same run.
"""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"
prefix = sys.argv[1]
baseline_key = sys.argv[2] if len(sys.argv) > 2 else None

rows = []
for est in sorted(root.glob("**/new/estimates.json")):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    full = bench["full_id"]
    if not full.startswith(prefix):
        continue
    median_ns = json.loads(est.read_text())["median"]["point_estimate"]
    tp = bench.get("throughput") or {}
    rows.append((full, median_ns, tp))

def fmt_time(ns):
    return f"{ns:.1f} ns" if ns < 1e3 else f"{ns / 1e3:.2f} µs" if ns < 1e6 else f"{ns / 1e6:.2f} ms"

def fmt_rate(ns, tp):
    if "Bytes" in tp:
        return f"{tp['Bytes'] / ns * 1e9 / 2**20:,.0f} MiB/s"
    if "Elements" in tp:
        return f"{tp['Elements'] / ns * 1e9:,.0f} /s"
    return ""

base = {}
if baseline_key:
    for full, ns, _ in rows:
        if baseline_key in full:
            base[full.rsplit("/", 1)[-1]] = ns

print("| benchmark | median time | rate | per second | " + ("time ÷ baseline |" if base else ""))
print("| --- | --- | --- | --- | " + ("--- |" if base else ""))
for full, ns, tp in rows:
    ratio = ""
    b = base.get(full.rsplit("/", 1)[-1])
    if b:
        ratio = f" {ns / b:.2f} |"
    print(f"| `{full}` | {fmt_time(ns)} | {fmt_rate(ns, tp)} | {1e9 / ns:,.0f} | {ratio}")
