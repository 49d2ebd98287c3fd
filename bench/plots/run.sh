#!/usr/bin/env bash
# Benchmark plots: throughput vs connections (HTTP, checkin-server + checkin-loadtest on loopback)
# and engine trace latency vs store size (trace_loop over the cached bench stores).
#
# Usage: bench/plots/run.sh            (about 3-4 minutes on the 2-core machine; bounded < 6 min)
#
# Writes bench/plots/results.json (raw numbers, machine, date, commit), bench/plots/results.csv
# (one row per measurement) and docs/img/throughput-vs-connections.png,
# docs/img/trace-latency-vs-store-size.png. Re-plot from the committed numbers without measuring:
#   python3 bench/plots/plot.py --from-json bench/plots/results.json
#
# Knobs (environment):
#   CONNS="1 2 4 8 16 32"     client connections per point
#   BATCH_SCANS=200000        scans sent per batched (NDJSON, 1,000 per request) run
#   SINGLE_SECS=5             seconds per one-scan-per-request run
#   TRACE_SECS=5              seconds per HTTP depth-1 trace run
#   STORE_SIZES="1000000 3000000 10000000"  engine stores for the trace-latency plot (a missing
#                             store is built with `checkin-bench --bin memory`, which caches it)
#   D1_TRACES=2000 D2_TRACES=200   traces found per store (see "trace_loop" below)
#   SKIP_BUILD=0 SKIP_HTTP=0 SKIP_STORES=0
#   WORK=                     work directory (default: fresh mktemp -d, removed at the end)
#   KEEP=0                    1: keep the work directory (server logs, JSON reports)
set -euo pipefail

CONNS=${CONNS:-"1 2 4 8 16 32"}
BATCH_SCANS=${BATCH_SCANS:-200000}
SINGLE_SECS=${SINGLE_SECS:-5}
TRACE_SECS=${TRACE_SECS:-5}
STORE_SIZES=${STORE_SIZES:-"1000000 3000000 10000000"}
D1_TRACES=${D1_TRACES:-2000}
D2_TRACES=${D2_TRACES:-200}
SKIP_BUILD=${SKIP_BUILD:-0}
SKIP_HTTP=${SKIP_HTTP:-0}
SKIP_STORES=${SKIP_STORES:-0}
KEEP=${KEEP:-0}
NOW=1800000000 # the bench stores' ManualClock

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=$ROOT/target/release
LT=$BIN/checkin-loadtest
PY=${PYTHON:-python3}

log() { printf '== %s  %s\n' "$(date +%T)" "$*" >&2; }

if [[ -z "${WORK:-}" ]]; then
    WORK=$(mktemp -d /tmp/checkin-plots.XXXXXX)
    OWN_WORK=1
else
    mkdir -p "$WORK"
    OWN_WORK=0
fi
SERVER_PID=
DATA=

# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
stop_server() {
    checkin_stop
    if [[ -n "$DATA" ]]; then rm -rf "$DATA"; DATA=; fi
}

cleanup() {
    local rc=$?
    set +e
    stop_server
    if [[ $KEEP == 1 || $OWN_WORK == 0 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    [[ $rc == 0 ]] || log "FAILED (exit $rc)"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts a release checkin-server (fsync durability, the default) on a free loopback port with a
# fresh data directory; sets URL.
start_server() {
    local name=$1 port
    port=$(free_port)
    DATA=$WORK/data-$name
    rm -rf "$DATA"
    URL=http://127.0.0.1:$port
    checkin_start "$BIN/checkin-server" "$URL" "$WORK/server-$name.log" \
        --data "$DATA" --listen "127.0.0.1:$port"
}

loadavg() { cut -d' ' -f1 /proc/loadavg; }

# --- prerequisites ---------------------------------------------------------------------------
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib"
    "$PY" -m pip install --quiet matplotlib
fi
if [[ $SKIP_BUILD != 1 ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release -q -p checkin-api -p checkin-loadtest -p checkin-engine --examples)
fi

{
    echo "date=$(date -u +%Y-%m-%d)"
    echo "started=$(date -u +%FT%TZ)"
    echo "nproc=$(nproc)"
    echo "mem_gib=$(awk '/MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
    echo "commit=$(git -C "$ROOT" rev-parse --short HEAD)"
    echo "rustc=$(rustc --version | cut -d' ' -f2)"
    echo "loadavg_start=$(loadavg)"
    echo "conns=$CONNS"
    echo "batch_scans=$BATCH_SCANS"
    echo "single_secs=$SINGLE_SECS"
    echo "trace_secs=$TRACE_SECS"
} >"$WORK/meta.env"
log "machine: $(nproc) cores, load average $(loadavg)"

# --- 1. HTTP throughput vs connections --------------------------------------------------------
if [[ $SKIP_HTTP != 1 ]]; then
    mkdir -p "$WORK/http"
    log "generating the data set (1 M scans, 100 k persons, 10 k venues)"
    timeout 60 "$LT" generate -o "$WORK/ds" --scans 1000000 --persons 100000 --venues 10000 \
        --format ndjson -q >"$WORK/generate.txt"
    SCANS=$WORK/ds/scans.ndjson

    for c in $CONNS; do
        # A fresh server and data directory per point, so every batched run stores new scans
        # (no run is slowed or sped up by the previous run's store or duplicates).
        start_server "ingest-c$c"
        log "c=$c  batched: NDJSON 1,000 scans/request, $BATCH_SCANS scans (load $(loadavg))"
        timeout 120 "$LT" ingest --url "$URL" -q -b 1000 -c "$c" -i "$SCANS" --scans "$BATCH_SCANS" \
            --json "$WORK/http/batch-c$c.json" >"$WORK/http/batch-c$c.txt"
        log "c=$c  single: 1 scan/request, ${SINGLE_SECS}s (load $(loadavg))"
        timeout $((SINGLE_SECS + 60)) "$LT" ingest --url "$URL" -q -b 1 -c "$c" -d "${SINGLE_SECS}s" \
            --no-register --json "$WORK/http/single-c$c.json" >"$WORK/http/single-c$c.txt"
        stop_server
    done

    # Traces: one server holding the whole 1 M data set, the same store for every point.
    start_server trace
    log "loading 1 M scans for the trace runs"
    timeout 120 "$LT" ingest --url "$URL" -q -b 1000 -c 8 -i "$SCANS" \
        --json "$WORK/http/trace-load.json" >"$WORK/http/trace-load.txt"
    for c in $CONNS; do
        log "c=$c  depth-1 traces, ${TRACE_SECS}s (load $(loadavg))"
        timeout $((TRACE_SECS + 60)) "$LT" trace --url "$URL" -q -i "$SCANS" --depth 1 -c "$c" \
            -d "${TRACE_SECS}s" --json "$WORK/http/trace-c$c.json" >"$WORK/http/trace-c$c.txt"
    done
    stop_server
fi

# --- 2. engine trace latency vs store size ----------------------------------------------------
# trace_loop traces the persons numbered (i * 7919) mod 1,000,000 for i < COUNT, i.e. it assumes
# the 10 M store's 1 M persons; a store of N scans has N/10 persons, so only about N/10 M of the
# ids exist. COUNT is scaled by 10 M / N so that every store gets about the same number of traces
# (D1_TRACES at depth 1, D2_TRACES at depth 2); the number actually traced is recorded.
if [[ $SKIP_STORES != 1 ]]; then
    mkdir -p "$WORK/store"
    for n in $STORE_SIZES; do
        store=$(ls -d "$ROOT"/target/bench-stores/s"$n"-* 2>/dev/null | head -1 || true)
        if [[ -z "$store" || ! -f "$store/BENCH_COMPLETE" ]]; then
            log "building the $n-scan store (checkin-bench memory)"
            (cd "$ROOT" && timeout 300 cargo run --release -q -p checkin-bench --bin memory -- \
                --scans "$n" >"$WORK/store/memory-$n.txt")
            store=$(ls -d "$ROOT"/target/bench-stores/s"$n"-* | head -1)
        fi
        echo "$n $(du -sb "$store" | cut -f1) $(basename "$store")" >>"$WORK/store/stores.txt"
        scale=$(((10000000 + n - 1) / n))
        for spec in "1 $((D1_TRACES * scale))" "2 $((D2_TRACES * scale))"; do
            set -- $spec
            log "store $n scans: depth-$1 trace_loop, COUNT $2 (load $(loadavg))"
            timeout 120 "$BIN/examples/trace_loop" "$store" "$NOW" "$1" "$2" \
                >"$WORK/store/s$n-d$1.txt"
            cat "$WORK/store/s$n-d$1.txt" >&2
        done
    done
fi
echo "loadavg_end=$(loadavg)" >>"$WORK/meta.env"
echo "finished=$(date -u +%FT%TZ)" >>"$WORK/meta.env"

# --- 3. collect and plot ------------------------------------------------------------------------
"$PY" "$HERE/plot.py" --work "$WORK" --out-json "$HERE/results.json" --out-csv "$HERE/results.csv" \
    --img "$ROOT/docs/img"
log "done"
