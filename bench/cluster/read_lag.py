"""Read lag across HTTP nodes (bench/cluster/read-lag.sh runs it).

  read_lag.py want SINGLE_URL N WANT_FILE TO    reads N persons' visits from a single server
  read_lag.py read NODE_URL N WANT_FILE TO T0   reads them through a cluster node, in passes,
                                                until all equal the single server's; prints
                                                one JSON line a pass (times since T0)."""
import json, sys, time, urllib.request, urllib.error
mode, url, n, want_file, to = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
persons = [f'p{i * 249 % 50000:06d}' for i in range(n)]
def get(u, p):
    path = f'/v1/persons/{p}/visits?from=0&to={to}'
    for _ in range(40):
        try:
            with urllib.request.urlopen(u + path, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 503: time.sleep(0.25); continue
            return e.code
    return 'gave up'
if mode == 'want':
    json.dump({p: get(url, p) for p in persons}, open(want_file, 'w'))
    sys.exit(0)
want = json.load(open(want_file))
t0 = float(sys.argv[6])
for attempt in range(10):
    start = time.time() - t0
    diff = sum(1 for p in persons if get(url, p) != want[p])
    print(json.dumps({'pass': attempt, 'started_s': round(start, 2), 'ended_s': round(time.time() - t0, 2), 'differ': diff}), flush=True)
    if diff == 0: break
