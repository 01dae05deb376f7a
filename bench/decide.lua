-- wrk script: server-side decide for a different entity on every request.
-- SWITCHYARD_TOKEN and MIGRATION come from the environment (see bench/decide.sh).
local token = os.getenv("SWITCHYARD_TOKEN")
local migration = os.getenv("MIGRATION") or "bench.decide"
wrk.headers["Authorization"] = "Bearer " .. token
local counter = 0

request = function()
  counter = counter + 1
  return wrk.format("GET", "/v1/migrations/" .. migration .. "/decide?entity_key=user-" .. counter)
end
