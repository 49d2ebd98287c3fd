#!/usr/bin/env python3
"""Medians and ranges of bench/records/reads.sh's runs: `summary.py WORK`.

Reads WORK/{pass,pass-h2,issue,verify}-N.json (checkin-loadtest --json reports), the wrk runs'
WORK/pass-wrk-N.txt, and the matching -cpu-N.json (peer.py cpu: client and server CPU) and
prints, per kind of run, the median and range of the 2xx answers per second, the latency p50/p99
medians, the CPU and the answers by outcome of the first run."""

import json
import re
import statistics
import sys
from pathlib import Path

TARGETS = {"pass": 30_000, "pass-c2": 30_000, "pass-h2": 30_000, "pass-wrk": 30_000,
           "issue": 5_000, "verify": 10_000}


def wrk_report(text):
    """The parts of a wrk --latency output the summary needs, as a checkin-loadtest report."""
    def ms(label):
        m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not m:
            return 0.0
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    n = re.search(r"(\d+) requests in ([\d.]+)(m?s)", text)
    total, secs = int(n.group(1)), float(n.group(2)) * (60 if n.group(3) == "m" else 1)
    bad = re.search(r"(\d+) unexpected answers", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    failed = (int(bad.group(1)) if bad else 0) + (int(non2xx.group(1)) if non2xx else 0)
    return {"requests": total, "requests_ok": total - failed, "elapsed_s": secs,
            "latency": {"p50_ms": ms("50%"), "p99_ms": ms("99%")}}


def main():
    d = Path(sys.argv[1])
    for name in ("pass", "pass-c2", "pass-h2", "pass-wrk", "issue", "verify"):
        ext = "txt" if name == "pass-wrk" else "json"
        runs = sorted(d.glob(f"{name}-[0-9]*.{ext}"), key=lambda p: int(p.stem.split("-")[-1]))
        steal = []
        for p in runs:
            st = d / f"{name}-stat-{p.stem.split('-')[-1]}.txt"
            m = re.search(r"steal (\d+)%", st.read_text()) if st.exists() else None
            if m:
                steal.append(int(m.group(1)))
        if not runs:
            continue
        if ext == "txt":
            reps = [wrk_report(p.read_text()) for p in runs]
        else:
            reps = [json.loads(p.read_text()) for p in runs]
        cpus = [json.loads((d / f"{name}-cpu-{p.stem.split('-')[-1]}.json").read_text())
                for p in runs if (d / f"{name}-cpu-{p.stem.split('-')[-1]}.json").exists()]
        ok = [r["requests_ok"] / r["elapsed_s"] for r in reps]
        failed = sum(r["requests"] - r["requests_ok"] for r in reps)
        p50 = statistics.median(r["latency"]["p50_ms"] for r in reps)
        p99 = statistics.median(r["latency"]["p99_ms"] for r in reps)
        m = statistics.median(ok)
        line = (f"{name:<8} median {m:,.0f}/s (range {min(ok):,.0f}-{max(ok):,.0f}, "
                f"runs {', '.join(f'{x:,.0f}' for x in ok)}; target {TARGETS[name]:,}: "
                f"{'met' if m >= TARGETS[name] else 'NOT met'}); p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
                f"{failed} failed")
        if cpus:
            line += (f"; server CPU {statistics.median(c['server_cores'] for c in cpus):.2f} cores, "
                     f"client {statistics.median(c['client_cores'] for c in cpus):.2f}")
        if steal:
            line += f"; steal {', '.join(f'{x}%' for x in steal)}"
        print(line)
        print(f"         outcomes (run 1): {reps[0].get('outcomes', {})}, "
              f"mean answer {reps[0].get('mean_answer_bytes') or 0:.0f} bytes")


if __name__ == "__main__":
    main()
