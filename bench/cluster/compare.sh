#!/usr/bin/env bash
# Cluster mode against the single-node server, side by side in one run, on the same scans
# (issue "Cluster mode on NATS JetStream", docs/BENCHMARKS.md "Cluster"):
#   1. durable batched intake: the same NDJSON file, split in two halves sent at once by two
#      checkin-loadtest processes (to the single server; to http-1 and http-2 of the cluster);
#   2. depth-1 traces (POST /v1/trace) for random persons, once every replica has caught up,
#      then one request at a time of each read kind (bench/cluster/latency.py: the audit floor);
#   3. a shard replica killed with kill -9 and restarted: time until it serves again, caught up
#      with the stream (from its checkpoint); then the same replica killed, its store removed
#      and started as a new replica (it replays its shard's share of the SCANS scans);
#   4. the shard's other replica killed: time until the first read of that shard is answered;
#   5. the HTTP nodes' replicas of the health domain: a case registered through http-1 right
#      after the intake (answered once its replica has applied every scan before it), then read
#      back through http-2; http-2 killed and restarted (its replica resumes from its checkpoint),
#      then killed again with its store removed (its replica is rebuilt from the whole stream),
#      then killed again with its store replaced by a copy of http-1's latest replica snapshot.
# Prints a table and the ratios; raw reports (checkin-loadtest --json) stay in OUT.
#
# Usage: bench/cluster/compare.sh
# Knobs (environment): SCANS=10000000 PERSONS=1000000 VENUES=100000 BATCH=10000 C=4 (per
#   loadtest process) TRACE_SECS=20 TRACE_C=2 SHARDS=2 OUT=bench/results/cluster-<date>
#   SKIP_BUILD=0 CARGO_TARGET_DIR
set -euo pipefail

SCANS=${SCANS:-10000000}
PERSONS=${PERSONS:-1000000}
VENUES=${VENUES:-100000}
BATCH=${BATCH:-10000}
C=${C:-4}
TRACE_SECS=${TRACE_SECS:-20}
TRACE_C=${TRACE_C:-2}
SHARDS=${SHARDS:-2}
SKIP_BUILD=${SKIP_BUILD:-0}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
OUT=${OUT:-$ROOT/bench/results/cluster-$(date +%Y%m%d-%H%M)}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1

if [[ $SKIP_BUILD != 1 ]]; then
    (cd "$ROOT" && cargo build --release -p checkin-api -p checkin-cluster -p checkin-loadtest \
        --bin checkin-server --bin checkin-shard --bin checkin-cluster-status --bin checkin-loadtest)
fi

source "$HERE/../lib.sh"
WORK=$(mktemp -d /tmp/checkin-cluster-bench.XXXXXX)
SERVER_PID=
cleanup() {
    checkin_stop
    CHECKIN_BIN_DIR=$BIN "$ROOT/deploy/local-cluster.sh" stop "$WORK/cluster" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

note() { echo "== $(date +%T) $*  (load $(cut -d' ' -f1-3 /proc/loadavg))"; }
field() { # FILE PYTHON-EXPRESSION-ON-r
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"
}

END=$(date +%s)
note "generating $SCANS scans ($PERSONS persons, $VENUES venues, ending $END)"
"$BIN/checkin-loadtest" --quiet generate --out "$WORK/data" --scans "$SCANS" --persons "$PERSONS" \
    --venues "$VENUES" --end-ts "$END" --format ndjson >/dev/null
split -n l/2 -d "$WORK/data/scans.ndjson" "$WORK/data/half-"
rm "$WORK/data/scans.ndjson"

# ingest NAME URL1 URL2: registers the venues through URL1, then sends the two halves at once.
ingest() {
    local name=$1 url1=$2 url2=$3
    "$BIN/checkin-loadtest" --quiet ingest --url "$url1" --input "$WORK/data/half-00" \
        --venues-file "$WORK/data/venues.json" --scans 0 >/dev/null
    local started=$(date +%s.%N)
    "$BIN/checkin-loadtest" --quiet ingest --url "$url1" --input "$WORK/data/half-00" --no-register \
        --batch "$BATCH" --connections "$C" --json "$OUT/$name-ingest-1.json" >/dev/null &
    local a=$!
    "$BIN/checkin-loadtest" --quiet ingest --url "$url2" --input "$WORK/data/half-01" --no-register \
        --batch "$BATCH" --connections "$C" --json "$OUT/$name-ingest-2.json" >/dev/null &
    local b=$!
    wait "$a" "$b"
    local ended=$(date +%s.%N)
    python3 - "$OUT/$name-ingest-1.json" "$OUT/$name-ingest-2.json" "$started" "$ended" "$name" \
        >"$OUT/$name-ingest.txt" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
secs = float(sys.argv[4]) - float(sys.argv[3])
acc = a["scans_accepted"] + b["scans_accepted"]
rej = a["scans_rejected"] + b["scans_rejected"]
failed = (a["requests"] - a["requests_ok"]) + (b["requests"] - b["requests_ok"])
print(f"{sys.argv[5]} {acc} {rej} {failed} {secs:.3f} {acc / secs:.0f} "
      f"{max(a['latency']['p50_ms'], b['latency']['p50_ms']):.1f} "
      f"{max(a['latency']['p99_ms'], b['latency']['p99_ms']):.1f}")
PY
    cat "$OUT/$name-ingest.txt"
}

# trace NAME URL
trace() {
    "$BIN/checkin-loadtest" --quiet trace --url "$2" --depth 1 --persons "$PERSONS" \
        --venues "$VENUES" --duration "${TRACE_SECS}s" --connections "$TRACE_C" \
        --json "$OUT/$1-trace.json" >/dev/null
    field "$OUT/$1-trace.json" \
        "'%d %.0f %.2f %.2f' % (r['requests_ok'], r['requests_per_s'], r['latency']['p50_ms'], r['latency']['p99_ms'])"
}

# --- single node -------------------------------------------------------------------------
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SINGLE=http://127.0.0.1:$PORT
checkin_start "$BIN/checkin-server" "$SINGLE" "$OUT/single-server.log" \
    --data "$WORK/single" --listen "127.0.0.1:$PORT"
note "single node: ingesting"
read -r _ s_acc s_rej s_fail s_secs s_rate s_p50 s_p99 < <(ingest single "$SINGLE" "$SINGLE")
note "single node: depth-1 traces"
read -r s_tn s_trate s_tp50 s_tp99 < <(trace single "$SINGLE")
note "single node: one request at a time (bench/cluster/latency.py)"
python3 "$HERE/latency.py" "$SINGLE" "$PERSONS" "$VENUES" >"$OUT/single-latency.txt"
checkin_stop

# --- cluster -----------------------------------------------------------------------------
note "cluster: starting ($SHARDS shards x 2 replicas, 3 NATS servers, 2 HTTP nodes)"
# The HTTP nodes snapshot their replicas every 10 s of applying (step 5 seeds http-2 from one).
mapfile -t URLS < <(CHECKIN_BIN_DIR=$BIN CHECKIN_SHARDS=$SHARDS CHECKIN_REPLICA_SNAPSHOT_EVERY=10 \
    "$ROOT/deploy/local-cluster.sh" start "$WORK/cluster" | grep '^http://')
NATS_URLS=$(cat "$WORK/cluster/conf/nats-urls")
status() { "$BIN/checkin-cluster-status" --cluster "$NATS_URLS" --shards "$SHARDS" "$@"; }
note "cluster: ingesting through ${URLS[0]} and ${URLS[1]}"
read -r _ c_acc c_rej c_fail c_secs c_rate c_p50 c_p99 < <(ingest cluster "${URLS[0]}" "${URLS[1]}")
# The HTTP nodes' replicas (the health domain) follow the whole stream: a case registered
# through http-1 right after the intake is answered once http-1's replica has applied every scan
# before it; then it is read back through http-2.
PROBE_PERSON=$(head -n 1 "$WORK/data/half-00" | python3 -c 'import json,sys; print(json.load(sys.stdin)["person"])')
note "cluster: a case through http-1 right after the intake"
t0=$(date +%s.%N)
# A 503 (the replica had not applied it within 30 s) is retried: the same id is idempotent.
case_refused=0
until curl -fs -m 60 -o "$OUT/cluster-case.json" -H 'content-type: application/json' \
    -d "{\"id\":\"bench-case\",\"person\":\"$PROBE_PERSON\",\"sampled_at\":$((END - 3600))}" \
    "${URLS[0]}/v1/cases"; do
    case_refused=$((case_refused + 1))
    sleep 0.1
done
note "cluster: the case was answered after $case_refused refusals (503 while the replica caught up)"
t1=$(date +%s.%N)
until curl -fsS -m 10 -o /dev/null "${URLS[1]}/v1/cases/bench-case"; do sleep 0.02; done
t2=$(date +%s.%N)
case_s=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
case_other_s=$(python3 -c "print(f'{$t2 - $t0:.2f}')")
note "cluster: waiting until every replica has applied the stream"
caught=$(status --wait 900 | tail -n 1)
echo "$caught"
note "cluster: depth-1 traces"
read -r c_tn c_trate c_tp50 c_tp99 < <(trace cluster "${URLS[0]}")
note "cluster: one request at a time (bench/cluster/latency.py)"
python3 "$HERE/latency.py" "${URLS[0]}" "$PERSONS" "$VENUES" >"$OUT/cluster-latency.txt"

# restart_timed OUTFILE [fresh]: kill -9 shard-0-1, (fresh: remove its store,) start it again
# and wait until it serves caught up; prints the seconds from its start.
restart_timed() {
    kill -9 "$(cat "$WORK/cluster/pids/shard-0-1.pid")"
    sleep 1
    [[ ${2:-} == fresh ]] && rm -rf "$WORK/cluster/shard-0-1"
    local t0 t1
    t0=$(date +%s.%N)
    CHECKIN_BIN_DIR=$BIN "$ROOT/deploy/local-cluster.sh" restart "$WORK/cluster" shard-0-1
    status --only 0-1 --wait 900 >"$OUT/$1"
    t1=$(date +%s.%N)
    python3 -c "print(f'{$t1 - $t0:.2f}')"
}
note "cluster: kill -9 shard-0-1, restart it, wait until it serves caught up"
restart_s=$(restart_timed cluster-restart.txt)
note "cluster: shard-0-1 as a new replica (kill -9, store removed): replays its shard's share"
new_replica_s=$(restart_timed cluster-new-replica.txt fresh)

note "cluster: kill -9 shard-0-2; the restarted replica takes shard 0 alone"
kill -9 "$(cat "$WORK/cluster/pids/shard-0-2.pid")"
t0=$(date +%s.%N)
# A venue's occupancy asks every shard, so shard 0 too: the first one answered.
probe=$(head -n 1 "$WORK/data/half-00" | python3 -c 'import json,sys; print(json.load(sys.stdin)["venue"])')
until curl -fsS -m 10 -o /dev/null "${URLS[0]}/v1/venues/$probe/occupancy"; do sleep 0.01; done
t1=$(date +%s.%N)
takeover_s=$(python3 -c "print(f'{$t1 - $t0:.3f}')")

# http_restart_timed [fresh]: kill -9 http-2, (fresh: remove its replica's store,) start it
# again and wait until its health domain answers; prints the seconds from its start and the
# 503s it answered before.
http_restart_timed() {
    kill -9 "$(cat "$WORK/cluster/pids/http-2.pid")"
    sleep 1
    [[ ${1:-} == fresh || ${1:-} == seeded ]] && rm -rf "$WORK/cluster/http-2/cluster-cache"
    if [[ ${1:-} == seeded ]]; then
        # A copy of http-1's latest replica snapshot, taken while http-1 runs.
        local snaps="$WORK/cluster/http-1/cluster-snapshots"
        cat "$snaps/LATEST" >"$OUT/seeded-from.txt"
        cp -r "$snaps/$(cat "$snaps/LATEST")" "$WORK/cluster/http-2/cluster-cache"
    fi
    local t0 t1 refused=0
    t0=$(date +%s.%N)
    CHECKIN_BIN_DIR=$BIN "$ROOT/deploy/local-cluster.sh" restart "$WORK/cluster" http-2 >&2
    # Refused (503) while its replica catches up: counted, not printed one line each.
    until curl -fs -m 10 -o /dev/null "${URLS[1]}/v1/persons/$PROBE_PERSON/status"; do
        refused=$((refused + 1))
        sleep 0.05
    done
    t1=$(date +%s.%N)
    python3 -c "print(f'{$t1 - $t0:.2f} $refused')"
}
note "cluster: kill -9 http-2 and restart it: its replica resumes from its checkpoint"
read -r http_restart_s http_refused < <(http_restart_timed)
note "cluster: http-2 as a new node (kill -9, store removed): its replica replays the whole stream"
read -r http_fresh_s http_fresh_refused < <(http_restart_timed fresh)
note "cluster: http-2 as a new node seeded from a copy of http-1's latest snapshot"
read -r http_seeded_s http_seeded_refused < <(http_restart_timed seeded)
note "cluster: http-2 answered the status after $http_refused refusals (restart), $http_fresh_refused (new node), $http_seeded_refused (seeded)"

{
    echo "scans $SCANS, persons $PERSONS, venues $VENUES, batch $BATCH, 2 loadtest processes x $C connections"
    echo "cluster: 3 NATS (R3, file, sync_interval always), $SHARDS shards x 2 replicas, 2 HTTP nodes; all on $(nproc) cores"
    echo
    printf '%-34s %14s %14s %8s\n' figure single cluster ratio
    printf '%-34s %14s %14s %8s\n' "intake, accepted scans/s" "$s_rate" "$c_rate" \
        "$(python3 -c "print(f'{$c_rate / $s_rate:.2f}')")"
    printf '%-34s %14s %14s\n' "intake, accepted / rejected / failed requests" "$s_acc/$s_rej/$s_fail" "$c_acc/$c_rej/$c_fail"
    printf '%-34s %14s %14s\n' "intake, request p50 / p99 ms" "$s_p50/$s_p99" "$c_p50/$c_p99"
    printf '%-34s %14s %14s %8s\n' "depth-1 trace p50 ms" "$s_tp50" "$c_tp50" \
        "$(python3 -c "print(f'{$c_tp50 / $s_tp50:.2f}')")"
    printf '%-34s %14s %14s %8s\n' "depth-1 trace p99 ms" "$s_tp99" "$c_tp99" \
        "$(python3 -c "print(f'{$c_tp99 / $s_tp99:.2f}')")"
    printf '%-34s %14s %14s\n' "depth-1 traces/s ($TRACE_C connections)" "$s_trate" "$c_trate"
    # One connection, one request at a time: where a read's time goes (the audit entry of a
    # status read is the cluster's R3 publish, made alongside the read).
    while read -r kind sp50 sp90 sok && read -r _ cp50 cp90 cok <&3; do
        printf '%-34s %14s %14s %8s\n' "1 conn: $kind p50 / p90 ms" "$sp50/$sp90" "$cp50/$cp90" \
            "$(python3 -c "print(f'{$cp50 / $sp50:.2f}')")"
    done <"$OUT/single-latency.txt" 3<"$OUT/cluster-latency.txt"
    echo
    echo "all replicas caught up after the intake: $caught"
    echo "shard-0-1 killed and restarted: serving, caught up, ${restart_s} s after the restart (from its checkpoint)"
    echo "shard-0-1 as a new replica (store removed): serving, caught up, ${new_replica_s} s after its start (replays shard 0's share)"
    echo "shard-0-2 killed: first read of shard 0 answered ${takeover_s} s later"
    echo "a case through http-1 right after the intake: answered in ${case_s} s (its replica had applied the scans before it), read back through http-2 ${case_other_s} s after it was sent"
    echo "http-2 killed and restarted: its health domain served again ${http_restart_s} s after the restart (replica resumed from its checkpoint)"
    echo "http-2 killed, store removed, started as a new node: served ${http_fresh_s} s after its start (replica rebuilt from the whole stream)"
    echo "http-2 killed, store replaced by a copy of http-1's latest snapshot: served ${http_seeded_s} s after its start (the copy not counted; snapshot of stream sequence $(cat "$OUT/seeded-from.txt"))"
} | tee "$OUT/summary.txt"
