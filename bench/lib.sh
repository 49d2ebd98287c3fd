# Shared by the bench scripts (sourced): start and stop one checkin-server.

# checkin_start BIN URL LOG [server args...]: starts BIN in the background with the given
# arguments, appending its output to LOG; sets SERVER_PID; waits up to 60 s for URL/healthz.
checkin_start() {
    local bin=$1 url=$2 logfile=$3
    shift 3
    "$bin" "$@" >>"$logfile" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 600); do
        if curl -fsS "$url/healthz" >/dev/null 2>&1; then return 0; fi
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$logfile" >&2; return 1; }
        sleep 0.1
    done
    echo "checkin-server did not become healthy at $url" >&2
    return 1
}

# checkin_stop: SIGTERM to SERVER_PID, up to 30 s to drain and exit, then SIGKILL.
checkin_stop() {
    if [[ -n "${SERVER_PID:-}" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}
