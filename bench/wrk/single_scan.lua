-- wrk script: one scan per request (POST /v1/scans), each a distinct person, venues
-- "WRK-0".."WRK-99" (register them first; bench/wrk/run.sh does). Every request is a new
-- scan, so every answer waits for a real group commit.
-- Usage: wrk -t2 -c64 -d15s -s bench/wrk/single_scan.lua http://127.0.0.1:18080
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
-- thread_id is a global: setup() sets it in each thread's own Lua state.
thread_id = 0
local counter = 0
local base_ts = os.time() - 60

local next_thread = 0
function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"person":"wrk%d-%d","venue":"WRK-%d","ts":%d,"action":"in"}',
    thread_id, counter, counter % 100, base_ts)
  return wrk.format(nil, "/v1/scans", nil, body)
end

local errors = 0
function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"accepted":1', 1, true) then
    errors = errors + 1
    if errors <= 3 then print("unexpected answer: " .. status .. " " .. body) end
  end
end
