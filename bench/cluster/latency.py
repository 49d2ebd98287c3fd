#!/usr/bin/env python3
"""Where a read's time goes: one connection, one request at a time, to one server or cluster node.

Usage: bench/cluster/latency.py URL PERSONS VENUES [N]

Measures N requests (default 500) of each kind, persons and venues drawn at random from the
loadtest generator's ids (p000000.., V-00000..), and prints one line per kind:
`KIND p50_ms p90_ms ok` (ok: the requests answered 200 or 404, the rest failed).

  trace      POST /v1/trace, depth 1, the last 14 days   (audit || the trace's rounds)
  status     GET /v1/persons/{id}/status                 (audit || a read of the health domain)
  visits     GET /v1/persons/{id}/visits                 (audit || one shard's visits)
  occupancy  GET /v1/venues/{id}/occupancy               (no audit; every shard in cluster mode)

In cluster mode the audit entry of a read is a publish to the replicated audit stream (R3,
fsynced on a quorum) made alongside the read, so `status` shows that publish's floor; on the
single server it is an fsynced append to the local audit.log.
"""

import http.client
import json
import random
import sys
import time
import urllib.parse


def main() -> None:
    url, persons, venues = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 500
    parsed = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    now = int(time.time())
    rng = random.Random(11)

    def person() -> str:
        return "p%06d" % rng.randrange(persons)

    def measure(kind, make):
        times, ok = [], 0
        for _ in range(n):
            method, path, body = make()
            headers = {"content-type": "application/json"} if body else {}
            started = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            times.append((time.perf_counter() - started) * 1000.0)
            ok += response.status in (200, 404)
        times.sort()
        print(f"{kind} {times[len(times) // 2]:.2f} {times[int(len(times) * 0.9)]:.2f} {ok}")

    frm = now - 14 * 86400
    measure("trace", lambda: ("POST", "/v1/trace", json.dumps(
        {"person": person(), "from": frm, "to": now, "depth": 1})))
    measure("status", lambda: ("GET", f"/v1/persons/{person()}/status", None))
    measure("visits", lambda: ("GET", f"/v1/persons/{person()}/visits?from={frm}&to={now}", None))
    measure("occupancy", lambda: (
        "GET", "/v1/venues/V-%05d/occupancy" % rng.randrange(venues), None))


if __name__ == "__main__":
    main()
