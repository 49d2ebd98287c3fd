#!/usr/bin/env bash
# Durable bulk import of vaccination dose records: checkin-server's POST /v1/vaccinations (CSV and
# NDJSON bodies) against PostgreSQL 15's COPY of the same rows into an indexed table, side by
# side in one run, REPS times, interleaved. See bench/peers/README.md ("Dose records").
# Usage: bench/peers/vaccinations.sh
#
# Knobs (environment):
#   ROWS=1000000 SEED=7     generated dose records (checkin-import generate --bad 0: every row
#                           valid and distinct, the 2021 campaign's vaccines, areas, lots, sites)
#   BATCH=100000            records per request / per COPY (the contract's maximum per request;
#                           NDJSON bodies are also cut under the server's 16 MiB body limit)
#   C=2                     requests in flight (our server) / connections (PostgreSQL)
#   REPS=3                  repetitions of the three runs (ours CSV, ours NDJSON, PostgreSQL)
#   FSYNC_SECS=2            seconds per pg_test_fsync test
#   WORK=                   work directory (default: a fresh mktemp -d, removed at the end)
#   KEEP=0                  1: keep the work directory
#   SKIP_BUILD=0            1: use the binaries already built
#   CARGO_TARGET_DIR        where the release binaries are (default: target/ of the repository)
set -euo pipefail

ROWS=${ROWS:-1000000}
SEED=${SEED:-7}
BATCH=${BATCH:-100000}
C=${C:-2}
REPS=${REPS:-3}
FSYNC_SECS=${FSYNC_SECS:-2}
KEEP=${KEEP:-0}
SKIP_BUILD=${SKIP_BUILD:-0}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
PY=${PYTHON:-python3}
PGBIN=/usr/lib/postgresql/15/bin

log() { printf '\n== %s  %s\n' "$(date +%T)" "$*"; }

if [[ -z "${WORK:-}" ]]; then
    WORK=$(mktemp -d /tmp/checkin-doses.XXXXXX)
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
# shellcheck source=../records/cpustat.sh
source "$HERE/../records/cpustat.sh"

cleanup() {
    local rc=$?
    set +e
    checkin_stop
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
    "$PY" -m pip install --quiet "psycopg[binary]" ||
        "$PY" -m pip install --quiet --break-system-packages "psycopg[binary]"
fi
if [[ $SKIP_BUILD != 1 ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release -p checkin-api -p checkin-loadtest -p checkin-import)
fi
LT=$BIN/checkin-loadtest

# --- machine -------------------------------------------------------------------------------------
log "machine"
echo "nproc: $(nproc)"
free -g
uptime
"$PGBIN/postgres" --version
git -C "$ROOT" log -1 --format='checkin commit: %h %s'
echo "settings: ROWS=$ROWS SEED=$SEED BATCH=$BATCH C=$C REPS=$REPS"
log "disk fsync latency (pg_test_fsync -s $FSYNC_SECS, file in $WORK)"
"$PGBIN/pg_test_fsync" -s "$FSYNC_SECS" -f "$WORK/fsync.probe" >"$WORK/pg_test_fsync.txt"
rm -f "$WORK/fsync.probe"
awk '/using one 8kB write/{on=1; next} on && /^$/{exit} on && /ops\/sec/' "$WORK/pg_test_fsync.txt"

# --- data --------------------------------------------------------------------------------------
log "generating $ROWS dose records"
"$BIN/checkin-import" generate --rows "$ROWS" --seed "$SEED" --bad 0 --now "$(date +%s)" \
    --out "$WORK/doses.csv" --areas-out "$WORK/areas.json" 2>"$WORK/expected.json"
cat "$WORK/expected.json"
PERSONS=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["persons"])' "$WORK/expected.json")
ls -l "$WORK/doses.csv"

# --- PostgreSQL --------------------------------------------------------------------------------
log "starting PostgreSQL 15 in $PGDATA"
rm -rf "$PGDATA" # a WORK reused from an earlier run
mkdir -p "$PGDATA" "$WORK/pgsock" "$WORK/pglog"
chown postgres: "$PGDATA" "$WORK/pgsock" "$WORK/pglog" 2>/dev/null || true
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust --locale=C -E UTF8 >"$WORK/initdb.log"
PGPORT=$(free_port)
cat >>"$PGDATA/postgresql.conf" <<EOF
# bench/peers/vaccinations.sh: durable (fsync, synchronous_commit, full_page_writes), tuned for
# bulk loading on this machine
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
jit = off
max_connections = 100
EOF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/pglog/postgres.log" -w -t 60 start >/dev/null
PG_PID=$(head -1 "$PGDATA/postmaster.pid")
DSN="host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres"
"$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$DSN" -f "$HERE/doses_schema.sql"
"$PGBIN/psql" -X -At "$DSN" -c "SELECT 'postgres: ' || version() || '; wal_sync_method=' || current_setting('wal_sync_method') || ', synchronous_commit=' || current_setting('synchronous_commit') || ', fsync=' || current_setting('fsync') || ', full_page_writes=' || current_setting('full_page_writes')"

# --- the runs ----------------------------------------------------------------------------------
SPORT=$(free_port)
URL=http://127.0.0.1:$SPORT

ours() { # $1: format, $2: rep
    local fmt=$1 rep=$2
    rm -rf "$WORK/ours-data"
    checkin_start "$BIN/checkin-server" "$URL" "$WORK/server.log" \
        --listen "127.0.0.1:$SPORT" --data "$WORK/ours-data"
    log "rep $rep: ours, $fmt bodies of $BATCH records, $C in flight (fresh server, fsync; load: $(cut -d' ' -f1-3 /proc/loadavg))"
    cpustat_begin
    "$PY" "$HERE/peer.py" cpu --server-pid "$SERVER_PID" --json "$WORK/doses-$fmt-cpu-$rep.json" -- \
        "$LT" vaccinations-import -q --url "$URL" -i "$WORK/doses.csv" --format "$fmt" \
        --batch "$BATCH" -c "$C" --areas "$WORK/areas.json" --json "$WORK/doses-$fmt-$rep.json"
    cpustat_end "$WORK/doses-$fmt-stat-$rep.txt"
    # Every record stored: the summary's dose1 is the generator's distinct persons.
    local dose1
    dose1=$(curl -fsS "$URL/v1/summary" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["dose1"])')
    echo "server summary: dose1 $dose1 (expected $PERSONS)"
    [[ $dose1 == "$PERSONS" ]] || { echo "MISMATCH: dose1 $dose1, expected $PERSONS"; exit 1; }
    checkin_stop
}

pg() { # $1: rep
    log "rep $1: postgres, COPY of $BATCH rows + COMMIT each, $C connections (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    cpustat_begin
    "$PY" "$HERE/peer.py" copy-doses --dsn "$DSN" --csv "$WORK/doses.csv" --batch "$BATCH" \
        -c "$C" --server-pid "$PG_PID" --json "$WORK/doses-pg-$1.json"
    cpustat_end "$WORK/doses-pg-stat-$1.txt"
}

for rep in $(seq 1 "$REPS"); do
    ours csv "$rep"
    ours ndjson "$rep"
    pg "$rep"
done

log "server log: warnings and errors"
grep -Ei 'warn|error|panic' "$WORK/server.log" | grep -v 'OPEN MODE' | head -20 || echo "(none)"
log "summary (records/s; ours = records accepted and durable / wall time of the import)"
"$PY" "$HERE/peer.py" doses-summary --dir "$WORK" --out "$WORK/summary.txt"
uptime
