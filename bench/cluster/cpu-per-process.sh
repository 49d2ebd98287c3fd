#!/usr/bin/env bash
# Where the cluster's CPU goes during a durable intake (docs/BENCHMARKS.md, "Cluster: CPU per
# process during intake"): starts the local cluster (2 shards x 2 replicas, 3 NATS servers,
# 2 HTTP nodes) from the release binaries, sends SCANS generated scans in two halves at once
# (one checkin-loadtest per HTTP node, batches of 10,000, 4 connections each), and prints each
# process's CPU seconds (utime + stime from /proc) during the intake and including SETTLE
# seconds after it (the replicas applying what they deferred), per scan.
# Usage: bench/cluster/cpu-per-process.sh   (build first: the cargo build line of compare.sh)
# Knobs: SCANS=4000000 SETTLE=15 WORK=/tmp/checkin-cpu; PERF=NAME records `perf` call graphs of
#   process NAME for 6 s of the intake into WORK/perf.data, PERF_AFTER=NAME for 5 s after it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
SCANS=${SCANS:-4000000}
W=${WORK:-/tmp/checkin-cpu}
CHECKIN_BIN_DIR=$BIN $ROOT/deploy/local-cluster.sh stop $W/cluster >/dev/null 2>&1 || true
rm -rf $W; mkdir -p $W
END=$(date +%s)
$BIN/checkin-loadtest --quiet generate --out $W/data --scans $SCANS --persons 1000000 --venues 100000 --end-ts $END --format ndjson >/dev/null
split -n l/2 -d $W/data/scans.ndjson $W/data/half-; rm $W/data/scans.ndjson
mapfile -t URLS < <(CHECKIN_BIN_DIR=$BIN CHECKIN_SHARDS=2 $ROOT/deploy/local-cluster.sh start $W/cluster | grep '^http://')
$BIN/checkin-loadtest --quiet ingest --url ${URLS[0]} --input $W/data/half-00 --venues-file $W/data/venues.json --scans 0 >/dev/null
sleep 3
cpu() { for f in $W/cluster/pids/*.pid; do n=$(basename $f .pid); p=$(cat $f); echo "$n $(awk '{print $14+$15}' /proc/$p/stat)"; done; }
cpu > $W/cpu0
t0=$(date +%s.%N)
$BIN/checkin-loadtest --quiet ingest --url ${URLS[0]} --input $W/data/half-00 --no-register --batch 10000 --connections 4 --json $W/i1.json >/dev/null & a=$!
$BIN/checkin-loadtest --quiet ingest --url ${URLS[1]} --input $W/data/half-01 --no-register --batch 10000 --connections 4 --json $W/i2.json >/dev/null & b=$!
if [[ ${PERF:-} ]]; then sleep 2; perf record -F 299 --call-graph dwarf,16384 -p $(cat $W/cluster/pids/$PERF.pid) -o $W/perf.data -- sleep 6 >/dev/null 2>&1 & fi
wait $a $b
t1=$(date +%s.%N)
cpu > $W/cpu1
if [[ ${PERF_AFTER:-} ]]; then perf record -F 299 --call-graph dwarf,16384 -p $(cat $W/cluster/pids/$PERF_AFTER.pid) -o $W/perf-after.data -- sleep 5 >/dev/null 2>&1; fi
sleep ${SETTLE:-15}
cpu > $W/cpu2
python3 - $W $t0 $t1 <<'PY'
import json,sys
w,t0,t1=sys.argv[1],float(sys.argv[2]),float(sys.argv[3])
def rd(f): return dict((l.split()[0],int(l.split()[1])) for l in open(f))
c0,c1,c2=rd(w+'/cpu0'),rd(w+'/cpu1'),rd(w+'/cpu2')
a=json.load(open(w+'/i1.json')); b=json.load(open(w+'/i2.json'))
acc=a['scans_accepted']+b['scans_accepted']; secs=t1-t0
print(f"accepted {acc} in {secs:.2f}s = {acc/secs:.0f}/s; load {open('/proc/loadavg').read().split()[:3]}")
tot=0;tot2=0
for n in sorted(c0):
    d=(c1[n]-c0[n])/100; d2=(c2[n]-c0[n])/100; tot+=d; tot2+=d2
    print(f"{n:12s} {d:7.2f} s during, {d2:7.2f} s incl. settle; {d2*1e6/acc:6.2f} us/scan")
print(f"total {tot:.2f} s during ({tot/secs:.2f} cores), {tot2:.2f} incl settle; {tot2*1e6/acc:.2f} us/scan")
PY
echo "loadtest CPU not counted"
CHECKIN_BIN_DIR=$BIN $ROOT/deploy/local-cluster.sh stop $W/cluster >/dev/null 2>&1 || true
