#!/usr/bin/env bash
# Read lag across HTTP nodes (docs/cluster.md, "Read-your-writes"): 2 M scans sent through http-1
# of a fresh local cluster while one replica of each shard is paused (SIGSTOP, so it is behind
# when it resumes), then 201 persons' visits read through http-2 at once and compared, pass after
# pass, with a single server fed the same scans. Prints one JSON line a pass per run.
#
#   bash bench/cluster/read-lag.sh [RUNS]     (default 2; release binaries in target/release)
#
# Environment: CHECKIN_BIN_DIR (default target/release), OUT (default /tmp/read-lag).
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${CHECKIN_BIN_DIR:-$here/target/release}"
out="${OUT:-/tmp/read-lag}"
runs="${1:-2}"
rm -rf "$out" && mkdir -p "$out"
end_ts=$(( $(date +%s) - 3600 ))
"$bin/checkin-loadtest" -q generate --out "$out/ds" --scans 2000000 --persons 50000 \
  --venues 2000 --format ndjson --days 10 --end-ts "$end_ts" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/checkin-server" --data "$out/single" --listen "127.0.0.1:$port" >"$out/single.log" 2>&1 &
single=$!
trap 'kill $single 2>/dev/null || true; "$here/deploy/local-cluster.sh" stop "$out/cl" >/dev/null 2>&1 || true' EXIT
until curl -fsS -m 1 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do sleep 0.2; done
"$bin/checkin-loadtest" -q ingest --url "http://127.0.0.1:$port" --input "$out/ds/scans.ndjson" \
  --batch 1000 -c 4 >/dev/null
python3 "$here/bench/cluster/read_lag.py" want "http://127.0.0.1:$port" 201 "$out/want.json" "$end_ts"
for run in $(seq 1 "$runs"); do
  rm -rf "$out/cl"
  CHECKIN_BIN_DIR="$bin" "$here/deploy/local-cluster.sh" start "$out/cl" 2>&1 | tail -2 >"$out/urls"
  h1=$(sed -n 1p "$out/urls"); h2=$(sed -n 2p "$out/urls")
  "$bin/checkin-loadtest" -q ingest --url "$h1" --input "$out/ds/scans.ndjson" --batch 1000 -c 8 \
    >"$out/ingest-$run.txt" 2>&1 &
  ingest=$!
  sleep 2
  kill -STOP $(cat "$out/cl/pids/shard-0-2.pid") $(cat "$out/cl/pids/shard-1-2.pid")
  wait $ingest
  kill -CONT $(cat "$out/cl/pids/shard-0-2.pid") $(cat "$out/cl/pids/shard-1-2.pid")
  t0=$(python3 -c 'import time; print(time.time())')
  echo "== run $run: $(grep 'scans/s' "$out/ingest-$run.txt" | xargs)"
  python3 "$here/bench/cluster/read_lag.py" read "$h2" 201 "$out/want.json" "$end_ts" "$t0"
  "$here/deploy/local-cluster.sh" stop "$out/cl" >/dev/null 2>&1
done
