#!/usr/bin/env bash
# One scan per request against a fresh checkin-server, measured with wrk (closed loop, keep-alive,
# durable acknowledgements). wrk is a C client and costs the shared 2 cores less than our own
# load generator, so this shows what the server itself sustains. Usage: bench/wrk/run.sh
#
# Knobs (environment):
#   C=64 THREADS=2 SECS=15 RUNS=3   wrk connections, threads, seconds per run, runs
#   DURABILITY=fsync                --durability of the server
#   PORT=18080                      loopback port
#   SKIP_BUILD=0                    1: use the binaries already in target/release
# Needs wrk (Debian: apt-get install wrk); the script installs it with apt-get when missing and
# it can (root).
set -euo pipefail

C=${C:-64}
THREADS=${THREADS:-2}
SECS=${SECS:-15}
RUNS=${RUNS:-3}
DURABILITY=${DURABILITY:-fsync}
PORT=${PORT:-18080}
SKIP_BUILD=${SKIP_BUILD:-0}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
URL=http://127.0.0.1:$PORT

if ! command -v wrk >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        apt-get install -y wrk >/dev/null
    else
        echo "wrk is not installed (Debian: apt-get install wrk)" >&2
        exit 1
    fi
fi
if [[ $SKIP_BUILD != 1 ]]; then
    cargo build --release -p checkin-api --manifest-path "$ROOT/Cargo.toml"
fi

# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
DATA=$(mktemp -d /tmp/checkin-wrk.XXXXXX)
SERVER_PID=
cleanup() {
    checkin_stop
    rm -rf "$DATA"
}
trap cleanup EXIT

checkin_start "$ROOT/target/release/checkin-server" "$URL" "$DATA/server.log" \
    --data "$DATA/store" --listen "127.0.0.1:$PORT" --durability "$DURABILITY"
venues=$(for i in $(seq 0 99); do printf '{"id":"WRK-%d","name":"wrk %d"}\n' "$i" "$i"; done |
    paste -sd, -)
curl -sf -H 'Content-Type: application/json' --data-binary "[$venues]" "$URL/v1/venues" >/dev/null

echo "checkin-server --durability $DURABILITY; wrk -t$THREADS -c$C -d${SECS}s, $RUNS run(s)"
answered=0
for run in $(seq "$RUNS"); do
    out=$(wrk -t"$THREADS" -c"$C" -d"${SECS}s" --latency -s "$HERE/single_scan.lua" "$URL")
    if grep -q "unexpected answer\|Non-2xx\|Socket errors" <<<"$out"; then
        echo "$out" >&2
        echo "run $run: the server refused or failed requests (above)" >&2
        exit 1
    fi
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    answered=$((answered + $(awk '/requests in/ {print $1}' <<<"$out")))
    echo "run $run: $rps req/s, p50 $p50, p99 $p99"
done
# Every answered request was a distinct scan: the store must hold at least that many (requests
# cut off by wrk's deadline may be stored without being counted as answered).
stored=$(curl -sf "$URL/v1/stats" | sed -E 's/.*"scans":([0-9]+).*/\1/')
echo "answered $answered requests; the store holds $stored scans"
if (( stored < answered )); then
    echo "fewer scans stored than acknowledged" >&2
    exit 1
fi
