-- 80% GET /v1/tasks/{id} (random seeded ids), 20% POST /v1/tasks.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")
local post_headers, get_headers
local ids

function init(args)
  common.seed_random()
  ids = common.load_ids()
  post_headers = common.headers({ ["Content-Type"] = "application/json" })
  get_headers = common.headers()
end

function request()
  if math.random(100) <= 20 then
    return wrk.format("POST", "/v1/tasks", post_headers, common.post_body())
  end
  return wrk.format("GET", "/v1/tasks/" .. ids[math.random(#ids)], get_headers)
end

done = common.done
