#!/usr/bin/env bash
# GET /v1/persons/{id}/status over HTTP against a release checkin-server holding SCANS scans and
# about CASES counted cases (contract section 10; issue "Cases, tiers and exposure sites": ≥ 20 k/s
# at 10 M scans and 1,000 cases). The store is filled by checkin-loadtest ingest, which registers
# cases along the way (--cases-per-min) for persons it has sent scans for, then up to CASES; then wrk drives the
# status route for random persons (bench/wrk/status.lua), RUNS runs of SECS seconds.
# Usage: bench/cases/status.sh
#
# Knobs (environment): SCANS=10000000 PERSONS=1000000 VENUES=100000 CASES_PER_MIN=3000
#   CASES=1000 (topped up after the fill) RUNS=3 SECS=10 C=64 THREADS=2 PORT=18090 SKIP_BUILD=0
#   SETTLE_MAX=600 (longest wait for the server to go idle before the runs; 0: no wait) CARGO_TARGET_DIR
set -euo pipefail

SCANS=${SCANS:-10000000}
PERSONS=${PERSONS:-1000000}
VENUES=${VENUES:-100000}
CASES_PER_MIN=${CASES_PER_MIN:-3000}
CASES=${CASES:-1000}
RUNS=${RUNS:-3}
SECS=${SECS:-10}
C=${C:-64}
THREADS=${THREADS:-2}
PORT=${PORT:-18090}
SKIP_BUILD=${SKIP_BUILD:-0}
SETTLE_MAX=${SETTLE_MAX:-600}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
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
    (cd "$ROOT" && cargo build --release -p checkin-api -p checkin-loadtest)
fi

source "$HERE/../lib.sh"
DATA=$(mktemp -d /tmp/checkin-status.XXXXXX)
SERVER_PID=
cleanup() {
    checkin_stop
    rm -rf "$DATA"
}
trap cleanup EXIT

checkin_start "$BIN/checkin-server" "$URL" "$DATA/server.log" \
    --data "$DATA/store" --listen "127.0.0.1:$PORT"
echo "== $(date +%T) filling: $SCANS scans, $PERSONS persons, $VENUES venues, $CASES_PER_MIN cases/min"
"$BIN/checkin-loadtest" ingest --url "$URL" --scans "$SCANS" --persons "$PERSONS" \
    --venues "$VENUES" --batch 1000 --connections 16 --cases-per-min "$CASES_PER_MIN" --quiet \
    | tail -n 12
cases=$(curl -sf "$URL/v1/cases" | grep -o '"id":' | wc -l)
# Registrations during a loaded fill come one at a time and fall behind: top up to CASES after
# it, for random persons of the fill (a 409 for a person who already has a case is skipped).
if (( cases < CASES )); then
    echo "== $(date +%T) $cases cases after the fill; registering more until $CASES"
    now=$(date +%s)
    last=$((PERSONS - 1)); width=$(( ${#last} < 6 ? 6 : ${#last} ))
    i=0
    while (( cases < CASES && i < 4 * CASES )); do
        i=$((i + 1))
        person=$(printf "p%0${width}d" $(( (RANDOM * 32768 + RANDOM) % PERSONS )))
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
            -d "{\"id\":\"top-up-$i\",\"person\":\"$person\",\"sampled_at\":$((now - 6 * 3600))}" \
            "$URL/v1/cases")
        [[ $code == 201 ]] && cases=$((cases + 1))
    done
fi
cases=$(curl -sf "$URL/v1/cases" | grep -o '"id":' | wc -l)
# The health thread applies the fill's scans to the standing traces after they are acknowledged
# (late scans, and scans of case persons that derive their case again); reads measured before it
# is done share the cores with it. Wait until the server is idle: under 5 % of a core over 2 s.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
hz=$(getconf CLK_TCK)
waited=0
while (( waited < SETTLE_MAX )); do
    a=$(cpu_ticks); sleep 2; b=$(cpu_ticks); waited=$((waited + 2))
    (( (b - a) * 100 < 2 * hz * 5 )) && break
done
echo "== $(date +%T) server idle after ${waited} s (standing traces caught up with the fill)"
stored=$(curl -sf "$URL/v1/stats" | sed -E 's/.*"scans":([0-9]+).*/\1/')
echo "== $(date +%T) the store holds $stored scans and $cases cases; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq "$RUNS"); do
    out=$(PERSONS=$PERSONS wrk -t"$THREADS" -c"$C" -d"${SECS}s" --latency -s "$HERE/../wrk/status.lua" "$URL")
    if grep -q "unexpected answer\|Non-2xx\|Socket errors" <<<"$out"; then
        echo "$out" >&2
        echo "run $run: the server refused or failed requests (above)" >&2
        exit 1
    fi
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    echo "run $run: $rps req/s, p50 $p50, p99 $p99 (wrk -t$THREADS -c$C -d${SECS}s; load average $(cut -d' ' -f1-3 /proc/loadavg))"
done
