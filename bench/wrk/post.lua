-- POST /v1/tasks with a fresh body each time.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")
local headers

function init(args)
  common.seed_random()
  headers = common.headers({ ["Content-Type"] = "application/json" })
end

function request()
  return wrk.format("POST", "/v1/tasks", headers, common.post_body())
end

done = common.done
