-- wrk script: server-side decisions, one entity per request, rotating through KEYS entity keys.
-- From the environment (bench/decide.sh sets them):
--   DECIDE_PATH    the request path, with %d where the entity number goes
--   AUTHORIZATION  the Authorization header's value
--   KEYS           how many distinct entities (default 1024)
local path = os.getenv("DECIDE_PATH")
local keys = tonumber(os.getenv("KEYS") or "1024")
wrk.headers["Authorization"] = os.getenv("AUTHORIZATION")

-- The requests are formatted once, up front: building one per call in Lua costs wrk more than
-- a fast server spends answering it, and the load generator must not be what is measured.
local requests = {}
for i = 1, keys do
  requests[i] = wrk.format("GET", string.format(path, i - 1))
end
local counter = 0

request = function()
  counter = counter % keys + 1
  return requests[counter]
end

-- One machine-readable line for bench/decide.sh: requests/s, p50, p90, p99 (ms), non-2xx and
-- socket errors.
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout
  io.write(string.format("RESULT %.0f %.3f %.3f %.3f %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, summary.errors.status, errors))
end
