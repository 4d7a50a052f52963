-- GET /v1/tasks?limit=20: the newest page, alternating with a status filter.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")
local paths = { "/v1/tasks?limit=20", "/v1/tasks?limit=20&status=todo" }
local n = 0

local headers

function init(args)
  common.seed_random()
  headers = common.headers()
end

function request()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1], headers)
end

done = common.done
