#!/usr/bin/env python3
"""Collects the reports written by bench/plots/run.sh and draws the benchmark plots.

  plot.py --work DIR --out-json results.json --out-csv results.csv --img docs/img
  plot.py --from-json bench/plots/results.json [--img docs/img]     (re-plot, no measuring)
"""

import argparse
import csv
import json
import os
import re
import sys

try:
    import matplotlib
except ImportError:  # run.sh installs it; this covers a direct call
    import subprocess

    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"])
    import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# ---------------------------------------------------------------------------------------------
# collecting


def read_meta(work):
    meta = {}
    with open(os.path.join(work, "meta.env")) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            if k:
                meta[k] = v
    for k in ("nproc", "mem_gib", "batch_scans", "single_secs", "trace_secs"):
        if k in meta:
            meta[k] = int(meta[k])
    for k in ("loadavg_start", "loadavg_end"):
        if k in meta:
            meta[k] = float(meta[k])
    meta["conns"] = [int(c) for c in meta.get("conns", "").split()]
    return meta


def http_row(kind, c, rep):
    lat = rep["latency"]
    row = {
        "kind": kind,
        "connections": c,
        "elapsed_s": round(rep["elapsed_s"], 3),
        "requests": rep["requests"],
        "requests_ok": rep["requests_ok"],
        "requests_per_s": round(rep["requests_per_s"], 1),
        "scans_per_s": round(rep["scans_per_s"], 1),
        "scans_accepted": rep["scans_accepted"],
        "scans_rejected": rep["scans_rejected"],
        "p50_ms": lat["p50_ms"],
        "p90_ms": lat["p90_ms"],
        "p99_ms": lat["p99_ms"],
        "p999_ms": lat["p999_ms"],
        "max_ms": lat["max_ms"],
        "errors": sum(rep.get("errors_by_status", {}).values())
        + sum(rep.get("transport_errors", {}).values()),
    }
    if "trace" in rep:
        t = rep["trace"]
        row["traces_ok"] = t["traces_ok"]
        # only answered traces (a 404 for an unknown person is not a trace)
        row["traces_per_s"] = round(t["traces_ok"] / rep["elapsed_s"], 1)
        row["mean_f1"] = round(t["mean_f1"], 1)
    return row


DUR = re.compile(r"([0-9.]+)\s*(ns|µs|us|ms|s)$")
UNIT_US = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}


def dur_us(s):
    m = DUR.match(s.strip())
    if not m:
        raise ValueError(f"cannot parse duration {s!r}")
    return float(m.group(1)) * UNIT_US[m.group(2)]


LOOP = re.compile(
    r"(\d+) traces, median (?P<median>[^,]+), (?:mean (?P<mean>[^,]+), )?p90 (?P<p90>[^,]+), "
    r"mean F1 (?P<f1>[0-9.]+)"
)


def collect(work):
    meta = read_meta(work)
    res = {"meta": meta, "http": [], "stores": []}
    hdir = os.path.join(work, "http")
    if os.path.isdir(hdir):
        for kind in ("batch", "single", "trace"):
            for c in meta["conns"]:
                p = os.path.join(hdir, f"{kind}-c{c}.json")
                if os.path.exists(p):
                    with open(p) as f:
                        res["http"].append(http_row(kind, c, json.load(f)))
    sdir = os.path.join(work, "store")
    if os.path.isdir(sdir):
        with open(os.path.join(sdir, "stores.txt")) as f:
            stores = [line.split() for line in f if line.strip()]
        for n, size, name in stores:
            for depth in (1, 2):
                with open(os.path.join(sdir, f"s{n}-d{depth}.txt")) as f:
                    text = f.read()
                m = LOOP.search(text)
                if not m:
                    raise ValueError(f"unexpected trace_loop output: {text!r}")
                res["stores"].append(
                    {
                        "scans": int(n),
                        "store": name,
                        "store_bytes": int(size),
                        "depth": depth,
                        "traces": int(m.group(1)),
                        "median_us": round(dur_us(m.group("median")), 2),
                        "mean_us": round(dur_us(m.group("mean")), 2) if m.group("mean") else None,
                        "p90_us": round(dur_us(m.group("p90")), 2),
                        "mean_f1": float(m.group("f1")),
                    }
                )
    return res


def write_csv(res, path):
    cols = [
        "section", "kind", "connections", "scans", "depth", "traces", "requests_per_s",
        "scans_per_s", "traces_per_s", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms",
        "median_us", "mean_us", "p90_us", "mean_f1", "errors", "elapsed_s",
    ]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in res["http"]:
            w.writerow({"section": "http", **r})
        for r in res["stores"]:
            w.writerow({"section": "engine_trace", "kind": f"depth{r['depth']}", **r})


# ---------------------------------------------------------------------------------------------
# plotting


def machine(meta):
    return f"{meta.get('nproc', '?')}-core / {meta.get('mem_gib', '?')} GiB shared VM"


def human(x, _pos=None):
    for div, suf in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:g}"


def plot_throughput(res, out):
    meta = res["meta"]
    panels = [
        ("batch", "scans_per_s", "accepted scans/s",
         "Batched ingestion\nNDJSON, 1,000 scans per request"),
        ("single", "requests_per_s", "requests/s (= scans/s)",
         "Single-scan ingestion\none JSON scan per request"),
        ("trace", "traces_per_s", "traces/s",
         "Depth-1 contact traces\n1 M-scan store"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.8), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2]})
    for col, (kind, key, ylabel, title) in enumerate(panels):
        rows = sorted((r for r in res["http"] if r["kind"] == kind), key=lambda r: r["connections"])
        top, bot = axes[0][col], axes[1][col]
        if not rows:
            top.set_title(title + "\n(no data)")
            continue
        c = [r["connections"] for r in rows]
        y = [r[key] for r in rows]
        top.plot(c, y, "o-", color="tab:blue", lw=2)
        for xi, yi in zip(c, y):
            top.annotate(human(yi), (xi, yi), textcoords="offset points", xytext=(0, 7),
                         ha="center", fontsize=8)
        top.set_title(title, fontsize=11)
        top.set_ylabel(ylabel)
        top.set_ylim(0, max(y) * 1.18)
        top.yaxis.set_major_formatter(FuncFormatter(human))
        top.grid(True, alpha=0.3)
        top.margins(x=0.1)

        for pk, style, lab in (("p50_ms", "s--", "p50"), ("p99_ms", "^-", "p99")):
            bot.plot(c, [r[pk] for r in rows], style, label=lab,
                     color="tab:orange" if pk == "p99_ms" else "tab:gray")
        bot.set_yscale("log")
        bot.set_ylabel("request latency (ms, log scale)")
        bot.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        bot.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        bot.yaxis.set_minor_formatter(NullFormatter())
        bot.grid(True, which="both", alpha=0.3)
        bot.legend(fontsize=8, loc="upper left")
        bot.set_xscale("log", base=2)
        bot.set_xticks(c)
        bot.set_xticklabels([str(x) for x in c])
        bot.set_xlabel("client connections (closed loop)")
        if kind == "trace":
            f1 = [round(r.get("mean_f1", 0)) for r in rows]
            top.text(0.02, 0.04, f"mean F1 {span(f1)} contacts per trace",
                     transform=top.transAxes, fontsize=8, color="dimgray")
    fig.suptitle(
        "checkin-server over HTTP/1.1 on loopback: throughput (top) and latency (bottom) vs "
        "client connections\n"
        f"release build, fsync durability, fresh data dir; load generator on the same cores; "
        f"{machine(meta)}; {meta.get('date', '')}, commit {meta.get('commit', '')}",
        fontsize=11,
    )
    fig.text(
        0.5, 0.005,
        f"batched: {meta.get('batch_scans', 0):,} scans per point, fresh server per point; "
        f"single: {meta.get('single_secs')} s per point; traces: {meta.get('trace_secs')} s per "
        "point against one server loaded with the 1 M-scan data set (100 k persons, 10 k venues). "
        f"Load average {meta.get('loadavg_start')} at start, {meta.get('loadavg_end')} at end.",
        ha="center", fontsize=8, color="dimgray",
    )
    fig.tight_layout(rect=(0, 0.02, 1, 0.95))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def span(xs):
    if not xs:
        return "0"
    return f"{min(xs)}" if min(xs) == max(xs) else f"{min(xs)}-{max(xs)}"


def fmt_us(v):
    return f"{v / 1000:.3g} ms" if v >= 1000 else f"{v:.3g} µs"


def plot_store(res, out):
    meta = res["meta"]
    rows = res["stores"]
    fig, ax = plt.subplots(figsize=(9, 6.2))
    colors = {1: "tab:blue", 2: "tab:red"}
    for depth in (1, 2):
        rs = sorted((r for r in rows if r["depth"] == depth), key=lambda r: r["scans"])
        if not rs:
            continue
        n = [r["scans"] for r in rs]
        ax.plot(n, [r["median_us"] for r in rs], "o-", color=colors[depth], lw=2,
                label=f"depth {depth}: median")
        ax.plot(n, [r["p90_us"] for r in rs], "v--", color=colors[depth], alpha=0.6,
                label=f"depth {depth}: p90")
        for r in rs:
            ax.annotate(
                f"{fmt_us(r['median_us'])}\nmean F1 {r['mean_f1']:.0f}",
                (r["scans"], r["median_us"]), textcoords="offset points",
                xytext=(8, -22), fontsize=8, color=colors[depth],
                bbox={"fc": "white", "ec": "none", "alpha": 0.85, "pad": 1},
            )
    sizes = sorted({r["scans"] for r in rows})
    xr = sizes[-1] * 2.1
    ax.axhline(50, color=colors[1], ls=":", lw=1)
    ax.text(xr, 50 * 0.8, "target, depth 1 at 10 M: median < 50 µs", ha="right", va="top",
            fontsize=8, color=colors[1])
    ax.axhline(5000, color=colors[2], ls=":", lw=1)
    ax.text(xr, 5000 * 0.8, "target, depth 2 at 10 M: median < 5 ms", ha="right", va="top",
            fontsize=8, color=colors[2])
    ax.set_xscale("log")
    ax.set_yscale("log")
    lo = min([r["median_us"] for r in rows] + [50])
    hi = max(r["p90_us"] for r in rows)
    ax.set_ylim(lo / 3, hi * 6)
    ax.set_xticks(sizes)
    ax.set_xticklabels([human(s) + " scans" for s in sizes])
    ax.minorticks_off()
    ax.set_xlim(sizes[0] / 1.5, sizes[-1] * 2.2) if sizes else None
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: fmt_us(v)))
    ax.set_xlabel("store size (scans; 10 scans per person, 100 per venue, 14 days)")
    ax.set_ylabel("latency of one engine trace (log scale)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    d1 = [r["traces"] for r in rows if r["depth"] == 1]
    d2 = [r["traces"] for r in rows if r["depth"] == 2]
    ax.set_title(
        "Engine contact-trace latency vs store size (in process, no HTTP)\n"
        f"trace_loop over the cached bench stores, Durability::Os, one thread; "
        f"{machine(meta)}; {meta.get('date', '')}",
        fontsize=10,
    )
    fig.text(
        0.5, 0.01,
        f"{span(d1)} depth-1 and {span(d2)} depth-2 traces per store; "
        "mean F1 = direct contacts per traced person, which grows with the store in this data set.",
        ha="center", fontsize=8, color="dimgray",
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work")
    ap.add_argument("--from-json")
    ap.add_argument("--out-json")
    ap.add_argument("--out-csv")
    ap.add_argument("--img", default=os.path.join(ROOT, "docs", "img"))
    a = ap.parse_args()
    if a.from_json:
        with open(a.from_json) as f:
            res = json.load(f)
    elif a.work:
        res = collect(a.work)
    else:
        ap.error("--work or --from-json")
    if a.out_json:
        with open(a.out_json, "w") as f:
            json.dump(res, f, indent=1, ensure_ascii=False)
            f.write("\n")
    if a.out_csv:
        write_csv(res, a.out_csv)
    os.makedirs(a.img, exist_ok=True)
    if res["http"]:
        plot_throughput(res, os.path.join(a.img, "throughput-vs-connections.png"))
    if res["stores"]:
        plot_store(res, os.path.join(a.img, "trace-latency-vs-store-size.png"))
    print(f"{'kind':7} {'C':>3} {'req/s':>10} {'scans/s':>11} {'p50 ms':>8} {'p99 ms':>8} err")
    for r in res["http"]:
        print(f"{r['kind']:7} {r['connections']:>3} {r['requests_per_s']:>10,.0f} "
              f"{r.get('traces_per_s', r['scans_per_s']):>11,.0f} {r['p50_ms']:>8} "
              f"{r['p99_ms']:>8} {r['errors']}")
    for r in res["stores"]:
        print(f"store {r['scans']:>9,} depth {r['depth']}: {r['traces']} traces, median "
              f"{fmt_us(r['median_us'])}, p90 {fmt_us(r['p90_us'])}, mean F1 {r['mean_f1']}")


if __name__ == "__main__":
    main()
