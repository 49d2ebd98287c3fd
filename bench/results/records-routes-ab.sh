#!/usr/bin/env bash
# A/B of commit 5bae97a (routes::find): the server before and after, alternating, on the same store.
# checkin-server-old: built from 5bae97a^ (git show 5bae97a^:api/src/routes.rs > api/src/routes.rs, then
# cargo build --release -p checkin-api), checkin-server-new from 5bae97a. Output: records-routes-ab.txt.
set -euo pipefail
W=${W:?a directory with checkin-server-old, checkin-server-new and rec/store (bench/records/reads.sh WORK=DIR KEEP=1)}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LT=${LT:-$ROOT/target/release/checkin-loadtest}
source $ROOT/bench/lib.sh
source $ROOT/bench/records/cpustat.sh
URL=http://127.0.0.1:18190
trap checkin_stop EXIT
uptime
for rep in 1 2 3; do
  for v in old new; do
    checkin_start $W/checkin-server-$v $URL $W/ab-server.log --listen 127.0.0.1:18190 --data $W/rec/store
    echo "== rep $rep: $v build (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    cpustat_begin
    python3 $ROOT/bench/peers/peer.py cpu --server-pid "$SERVER_PID" --json $W/ab-$v-cpu-$rep.json -- \
      $LT pass -q --url $URL --persons 1000000 --venues 100000 -c 64 -d 10s --json $W/ab-$v-$rep.json | grep -E 'requests/s|all '
    cpustat_end $W/ab-$v-stat-$rep.txt
    python3 - "$W/ab-$v-$rep.json" "$W/ab-$v-cpu-$rep.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); c = json.load(open(sys.argv[2]))
ok = r["requests_ok"] / r["elapsed_s"]
print(f"  server CPU {c['server_cores']:.2f} cores = {c['server_cores'] / ok * 1e6:.1f} us per pass; client {c['client_cores'] / ok * 1e6:.1f} us per pass")
PY
    checkin_stop
  done
done
uptime
