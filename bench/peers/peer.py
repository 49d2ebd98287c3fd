#!/usr/bin/env python3
"""PostgreSQL side of the peer comparison (bench/peers/run.sh), and the report.

Subcommands (each writes a JSON report with --json):

  ingest       durable ingestion: C processes, one connection each, every batch of --batch CSV
               rows sent as one COPY ... FROM STDIN and committed in its own transaction
               (synchronous_commit = on, fsync = on are set by run.sh and checked here).
  copy-doses   the same for dose records (vaccinations.sh): the rows of a dose-record CSV
               (quoted line breaks and all) in batches of --batch, each one COPY into the
               `doses` table (primary key (person, dose)) and its own COMMIT.
  doses-summary  medians and ranges of the runs of vaccinations.sh, and the ratios.
  load-visits  COPY visits.csv (from export_visits) into `visits`, then build the indexes.
  trace        depth-1 contact traces (trace_depth1.sql) of random persons: C processes, one
               connection each, closed loop for --duration seconds.
  check        the SQL answer against POST /v1/trace depth 1 of our server, person by person.
  cpu          run a command, report its wall time, its CPU (rusage of children) and the CPU the
               process tree of --server-pid used meanwhile.
  summary      print the comparison from the JSON reports in a work directory.

Client CPU is measured in every worker (time.process_time) so the report shows whether the client
could have been the bottleneck; server CPU is read from /proc for the whole process tree.
"""

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# helpers


def tree_cpu(pid):
    """CPU seconds used so far by `pid` (incl. reaped children) and its live descendants."""
    if not pid:
        return 0.0
    parents = {}
    stats = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2 :].split()
        # fields[0] is state (stat field 3): ppid = field 4, utime 14, stime 15, cutime 16, cstime 17
        parents[int(d)] = int(fields[1])
        stats[int(d)] = [int(x) for x in fields[11:15]]
    if pid not in stats:
        return 0.0
    u, s, cu, cs = stats[pid]
    total = u + s + cu + cs
    todo = [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p:
                cu_, cs_ = stats[child][0], stats[child][1]
                total += cu_ + cs_
                todo.append(child)
    return total / CLK_TCK


def pct(sorted_ms, q):
    if not sorted_ms:
        return 0.0
    i = min(len(sorted_ms) - 1, max(0, int(round(q * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[i]


def latency_summary(lat_s):
    ms = sorted(x * 1000.0 for x in lat_s)
    return {
        "count": len(ms),
        "mean_ms": sum(ms) / len(ms) if ms else 0.0,
        "p50_ms": pct(ms, 0.50),
        "p90_ms": pct(ms, 0.90),
        "p99_ms": pct(ms, 0.99),
        "p999_ms": pct(ms, 0.999),
        "max_ms": ms[-1] if ms else 0.0,
    }


def write_json(path, obj):
    if path:
        Path(path).write_text(json.dumps(obj, indent=2) + "\n")


def connect(dsn, autocommit=False):
    import psycopg

    return psycopg.connect(dsn, autocommit=autocommit)


def persons_of(csv_path):
    """Distinct person ids of a scans CSV (first column), sorted: what checkin-loadtest picks."""
    seen = set()
    with open(csv_path) as f:
        next(f, None)
        for line in f:
            p = line.split(",", 1)[0]
            if p:
                seen.add(p)
    return sorted(seen)


def run_workers(target, c, args):
    """Start C fork()ed workers (each connects, then waits on a barrier), release them together,
    collect one result dict each. Returns (results, wall seconds from release to last result)."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(c + 1)
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(k, barrier, queue) + args) for k in range(c)]
    for p in procs:
        p.start()
    barrier.wait(timeout=120)
    t0 = time.monotonic()
    results = [queue.get() for _ in procs]
    wall = time.monotonic() - t0
    for p in procs:
        p.join()
    failed = [r["error"] for r in results if r.get("error")]
    if failed:
        sys.exit("worker failed: " + failed[0])
    return results, wall


# ---------------------------------------------------------------------------------------------
# ingest


def _ingest_worker(k, barrier, queue, dsn, batches, counter, deadline_s,
                   copy_sql="COPY scans (person, venue, ts, action) FROM STDIN (FORMAT csv)"):
    try:
        conn = connect(dsn)
        with conn.cursor() as cur:
            cur.execute("SHOW synchronous_commit")
            sc = cur.fetchone()[0]
            cur.execute("SHOW fsync")
            fs = cur.fetchone()[0]
        conn.commit()
        if sc != "on" or fs != "on":
            raise RuntimeError(f"synchronous_commit={sc} fsync={fs}: must both be on")
        barrier.wait(timeout=120)
        start = time.monotonic()
        cpu0 = time.process_time()
        lat, rows, n = [], 0, len(batches)
        while True:
            with counter.get_lock():
                i = counter.value
                counter.value += 1
            if i >= n or (deadline_s and time.monotonic() - start >= deadline_s):
                break
            nrows, body = batches[i]
            t = time.monotonic()
            with conn.cursor() as cur:
                with cur.copy(copy_sql) as cp:
                    cp.write(body)
            conn.commit()
            lat.append(time.monotonic() - t)
            rows += nrows
        end = time.monotonic()
        cpu = time.process_time() - cpu0
        conn.close()
        queue.put({"rows": rows, "batches": len(lat), "lat": lat, "cpu_s": cpu, "end": end})
    except Exception as e:  # reported by the parent
        queue.put({"error": f"{type(e).__name__}: {e}"})


def cmd_ingest(a):
    with open(a.csv, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[0].startswith(b"person,"):
        lines = lines[1:]
    lines = [ln for ln in lines if ln]
    if a.rows:
        lines = lines[: a.rows]
    batches = [
        (len(lines[i : i + a.batch]), b"\n".join(lines[i : i + a.batch]) + b"\n")
        for i in range(0, len(lines), a.batch)
    ]
    del lines
    ctx = mp.get_context("fork")
    counter = ctx.Value("q", 0)
    srv0 = tree_cpu(a.server_pid)
    results, wall = run_workers(
        _ingest_worker, a.connections, (a.dsn, batches, counter, a.duration)
    )
    srv = tree_cpu(a.server_pid) - srv0
    rows = sum(r["rows"] for r in results)
    lat = [x for r in results for x in r["lat"]]
    cpu = sum(r["cpu_s"] for r in results)
    with connect(a.dsn) as conn:
        stored = conn.execute("SELECT count(*) FROM scans").fetchone()[0]
    rep = {
        "system": "postgresql",
        "connections": a.connections,
        "batch": a.batch,
        "elapsed_s": wall,
        "rows": rows,
        "rows_stored": stored,
        "batches": len(lat),
        "rows_per_s": rows / wall,
        "batches_per_s": len(lat) / wall,
        "latency": latency_summary(lat),
        "client_cpu_s": cpu,
        "client_cores": cpu / wall,
        "server_cpu_s": srv,
        "server_cores": srv / wall,
    }
    write_json(a.json, rep)
    L = rep["latency"]
    print(
        f"postgres ingest: {rows:,} rows in {wall:.2f} s = {rep['rows_per_s']:,.0f} rows/s "
        f"({len(lat):,} COPY+COMMIT of {a.batch}, {a.connections} connections); "
        f"batch latency p50 {L['p50_ms']:.1f} ms p99 {L['p99_ms']:.1f} ms; "
        f"client CPU {rep['client_cores']:.2f} cores, postgres CPU {rep['server_cores']:.2f} cores; "
        f"{stored:,} rows in the table"
    )


# ---------------------------------------------------------------------------------------------
# dose records (vaccinations.sh)

DOSE_COLUMNS = ("person", "dose", "vaccine", "administered_at", "lot", "site", "area")


def dose_batches(path, batch, rows=0):
    """The data rows of a dose-record CSV, re-written (csv module: RFC 4180, minimal quoting) in
    batches of `batch` rows with the columns in DOSE_COLUMNS order; built before any clock."""
    import csv
    import io

    with open(path, newline="", encoding="utf-8") as f:
        rd = csv.reader(f)
        header = [h.strip().lower() for h in next(rd)]
        idx = [header.index(c) if c in header else None for c in DOSE_COLUMNS]
        out, buf, n = [], io.StringIO(), 0
        wr = csv.writer(buf, lineterminator="\n")
        total = 0
        for row in rd:
            if not row:
                continue
            wr.writerow(["" if i is None or i >= len(row) else row[i] for i in idx])
            n += 1
            total += 1
            if n == batch:
                out.append((n, buf.getvalue().encode()))
                buf.seek(0)
                buf.truncate()
                n = 0
            if rows and total >= rows:
                break
        if n:
            out.append((n, buf.getvalue().encode()))
    return out


def cmd_copy_doses(a):
    t0 = time.monotonic()
    batches = dose_batches(a.csv, a.batch, a.rows)
    prep = time.monotonic() - t0
    with connect(a.dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE doses")
        conn.execute("CHECKPOINT")
    ctx = mp.get_context("fork")
    counter = ctx.Value("q", 0)
    sql = "COPY doses (" + ", ".join(DOSE_COLUMNS) + ") FROM STDIN (FORMAT csv)"
    srv0 = tree_cpu(a.server_pid)
    results, wall = run_workers(
        _ingest_worker, a.connections, (a.dsn, batches, counter, 0, sql)
    )
    srv = tree_cpu(a.server_pid) - srv0
    rows = sum(r["rows"] for r in results)
    lat = [x for r in results for x in r["lat"]]
    cpu = sum(r["cpu_s"] for r in results)
    with connect(a.dsn) as conn:
        stored = conn.execute("SELECT count(*) FROM doses").fetchone()[0]
        persons = conn.execute("SELECT count(DISTINCT person) FROM doses").fetchone()[0]
    rep = {
        "system": "postgresql",
        "connections": a.connections,
        "batch": a.batch,
        "prepare_s": prep,
        "elapsed_s": wall,
        "rows": rows,
        "rows_stored": stored,
        "persons": persons,
        "batches": len(lat),
        "rows_per_s": rows / wall,
        "latency": latency_summary(lat),
        "client_cpu_s": cpu,
        "client_cores": cpu / wall,
        "server_cpu_s": srv,
        "server_cores": srv / wall,
    }
    write_json(a.json, rep)
    L = rep["latency"]
    print(
        f"postgres COPY doses: {rows:,} rows in {wall:.2f} s = {rep['rows_per_s']:,.0f} rows/s "
        f"({len(lat):,} COPY+COMMIT of up to {a.batch:,}, {a.connections} connections); "
        f"batch p50 {L['p50_ms']:.0f} ms max {L['max_ms']:.0f} ms; postgres CPU "
        f"{rep['server_cores']:.2f} cores; {stored:,} rows, {persons:,} persons in the table"
    )
    if stored != rows:
        sys.exit(f"postgres stored {stored} rows of {rows}")


def _med_range(xs):
    import statistics

    return statistics.median(xs), min(xs), max(xs)


def cmd_doses_summary(a):
    d = Path(a.dir)
    reps = sorted({int(p.stem.split("-")[-1]) for p in d.glob("doses-*-*.json")})
    rates = {"csv": [], "ndjson": [], "pg": []}
    cores = {"csv": [], "ndjson": [], "pg": []}
    lines = []
    for r in reps:
        row = {}
        for sysname in ("csv", "ndjson", "pg"):
            j = load(d, f"doses-{sysname}-{r}.json")
            c = load(d, f"doses-{sysname}-cpu-{r}.json")
            if not j:
                continue
            rate = j["rows_per_s"] if sysname == "pg" else j["scans_per_s"]
            rates[sysname].append(rate)
            core = j["server_cores"] if sysname == "pg" else (c or {}).get("server_cores")
            if core is not None:
                cores[sysname].append(core)
            row[sysname] = rate
        steal = []
        for sysname in ("csv", "ndjson", "pg"):
            st = d / f"doses-{sysname}-stat-{r}.txt"
            if st.exists():
                import re

                m = re.search(r"steal (\d+)%", st.read_text())
                if m:
                    steal.append(f"{sysname} {m.group(1)}%")
        pg = row.get("pg")
        lines.append(
            f"rep {r}: ours CSV {row.get('csv', 0):,.0f}, ours NDJSON {row.get('ndjson', 0):,.0f}, "
            f"postgres COPY {pg or 0:,.0f} records/s"
            + (f"; ratio CSV {row['csv'] / pg:.2f}x, NDJSON {row['ndjson'] / pg:.2f}x"
               if pg and "csv" in row and "ndjson" in row else "")
            + (f"; steal {', '.join(steal)}" if steal else "")
        )
    out = list(lines)
    for sysname, label in (("csv", "ours, CSV"), ("ndjson", "ours, NDJSON"), ("pg", "postgres COPY")):
        if rates[sysname]:
            m, lo, hi = _med_range(rates[sysname])
            cm = _med_range(cores[sysname])[0] if cores[sysname] else float("nan")
            out.append(
                f"{label:<14} median {m:,.0f} records/s (range {lo:,.0f}-{hi:,.0f}, n={len(rates[sysname])}); "
                f"server CPU median {cm:.2f} cores"
            )
    if rates["pg"] and rates["csv"] and rates["ndjson"]:
        pgm = _med_range(rates["pg"])[0]
        for sysname in ("csv", "ndjson"):
            rs = [x / y for x, y in zip(rates[sysname], rates["pg"])]
            m, lo, hi = _med_range(rs)
            out.append(
                f"ratio ours/postgres, {sysname}: {_med_range(rates[sysname])[0] / pgm:.2f}x of the "
                f"medians; per rep median {m:.2f}x (range {lo:.2f}-{hi:.2f})"
            )
    text = "\n".join(out)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


# ---------------------------------------------------------------------------------------------
# visits


def cmd_load_visits(a):
    t = time.monotonic()
    schema = "load_visits_gist.sql" if a.index == "gist" else "load_visits.sql"
    with connect(a.dsn, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("TRUNCATE visits")
            with open(a.csv, "rb") as f, cur.copy(
                "COPY visits (person, venue, vstart, vend) FROM STDIN (FORMAT csv, HEADER true)"
            ) as cp:
                while chunk := f.read(1 << 20):
                    cp.write(chunk)
            text = "\n".join(
                ln for ln in (HERE / schema).read_text().splitlines()
                if not ln.strip().startswith("--")
            )
            for stmt in text.split(";"):  # one by one: VACUUM cannot run in a transaction
                if stmt.strip():
                    cur.execute(stmt)
            n = cur.execute("SELECT count(*) FROM visits").fetchone()[0]
            mx = cur.execute("SELECT max_len FROM visit_bounds").fetchone()[0]
    print(
        f"postgres visits: {n:,} rows loaded and indexed ({a.index}) in "
        f"{time.monotonic() - t:.1f} s; longest visit {mx} s"
    )


def trace_sql(index):
    name = "trace_depth1_gist.sql" if index == "gist" else "trace_depth1.sql"
    return (HERE / name).read_text()


def sql_trace(cur, sql, person, frm, to, min_overlap):
    cur.execute(
        sql,
        {"person": person, "from": frm, "to": to, "min_overlap": min_overlap},
        prepare=True,
    )
    return json.loads(cur.fetchone()[0])


# ---------------------------------------------------------------------------------------------
# trace


def _trace_worker(k, barrier, queue, dsn, sql, persons, frm, to, min_overlap, secs, seed):
    try:
        rng = random.Random(seed * 1000 + k)
        conn = connect(dsn, autocommit=True)
        cur = conn.cursor()
        for p in persons[:3]:  # prepare the statement before the clock starts
            sql_trace(cur, sql, p, frm, to, min_overlap)
        barrier.wait(timeout=120)
        start = time.monotonic()
        cpu0 = time.process_time()
        lat, f1_total, f1_max = [], 0, 0
        while time.monotonic() - start < secs:
            p = persons[rng.randrange(len(persons))]
            t = time.monotonic()
            ans = sql_trace(cur, sql, p, frm, to, min_overlap)
            lat.append(time.monotonic() - t)
            f1_total += len(ans["f1"])
            f1_max = max(f1_max, len(ans["f1"]))
        cpu = time.process_time() - cpu0
        conn.close()
        queue.put({"lat": lat, "f1": f1_total, "f1_max": f1_max, "cpu_s": cpu})
    except Exception as e:
        queue.put({"error": f"{type(e).__name__}: {e}"})


def cmd_trace(a):
    persons = persons_of(a.persons_file)
    sql = trace_sql(a.index)
    srv0 = tree_cpu(a.server_pid)
    results, wall = run_workers(
        _trace_worker,
        a.connections,
        (a.dsn, sql, persons, a.frm, a.to, a.min_overlap, a.duration, a.seed),
    )
    srv = tree_cpu(a.server_pid) - srv0
    lat = [x for r in results for x in r["lat"]]
    cpu = sum(r["cpu_s"] for r in results)
    n = len(lat)
    rep = {
        "system": "postgresql",
        "index": a.index,
        "connections": a.connections,
        "elapsed_s": wall,
        "requests": n,
        "requests_per_s": n / wall,
        "latency": latency_summary(lat),
        "mean_f1": sum(r["f1"] for r in results) / max(n, 1),
        "max_f1": max(r["f1_max"] for r in results),
        "client_cpu_s": cpu,
        "client_cores": cpu / wall,
        "server_cpu_s": srv,
        "server_cores": srv / wall,
        "window": [a.frm, a.to],
        "min_overlap_s": a.min_overlap,
    }
    write_json(a.json, rep)
    L = rep["latency"]
    print(
        f"postgres trace depth 1 ({a.index}): {n:,} traces in {wall:.2f} s = "
        f"{rep['requests_per_s']:,.1f} traces/s; p50 {L['p50_ms']:.2f} ms p99 {L['p99_ms']:.2f} ms; "
        f"mean F1 {rep['mean_f1']:.1f}, max {rep['max_f1']}; client CPU {rep['client_cores']:.2f} "
        f"cores, postgres CPU {rep['server_cores']:.2f} cores"
    )


# ---------------------------------------------------------------------------------------------
# check


def server_trace(url, person, frm, to, min_overlap):
    body = json.dumps(
        {"person": person, "depth": 1, "from": frm, "to": to, "min_overlap_s": min_overlap}
    ).encode()
    req = urllib.request.Request(
        url.rstrip("/") + "/v1/trace",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return {"http_status": e.code, "body": e.read().decode(errors="replace")[:300]}


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"item {i}: server {json.dumps(x)} / sql {json.dumps(y)}"
    return f"lengths differ: server {len(a)} / sql {len(b)}"


def cmd_check(a):
    persons = persons_of(a.persons_file)
    rng = random.Random(a.seed)
    day = 86400
    cases = []
    for p in rng.sample(persons, a.n):
        cases.append((p, a.frm, a.to, 900, "default window"))
    with connect(a.dsn, autocommit=True) as conn:
        cur = conn.cursor()
        busiest = cur.execute(
            "SELECT person FROM visits GROUP BY person ORDER BY count(*) DESC, person LIMIT 3"
        ).fetchall()
        for (p,) in busiest:
            cases.append((p, a.frm, a.to, 900, "busiest person"))
        biggest_venue = cur.execute(
            "SELECT person FROM visits WHERE venue = (SELECT venue FROM visits GROUP BY venue "
            "ORDER BY count(*) DESC LIMIT 1) ORDER BY vend - vstart DESC, person LIMIT 2"
        ).fetchall()
        for (p,) in biggest_venue:
            cases.append((p, a.frm, a.to, 900, "at the busiest venue"))
        for p in rng.sample(persons, max(1, a.n // 4)):
            cases.append((p, a.frm, a.to, 0, "min_overlap_s 0"))
        for p in rng.sample(persons, max(1, a.n // 4)):
            f = a.frm + 5 * day + rng.randrange(day)
            cases.append((p, f, f + 2 * day + rng.randrange(day), 600, "2-3 day window, clipped"))
        sql = trace_sql(a.index)
        mismatches, report, f1_sizes = [], [], []
        for p, f, t, mo, why in cases:
            ours = server_trace(a.url, p, f, t, mo)
            theirs = sql_trace(cur, sql, p, f, t, mo)
            problems = []
            if "http_status" in ours:
                problems.append(f"server answered {ours['http_status']}: {ours['body']}")
            else:
                if ours.get("f2"):
                    problems.append(f"server f2 not empty at depth 1 ({len(ours['f2'])})")
                for key in ("visits", "f1"):
                    if ours.get(key) != theirs[key]:
                        problems.append(f"{key}: " + first_difference(ours.get(key) or [], theirs[key]))
            f1_sizes.append(len(theirs["f1"]))
            report.append(
                {"person": p, "from": f, "to": t, "min_overlap_s": mo, "why": why,
                 "visits": len(theirs["visits"]), "f1": len(theirs["f1"]), "problems": problems}
            )
            if problems:
                mismatches.append((p, why, problems))
    for p, why, problems in mismatches:
        print(f"MISMATCH {p} ({why}): " + "; ".join(problems))
    rep = {"cases": len(cases), "mismatches": len(mismatches), "details": report}
    write_json(a.json, rep)
    print(
        f"correctness check: {len(cases)} traces compared (SQL vs POST /v1/trace depth 1), "
        f"{len(mismatches)} mismatches; F1 sizes {min(f1_sizes)}..{max(f1_sizes)}, "
        f"total {sum(f1_sizes):,} contacts compared"
    )
    if mismatches:
        sys.exit(1)


# ---------------------------------------------------------------------------------------------
# cpu wrapper


def cmd_cpu(a):
    import resource
    import subprocess

    srv0 = tree_cpu(a.server_pid)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    rc = subprocess.call(a.command)
    wall = time.monotonic() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    srv = tree_cpu(a.server_pid) - srv0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    write_json(
        a.json,
        {"wall_s": wall, "client_cpu_s": cpu, "client_cores": cpu / wall,
         "server_cpu_s": srv, "server_cores": srv / wall, "rc": rc},
    )
    sys.exit(rc)


# ---------------------------------------------------------------------------------------------
# summary


def load(d, name):
    p = Path(d) / name
    return json.loads(p.read_text()) if p.exists() else None


def cmd_summary(a):
    d = a.dir
    oi, oic = load(d, "ours-ingest.json"), load(d, "ours-ingest-cpu.json")
    pi = load(d, "pg-ingest.json")
    ot, otc = load(d, "ours-trace.json"), load(d, "ours-trace-cpu.json")
    pt = load(d, "pg-trace.json")
    ck = load(d, "check.json")
    out = []
    if oi and pi:
        r = oi["scans_per_s"] / pi["rows_per_s"]
        out.append(
            f"ingest: ours {oi['scans_per_s']:,.0f} scans/s, postgres {pi['rows_per_s']:,.0f} rows/s, "
            f"ratio {r:.1f}x (target >= 20x: {'met' if r >= 20 else 'NOT met'})"
        )
        out.append(
            f"  ours: {oi['scans_accepted']:,} accepted of {oi['scans_sent']:,} in {oi['elapsed_s']:.2f} s, "
            f"batch p50 {oi['latency']['p50_ms']:.1f} ms p99 {oi['latency']['p99_ms']:.1f} ms, "
            f"errors {oi['errors_by_status'] or 'none'} {oi['transport_errors'] or ''}"
            + (f"; client CPU {oic['client_cores']:.2f} cores, server CPU {oic['server_cores']:.2f} cores"
               if oic else "")
        )
        out.append(
            f"  postgres: {pi['rows']:,} rows in {pi['elapsed_s']:.2f} s, batch p50 "
            f"{pi['latency']['p50_ms']:.1f} ms p99 {pi['latency']['p99_ms']:.1f} ms; client CPU "
            f"{pi['client_cores']:.2f} cores, postgres CPU {pi['server_cores']:.2f} cores"
        )
    if ot and pt:
        r = ot["requests_per_s"] / pt["requests_per_s"]
        out.append(
            f"trace depth 1: ours {ot['requests_per_s']:,.1f} traces/s, postgres "
            f"{pt['requests_per_s']:,.1f} traces/s, ratio {r:.1f}x (target >= 200x: "
            f"{'met' if r >= 200 else 'NOT met'})"
        )
        lat = ot["latency"]
        out.append(
            f"  ours: {ot['requests']:,} traces in {ot['elapsed_s']:.1f} s, p50 {lat['p50_ms']:.2f} ms "
            f"p99 {lat['p99_ms']:.2f} ms, mean F1 {ot.get('trace', {}).get('mean_f1', 0):.1f}, errors "
            f"{ot['errors_by_status'] or 'none'} {ot['transport_errors'] or ''}"
            + (f"; client CPU {otc['client_cores']:.2f} cores, server CPU {otc['server_cores']:.2f} cores"
               if otc else "")
        )
        lat = pt["latency"]
        out.append(
            f"  postgres ({pt['index']}): {pt['requests']:,} traces in {pt['elapsed_s']:.1f} s, p50 "
            f"{lat['p50_ms']:.2f} ms p99 {lat['p99_ms']:.2f} ms, mean F1 {pt['mean_f1']:.1f}; client CPU "
            f"{pt['client_cores']:.2f} cores, postgres CPU {pt['server_cores']:.2f} cores"
        )
    if ck:
        out.append(f"correctness: {ck['cases']} traces compared, {ck['mismatches']} mismatches")
    text = "\n".join(out)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("ingest")
    s.add_argument("--dsn", required=True)
    s.add_argument("--csv", required=True)
    s.add_argument("--batch", type=int, default=1000)
    s.add_argument("-c", "--connections", type=int, default=4)
    s.add_argument("--rows", type=int, default=0, help="send only the first N rows (0: all)")
    s.add_argument("--duration", type=float, default=0, help="stop after S seconds (0: no limit)")
    s.add_argument("--server-pid", type=int, default=0)
    s.add_argument("--json")
    s.set_defaults(fn=cmd_ingest)

    s = sub.add_parser("copy-doses")
    s.add_argument("--dsn", required=True)
    s.add_argument("--csv", required=True)
    s.add_argument("--batch", type=int, default=100000)
    s.add_argument("-c", "--connections", type=int, default=2)
    s.add_argument("--rows", type=int, default=0, help="send only the first N rows (0: all)")
    s.add_argument("--server-pid", type=int, default=0)
    s.add_argument("--json")
    s.set_defaults(fn=cmd_copy_doses)

    s = sub.add_parser("doses-summary")
    s.add_argument("--dir", required=True)
    s.add_argument("--out")
    s.set_defaults(fn=cmd_doses_summary)

    s = sub.add_parser("load-visits")
    s.add_argument("--dsn", required=True)
    s.add_argument("--csv", required=True)
    s.add_argument("--index", choices=["btree", "gist"], default="btree")
    s.set_defaults(fn=cmd_load_visits)

    for name, fn in (("trace", cmd_trace), ("check", cmd_check)):
        s = sub.add_parser(name)
        s.add_argument("--dsn", required=True)
        s.add_argument("--persons-file", required=True)
        s.add_argument("--from", dest="frm", type=int, required=True)
        s.add_argument("--to", type=int, required=True)
        s.add_argument("--index", choices=["btree", "gist"], default="btree")
        s.add_argument("--seed", type=int, default=42)
        s.add_argument("--json")
        if name == "trace":
            s.add_argument("-c", "--connections", type=int, default=4)
            s.add_argument("-d", "--duration", type=float, default=30)
            s.add_argument("--min-overlap", type=int, default=900)
            s.add_argument("--server-pid", type=int, default=0)
        else:
            s.add_argument("--url", required=True)
            s.add_argument("--n", type=int, default=20)
        s.set_defaults(fn=fn)

    s = sub.add_parser("cpu")
    s.add_argument("--server-pid", type=int, default=0)
    s.add_argument("--json")
    s.add_argument("command", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_cpu)

    s = sub.add_parser("summary")
    s.add_argument("--dir", required=True)
    s.add_argument("--out")
    s.set_defaults(fn=cmd_summary)

    a = ap.parse_args()
    if a.cmd == "cpu" and a.command[:1] == ["--"]:
        a.command = a.command[1:]
    a.fn(a)


if __name__ == "__main__":
    main()
