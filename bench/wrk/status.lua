-- wrk script: GET /v1/persons/{id}/status for random persons p000000..p(N-1) (the load
-- generator's ids), N = the PERSONS environment variable (default 1000000). Counts the answers
-- by tier and fails loudly on anything but 200.
-- Usage: PERSONS=1000000 wrk -t2 -c64 -d10s -s bench/wrk/status.lua http://127.0.0.1:18080
local persons = tonumber(os.getenv("PERSONS") or "1000000")
local width = #tostring(persons - 1)
if width < 6 then width = 6 end
local fmt = "/v1/persons/p%0" .. width .. "d/status"

function init(args)
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8), 16) or 0))
end

function request()
  return wrk.format("GET", string.format(fmt, math.random(0, persons - 1)))
end

local errors = 0
local tiers = {}
function response(status, headers, body)
  if status ~= 200 then
    errors = errors + 1
    if errors <= 3 then print("unexpected answer: " .. status .. " " .. body) end
    return
  end
  local tier = string.match(body, '"tier":"([^"]+)"') or "?"
  tiers[tier] = (tiers[tier] or 0) + 1
end

function done(summary, latency, requests)
  if summary.errors.status > 0 then
    print("Non-2xx answers: " .. summary.errors.status)
  end
end
