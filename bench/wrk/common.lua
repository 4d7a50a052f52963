-- Shared by the bench scenarios: loads the seeded ids, authenticates, reports a JSON summary.
-- Environment: BENCH_IDS (file of task ids, one per line), BENCH_OUT (summary JSON path),
-- BENCH_TOKEN (API token sent as `Authorization: Bearer`; the baselines ignore it).
local M = {}

-- Request headers: the bearer token (when BENCH_TOKEN is set) plus `extra`, in a new
-- table (wrk.format writes Host and Content-Length into the table it is given).
function M.headers(extra)
  local h = {}
  local token = os.getenv("BENCH_TOKEN")
  if token and #token > 0 then h["Authorization"] = "Bearer " .. token end
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

function M.load_ids()
  local ids = {}
  local f = assert(io.open(os.getenv("BENCH_IDS"), "r"))
  for line in f:lines() do
    if #line > 0 then ids[#ids + 1] = line end
  end
  f:close()
  assert(#ids > 0, "no ids in BENCH_IDS")
  return ids
end

local counter = 0
function M.seed_random()
  counter = counter + 1
  math.randomseed(os.time() * 1000 + counter + math.floor(os.clock() * 1e6))
end

function M.post_body()
  return string.format('{"title":"bench %d","description":"created by just bench","status":"todo"}',
    math.random(1, 1000000000))
end

function M.done(summary, latency, requests)
  local e = summary.errors
  local out = assert(io.open(os.getenv("BENCH_OUT"), "w"))
  out:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
  out:close()
end

return M
