#!/usr/bin/env bash
# What NATS itself costs a cluster read, against what a read costs through the cluster and the
# single server (docs/BENCHMARKS.md "Cluster", "The floor under a cluster read"):
#   - cluster/examples/nats_floor.rs against the local cluster's 3 NATS servers
#     (sync_interval: always) and against 3 more servers with the same configuration but the
#     default sync_interval: a core request/reply round trip, an acknowledged publish to a
#     3-replica file stream, and the two at once on one connection;
#   - the same request/reply to a shard's status and query subjects (what a shard adds);
#   - bench/cluster/latency.py (one request at a time) through http-1 and through a single
#     server, each holding the same 20,000 scans.
# Usage: bench/cluster/floor.sh          Knobs: REPS=3 N=2000 OUT=bench/results/nats-floor-<date>
#   SKIP_BUILD=0 CARGO_TARGET_DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REPS=${REPS:-3}
N=${N:-2000}
OUT=${OUT:-$ROOT/bench/results/nats-floor-$(date -u +%Y%m%d-%H%M)}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
mkdir -p "$OUT"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -p checkin-api -p checkin-cluster --bins --example nats_floor)
fi
WORK=$(mktemp -d)
cleanup() {
    [ -f "$WORK/lazy/pids" ] && xargs -r kill <"$WORK/lazy/pids" 2>/dev/null || true
    [ -n "${SINGLE_PID:-}" ] && kill "$SINGLE_PID" 2>/dev/null || true
    CHECKIN_BIN_DIR=$BIN "$ROOT/deploy/local-cluster.sh" stop "$WORK/c" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mapfile -t URLS < <(CHECKIN_BIN_DIR=$BIN "$ROOT/deploy/local-cluster.sh" start "$WORK/c" | grep '^http://')
SYNC=$(cat "$WORK/c/conf/nats-urls")

# The same three servers' configuration without sync_interval, on other ports.
mkdir -p "$WORK/lazy"
python3 - "$WORK" <<'EOF'
import re, sys, pathlib
work = pathlib.Path(sys.argv[1])
for i in (1, 2, 3):
    t = (work / f"c/conf/nats-{i}.conf").read_text()
    t = t.replace(f"{work}/c/", f"{work}/lazy/")
    t = "\n".join(l for l in t.splitlines() if "sync_interval" not in l and not l.startswith("http:"))
    t = re.sub(r"127\.0\.0\.1:(\d+)", lambda m: "127.0.0.1:%d" % (int(m.group(1)) % 20000 + 30001), t)
    (work / f"lazy/nats-{i}.conf").write_text(t + "\n")
EOF
for i in 1 2 3; do
    nats-server -c "$WORK/lazy/nats-$i.conf" >"$WORK/lazy/nats-$i.log" 2>&1 &
    echo $! >>"$WORK/lazy/pids"
done
LAZY=$(grep -h '^listen:' "$WORK"/lazy/nats-*.conf | awk '{print "nats://" $2}' | paste -sd, -)

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN/checkin-server" --data "$WORK/single" --listen "127.0.0.1:$PORT" >"$WORK/single.log" 2>&1 &
SINGLE_PID=$!
SINGLE=http://127.0.0.1:$PORT
for url in "$SINGLE" "${URLS[0]}"; do
    until curl -fsS -m 2 -o /dev/null "$url/readyz"; do sleep 0.2; done
    python3 - "$url" <<'EOF'
import json, random, sys, time, urllib.request
url = sys.argv[1]
def post(path, body):
    r = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                               headers={"content-type": "application/json"})
    return urllib.request.urlopen(r, timeout=60).read()
post("/v1/venues", [{"id": "V-%05d" % i, "name": "v%d" % i} for i in range(100)])
rng, now = random.Random(7), int(time.time())
post("/v1/scans", [{"person": "p%06d" % rng.randrange(1000), "venue": "V-%05d" % rng.randrange(100),
                    "ts": now - rng.randrange(3 * 86400), "action": "in"} for _ in range(20000)])
EOF
done
sleep 3

export RUST_BACKTRACE=0
QUERY='{"min_seq":0,"op":{"Occupancy":{"venue":"V-00001"}}}'
{
    echo "# $(date -u +%FT%TZ) commit $(git -C "$ROOT" rev-parse --short HEAD); $(uptime)"
    for rep in $(seq "$REPS"); do
        echo "## rep $rep"
        echo "# nats_floor, sync_interval: always (the local cluster's servers), then a shard's status and query subjects"
        "$BIN/examples/nats_floor" "$SYNC" "$N" ck.status.0.1 '' ck.q.0 "$QUERY"
        echo "# nats_floor, default sync_interval (the same configuration without that line)"
        "$BIN/examples/nats_floor" "$LAZY" "$N"
        echo "# latency.py, single server"
        python3 "$HERE/latency.py" "$SINGLE" 1000 100 500
        echo "# latency.py, cluster http-1"
        python3 "$HERE/latency.py" "${URLS[0]}" 1000 100 500
    done
} | tee "$OUT/floor.txt"
