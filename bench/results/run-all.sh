#!/bin/sh
# Runs every criterion bench with short settings; output goes to bench/results/*.txt.
cd "$(dirname "$0")/../.." || exit 1
for b in ingest occupancy trace recovery; do
  cargo bench -p checkin-bench --bench "$b" -- --warm-up-time 1 --measurement-time 5 > "bench/results/$b.txt" 2>&1
done
