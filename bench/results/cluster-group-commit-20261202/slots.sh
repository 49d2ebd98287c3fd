#!/usr/bin/env bash
# usage: slots.sh SLOTS, in a checkout with group-commit.patch applied and release binaries
# built (the patch reads CHECKIN_SCAN_SLOTS); see README.md here.
set -e
cd "$(dirname "$0")/../../.."
BIN=target/release
W=/tmp/slots-$1; rm -rf $W; mkdir -p $W
if [ ! -f /tmp/slotdata/half-00 ]; then
  mkdir -p /tmp/slotdata
  $BIN/checkin-loadtest --quiet generate --out /tmp/slotdata --scans 2000000 --persons 1000000 --venues 100000 --end-ts $(date +%s) --format ndjson >/dev/null
  split -n l/2 -d /tmp/slotdata/scans.ndjson /tmp/slotdata/half-; rm /tmp/slotdata/scans.ndjson
fi
mapfile -t URLS < <(CHECKIN_SCAN_SLOTS=$1 CHECKIN_BIN_DIR=$BIN deploy/local-cluster.sh start $W/c | grep '^http://')
$BIN/checkin-loadtest --quiet ingest --url ${URLS[0]} --input /tmp/slotdata/half-00 --venues-file /tmp/slotdata/venues.json --scans 0 >/dev/null
cpu() { for f in $W/c/pids/*.pid; do n=$(basename $f .pid); p=$(cat $f); echo "$n $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null)"; done; }
cpu > $W/cpu0
s=$(date +%s.%N)
$BIN/checkin-loadtest --quiet ingest --url ${URLS[0]} --input /tmp/slotdata/half-00 --no-register --batch 100 --connections 32 --json $W/a.json >/dev/null &
a=$!
$BIN/checkin-loadtest --quiet ingest --url ${URLS[1]} --input /tmp/slotdata/half-01 --no-register --batch 100 --connections 32 --json $W/b.json >/dev/null &
b=$!
wait $a $b
e=$(date +%s.%N)
cpu > $W/cpu1
join $W/cpu0 $W/cpu1 | awk '{printf "%s %.1fs  ", $1, ($3-$2)/100} END {print ""}'
ps -o pid,comm,time -C checkin-loadtest >/dev/null 2>&1 || true
mon=$(cat $W/c/conf/nats-1.monitor)
msgs=$(curl -s "$mon/jsz?streams=true" | python3 -c 'import json,sys; d=json.load(sys.stdin); print([s["state"]["messages"] for a in d.get("account_details",[]) for s in a.get("stream_detail",[]) if s["name"]=="CHECKIN"])')
python3 -c "import json; a=json.load(open('$W/a.json')); b=json.load(open('$W/b.json')); n=a['scans_accepted']+b['scans_accepted']; t=$e-$s; print('slots $1', n, 'scans/s %.0f'%(n/t), 'p50', a['latency']['p50_ms'], 'msgs', '$msgs')"
CHECKIN_BIN_DIR=$BIN deploy/local-cluster.sh stop $W/c
rm -rf $W
