-- wrk script: GET /v1/persons/{id}/pass for random persons p000000..p{PERSONS-1} (the ids of
-- checkin-loadtest's and checkin-import's generators), each answered after its audit entry is
-- durable. A cross-check of `checkin-loadtest pass` with a client that costs the shared cores
-- less. Usage: PERSONS=1000000 wrk -t2 -c64 -d10s -s bench/wrk/pass.lua http://127.0.0.1:18080
local persons = tonumber(os.getenv("PERSONS") or "1000000")
local width = math.max(6, #tostring(persons - 1))
local fmt = "/v1/persons/p%0" .. width .. "d/pass"

thread_id = 0
local next_thread = 0
function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  math.randomseed(42 + thread_id)
end

function request()
  return wrk.format("GET", string.format(fmt, math.random(0, persons - 1)))
end

local errors = 0
function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"color":', 1, true) then
    errors = errors + 1
    if errors <= 3 then print("unexpected answer: " .. status .. " " .. body) end
  end
end

function done(summary, latency, requests)
  io.write(string.format("pass: %d requests, %d unexpected answers\n", summary.requests, errors))
end
