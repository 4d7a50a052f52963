-- GET /v1/tasks/{id} for random seeded ids.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")
local ids, headers

function init(args)
  common.seed_random()
  ids = common.load_ids()
  headers = common.headers()
end

function request()
  return wrk.format("GET", "/v1/tasks/" .. ids[math.random(#ids)], headers)
end

done = common.done
