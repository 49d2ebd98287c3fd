#!/usr/bin/env bash
# Peer comparison: checkin-server against PostgreSQL 15 on this machine, same data, same client
# concurrency, one run. See bench/peers/README.md. Usage: bench/peers/run.sh
#
# Knobs (environment):
#   SCANS=1000000 PERSONS=100000 VENUES=10000 SEED=42   generated data set
#   C=4                     client concurrency (connections / processes) for both systems
#   INGEST_ROWS=0           rows sent to each system (0: the whole file)
#   TRACE_SECS=60           duration of each trace run
#   CHECK_N=20              random persons in the correctness check (plus busiest persons etc.)
#   PG_INDEX=btree          btree (venue, vstart, vend) or gist (venue, int8range) for the trace
#   TRACE_DURABILITY=fsync  --durability of our server for the trace run (every trace appends a
#                           durable audit entry first; "os" shows what that fsync costs)
#   FSYNC_SECS=2            seconds per pg_test_fsync test
#   WORK=                   work directory (default: a fresh mktemp -d, removed at the end)
#   KEEP=0                  1: keep the work directory (data, logs, JSON reports)
#   SKIP_BUILD=0            1: use the binaries already in target/release
set -euo pipefail

SCANS=${SCANS:-1000000}
PERSONS=${PERSONS:-100000}
VENUES=${VENUES:-10000}
SEED=${SEED:-42}
C=${C:-4}
INGEST_ROWS=${INGEST_ROWS:-0}
TRACE_SECS=${TRACE_SECS:-60}
CHECK_N=${CHECK_N:-20}
PG_INDEX=${PG_INDEX:-btree}
TRACE_DURABILITY=${TRACE_DURABILITY:-fsync}
FSYNC_SECS=${FSYNC_SECS:-2}
KEEP=${KEEP:-0}
SKIP_BUILD=${SKIP_BUILD:-0}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=$ROOT/target/release
PY=${PYTHON:-python3}
PGBIN=/usr/lib/postgresql/15/bin

log() { printf '\n== %s  %s\n' "$(date +%T)" "$*"; }

# --- work directory and teardown --------------------------------------------------------------
if [[ -z "${WORK:-}" ]]; then
    WORK=$(mktemp -d /tmp/checkin-peers.XXXXXX)
    OWN_WORK=1
else
    mkdir -p "$WORK"
    OWN_WORK=0
fi
chmod 755 "$WORK"
PGDATA=$WORK/pg
SERVER_PID=

as_pg() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
stop_server() { checkin_stop; }

cleanup() {
    local rc=$?
    set +e
    stop_server
    if [[ -f "$PGDATA/postmaster.pid" ]]; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null 2>&1 ||
            kill -KILL "$(head -1 "$PGDATA/postmaster.pid")" 2>/dev/null
    fi
    if [[ $KEEP == 1 || $OWN_WORK == 0 ]]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- prerequisites -----------------------------------------------------------------------------
if [[ ! -x $PGBIN/postgres ]]; then
    log "installing postgresql-15"
    apt-get update
    apt-get install -y postgresql-15
fi
if ! "$PY" -c 'import psycopg' 2>/dev/null; then
    log "installing psycopg"
    "$PY" -m pip install --quiet "psycopg[binary]"
fi
if [[ $SKIP_BUILD != 1 ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release -p checkin-api -p checkin-loadtest &&
        cargo build --release -p checkin-bench --bin export_visits)
fi
LT=$BIN/checkin-loadtest

# --- machine -------------------------------------------------------------------------------------
log "machine"
echo "nproc: $(nproc)"
free -g
"$PGBIN/postgres" --version
git -C "$ROOT" log -1 --format='checkin commit: %h %s'
echo "settings: SCANS=$SCANS PERSONS=$PERSONS VENUES=$VENUES SEED=$SEED C=$C INGEST_ROWS=$INGEST_ROWS TRACE_SECS=$TRACE_SECS PG_INDEX=$PG_INDEX TRACE_DURABILITY=$TRACE_DURABILITY"
log "disk fsync latency (pg_test_fsync -s $FSYNC_SECS, file in $WORK)"
"$PGBIN/pg_test_fsync" -s "$FSYNC_SECS" -f "$WORK/fsync.probe" | tee "$WORK/pg_test_fsync.txt"
rm -f "$WORK/fsync.probe"

# --- data --------------------------------------------------------------------------------------
log "generating $SCANS scans"
"$LT" generate -q --out "$WORK/data" --format ndjson,csv --scans "$SCANS" --persons "$PERSONS" \
    --venues "$VENUES" --seed "$SEED" --json "$WORK/generate.json"

# --- PostgreSQL --------------------------------------------------------------------------------
log "starting PostgreSQL 15 in $PGDATA"
mkdir -p "$PGDATA" "$WORK/pgsock" "$WORK/pglog"
chown postgres: "$PGDATA" "$WORK/pgsock" "$WORK/pglog" 2>/dev/null || true
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust --locale=C -E UTF8 >"$WORK/initdb.log"
PGPORT=$(free_port)
cat >>"$PGDATA/postgresql.conf" <<EOF
# bench/peers/run.sh: durable, tuned for a bulk-ingest + read benchmark on this machine
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$WORK/pgsock'
fsync = on
synchronous_commit = on
full_page_writes = on
shared_buffers = 1GB
wal_buffers = 64MB
max_wal_size = 8GB
min_wal_size = 1GB
checkpoint_timeout = 30min
maintenance_work_mem = 512MB
work_mem = 32MB
effective_cache_size = 8GB
random_page_cost = 1.1
jit = off
max_connections = 100
EOF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/pglog/postgres.log" -w -t 60 start >/dev/null
PG_PID=$(head -1 "$PGDATA/postmaster.pid")
DSN="host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres"
"$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$DSN" -f "$HERE/schema.sql"
"$PGBIN/psql" -X -At "$DSN" -c "SELECT 'postgres: ' || version() || '; wal_sync_method=' || current_setting('wal_sync_method') || ', synchronous_commit=' || current_setting('synchronous_commit') || ', fsync=' || current_setting('fsync')"

# --- our server --------------------------------------------------------------------------------
start_server() { # $1: durability
    checkin_start "$BIN/checkin-server" "http://127.0.0.1:$SPORT" "$WORK/server.log" \
        --listen "127.0.0.1:$SPORT" --data "$WORK/ours-data" --durability "$1"
}
SPORT=$(free_port)
URL=http://127.0.0.1:$SPORT
log "starting checkin-server (release, fsync durability, fresh data dir) on $URL"
start_server fsync

ROWS_FLAG=()
[[ $INGEST_ROWS != 0 ]] && ROWS_FLAG=(--scans "$INGEST_ROWS")

# --- (a) ingestion -----------------------------------------------------------------------------
log "(a) ingest, ours: NDJSON batches of 1000, $C connections"
"$PY" "$HERE/peer.py" cpu --server-pid "$SERVER_PID" --json "$WORK/ours-ingest-cpu.json" -- \
    "$LT" ingest -q --url "$URL" --batch 1000 -c "$C" -i "$WORK/data/scans.ndjson" \
    "${ROWS_FLAG[@]}" --json "$WORK/ours-ingest.json"

log "(a) ingest, postgres: COPY of 1000 rows + COMMIT per batch, $C connections"
"$PY" "$HERE/peer.py" ingest --dsn "$DSN" --csv "$WORK/data/scans.csv" --batch 1000 -c "$C" \
    --rows "$INGEST_ROWS" --server-pid "$PG_PID" --json "$WORK/pg-ingest.json"

# --- visits: exactly what our engine derives --------------------------------------------------
log "exporting our engine's visits (server stopped, copy of its data dir)"
stop_server
cp -a "$WORK/ours-data" "$WORK/ours-data-copy"
"$BIN/export_visits" --data "$WORK/ours-data-copy" --persons "$WORK/data/scans.csv" \
    --out "$WORK/visits.csv"
rm -rf "$WORK/ours-data-copy"
"$PY" "$HERE/peer.py" load-visits --dsn "$DSN" --csv "$WORK/visits.csv" --index "$PG_INDEX"
log "restarting checkin-server on its data dir (durability $TRACE_DURABILITY)"
start_server "$TRACE_DURABILITY"

# One fixed window for both systems: the contract's default (the last 14 days), fixed now.
TO=$(date +%s)
FROM=$((TO - 14 * 86400))

# --- (b) depth-1 trace -------------------------------------------------------------------------
log "(b) trace depth 1, ours: POST /v1/trace, $C connections, ${TRACE_SECS}s, window [$FROM, $TO]"
"$PY" "$HERE/peer.py" cpu --server-pid "$SERVER_PID" --json "$WORK/ours-trace-cpu.json" -- \
    "$LT" trace -q --url "$URL" --depth 1 -c "$C" -d "${TRACE_SECS}s" -i "$WORK/data/scans.csv" \
    --sample-lines "$((SCANS + 1))" --from "$FROM" --to "$TO" --min-overlap 900 \
    --json "$WORK/ours-trace.json"

log "(b) trace depth 1, postgres: one SQL statement per trace, $C connections, ${TRACE_SECS}s"
"$PY" "$HERE/peer.py" trace --dsn "$DSN" --persons-file "$WORK/data/scans.csv" -c "$C" \
    -d "$TRACE_SECS" --from "$FROM" --to "$TO" --min-overlap 900 --index "$PG_INDEX" \
    --server-pid "$PG_PID" --json "$WORK/pg-trace.json"

# --- correctness -------------------------------------------------------------------------------
log "correctness: SQL depth-1 trace vs POST /v1/trace"
CHECK_RC=0
"$PY" "$HERE/peer.py" check --dsn "$DSN" --url "$URL" --persons-file "$WORK/data/scans.csv" \
    --from "$FROM" --to "$TO" --n "$CHECK_N" --index "$PG_INDEX" --json "$WORK/check.json" ||
    CHECK_RC=$?

# --- report --------------------------------------------------------------------------------------
log "server log: warnings and errors"
grep -Ei 'warn|error|panic' "$WORK/server.log" | head -20 || echo "(none)"
log "disk fsync latency (pg_test_fsync: one 8 kB write + sync)"
awk '/using one 8kB write/{on=1; next} on && /^$/{exit} on && /ops\/sec/' "$WORK/pg_test_fsync.txt"
log "summary"
"$PY" "$HERE/peer.py" summary --dir "$WORK" --out "$WORK/summary.txt"
if [[ $CHECK_RC != 0 ]]; then
    echo "CORRECTNESS CHECK FAILED: the SQL trace and our server disagree (see above)"
    exit 1
fi
