#!/usr/bin/env bash
# Health-record reads over HTTP against a release checkin-server holding SCANS scans and
# DOSE_ROWS dose records (about 1 M vaccinated persons at the defaults): GET
# /v1/persons/{id}/pass (each with its durable audit entry), certificate issue
# (GET /v1/persons/{id}/certificate, audited, signed per request) and verification
# (POST /v1/verify), REPS runs of each, interleaved. See docs/BENCHMARKS.md ("Health records").
# Usage: bench/records/reads.sh
#
# Knobs (environment):
#   SCANS=10000000 PERSONS=1000000 VENUES=100000   the scans (checkin-loadtest generate)
#   DOSE_ROWS=2300000 SEED=7   dose records (checkin-import generate --bad 0; 2.3 M rows name
#                              about 1.0 M persons p000000..., the ids of the scans' persons)
#   REPS=3 SECS=10             runs of each read, and their length
#   PASS_C=64                  pass: HTTP/1.1 connections (gate devices each hold one)
#   PASS_C2=256                also a pass run with this many connections (0: none)
#   PASS_H2=1                  also a pass run over one HTTP/2 connection with PASS_C streams
#   PASS_WRK=1                 also a pass run driven by wrk (bench/wrk/pass.lua, -t2), when wrk
#                              is installed (apt-get install wrk): a client that costs the shared
#                              cores less than checkin-loadtest
#   CERT_C=32                  certificates: connections, issue and verify
#   POOL=2000                  verify: certificates issued first (untimed), picked at random
#   WORK=                      work directory (default: a fresh mktemp -d, removed at the end);
#                              a WORK whose store was filled before is reused as it is
#   KEEP=0                     1: keep the work directory (a filled store for later runs)
#   SKIP_BUILD=0               1: use the binaries already built
#   CARGO_TARGET_DIR           where the release binaries are (default: target/ of the repository)
set -euo pipefail

SCANS=${SCANS:-10000000}
PERSONS=${PERSONS:-1000000}
VENUES=${VENUES:-100000}
DOSE_ROWS=${DOSE_ROWS:-2300000}
SEED=${SEED:-7}
REPS=${REPS:-3}
SECS=${SECS:-10}
PASS_C=${PASS_C:-64}
PASS_C2=${PASS_C2:-256}
PASS_H2=${PASS_H2:-1}
PASS_WRK=${PASS_WRK:-1}
CERT_C=${CERT_C:-32}
POOL=${POOL:-2000}
KEEP=${KEEP:-0}
SKIP_BUILD=${SKIP_BUILD:-0}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
PY=${PYTHON:-python3}
PEER=$ROOT/bench/peers/peer.py

log() { printf '\n== %s  %s\n' "$(date +%T)" "$*"; }

if [[ -z "${WORK:-}" ]]; then
    WORK=$(mktemp -d /tmp/checkin-records.XXXXXX)
    OWN_WORK=1
else
    mkdir -p "$WORK"
    OWN_WORK=0
fi
SERVER_PID=

# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=cpustat.sh
source "$HERE/cpustat.sh"

cleanup() {
    local rc=$?
    set +e
    checkin_stop
    if [[ $KEEP == 1 || $OWN_WORK == 0 ]]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $SKIP_BUILD != 1 ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release -p checkin-api -p checkin-loadtest -p checkin-import)
fi
LT=$BIN/checkin-loadtest
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT

log "machine"
echo "nproc: $(nproc)"
free -g
uptime
git -C "$ROOT" log -1 --format='checkin commit: %h %s'
echo "settings: SCANS=$SCANS PERSONS=$PERSONS VENUES=$VENUES DOSE_ROWS=$DOSE_ROWS REPS=$REPS SECS=$SECS PASS_C=$PASS_C CERT_C=$CERT_C POOL=$POOL"

start() {
    checkin_start "$BIN/checkin-server" "$URL" "$WORK/server.log" \
        --listen "127.0.0.1:$PORT" --data "$WORK/store"
}

if [[ ! -f $WORK/store.filled ]]; then
    rm -rf "$WORK/store" "$WORK/ds"
    log "generating $SCANS scans ($PERSONS persons, $VENUES venues, 14 days ending now)"
    "$LT" generate -q --out "$WORK/ds" --format ndjson --scans "$SCANS" --persons "$PERSONS" \
        --venues "$VENUES"
    log "generating $DOSE_ROWS dose records"
    "$BIN/checkin-import" generate --rows "$DOSE_ROWS" --seed "$SEED" --bad 0 --now "$(date +%s)" \
        --out "$WORK/doses.csv" --areas-out "$WORK/areas.json" 2>"$WORK/expected.json"
    cat "$WORK/expected.json"
    start
    log "ingesting the scans (NDJSON batches of 1,000, 8 connections)"
    "$LT" ingest -q --url "$URL" -i "$WORK/ds/scans.ndjson" --batch 1000 -c 8 \
        --json "$WORK/fill-scans.json" | grep -E 'scans/s|elapsed'
    log "importing the dose records (CSV bodies of 100,000, 2 in flight)"
    "$LT" vaccinations-import -q --url "$URL" -i "$WORK/doses.csv" --format csv -c 2 \
        --areas "$WORK/areas.json" --json "$WORK/fill-doses.json" | grep -E 'records/s|elapsed|areas'
    rm -rf "$WORK/ds"
    touch "$WORK/store.filled"
else
    log "reusing the filled store in $WORK/store"
    start
fi
echo "stats:   $(curl -fsS "$URL/v1/stats")"
echo "summary: $(curl -fsS "$URL/v1/summary")"

run() { # name rep -- loadtest args...
    local name=$1 rep=$2
    shift 3
    log "rep $rep: $name (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    cpustat_begin
    "$PY" "$PEER" cpu --server-pid "$SERVER_PID" --json "$WORK/$name-cpu-$rep.json" -- \
        "$LT" "$@" -q --url "$URL" --json "$WORK/$name-$rep.json"
    cpustat_end "$WORK/$name-stat-$rep.txt"
}

for rep in $(seq 1 "$REPS"); do
    run pass "$rep" -- pass --persons "$PERSONS" --venues "$VENUES" -c "$PASS_C" -d "${SECS}s"
    if [[ $PASS_C2 != 0 ]]; then
        run pass-c2 "$rep" -- pass --persons "$PERSONS" --venues "$VENUES" -c "$PASS_C2" \
            -d "${SECS}s"
    fi
    if [[ $PASS_H2 == 1 ]]; then
        run pass-h2 "$rep" -- pass --persons "$PERSONS" --venues "$VENUES" -c "$PASS_C" --http2 \
            -d "${SECS}s"
    fi
    if [[ $PASS_WRK == 1 ]] && command -v wrk >/dev/null; then
        log "rep $rep: pass-wrk (load: $(cut -d' ' -f1-3 /proc/loadavg))"
        cpustat_begin
        "$PY" "$PEER" cpu --server-pid "$SERVER_PID" --json "$WORK/pass-wrk-cpu-$rep.json" -- \
            env PERSONS="$PERSONS" wrk -t2 -c"$PASS_C" -d"${SECS}s" --latency \
            -s "$ROOT/bench/wrk/pass.lua" "$URL" | tee "$WORK/pass-wrk-$rep.txt"
        cpustat_end "$WORK/pass-wrk-stat-$rep.txt"
    fi
    run issue "$rep" -- certificates --mode issue --persons "$PERSONS" --venues "$VENUES" \
        -c "$CERT_C" -d "${SECS}s"
    run verify "$rep" -- certificates --mode verify --pool "$POOL" --persons "$PERSONS" \
        --venues "$VENUES" -c "$CERT_C" -d "${SECS}s"
done

log "server log: warnings and errors"
grep -Ei 'warn|error|panic' "$WORK/server.log" | grep -v 'OPEN MODE' | head -20 || echo "(none)"
log "summary (requests/s answered 2xx; medians over $REPS runs, ranges)"
"$PY" "$HERE/summary.py" "$WORK" | tee "$WORK/summary.txt"
uptime
