#!/usr/bin/env python3
"""Prints criterion medians (and the scans/s they imply) from target/criterion."""
import json, os, sys
root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../target/criterion")
for dirpath, dirs, files in sorted(os.walk(root)):
    if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
        continue
    est = json.load(open(os.path.join(dirpath, "estimates.json")))
    bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
    med = est["median"]["point_estimate"]  # ns per iteration
    lo, hi = est["median"]["confidence_interval"]["lower_bound"], est["median"]["confidence_interval"]["upper_bound"]
    thr = bench.get("throughput") or {}
    elems = thr.get("Elements")
    def fmt(ns):
        return f"{ns/1e9:.3f} s" if ns >= 1e9 else f"{ns/1e6:.2f} ms" if ns >= 1e6 else f"{ns/1e3:.1f} µs" if ns >= 1e3 else f"{ns:.0f} ns"
    line = f"{bench['full_id']:<45} median {fmt(med):>10}  [{fmt(lo)} .. {fmt(hi)}]"
    if elems:
        line += f"  = {elems / (med / 1e9):,.0f} scans/s"
    print(line)
