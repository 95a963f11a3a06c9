-- wrk script for the coglet benchmarks.
-- Environment:
--   BENCH_METHOD     GET (default) or POST
--   BENCH_BODY_FILE  file whose bytes are the request body (sent as application/json)
--   BENCH_EXPECT     substring a 2xx body must contain to count as ok (e.g. "status":"succeeded")
-- Counts ok / non-2xx (by status) / 2xx-but-unexpected answers over all threads and prints
-- one line "BENCH_JSON {...}" with those counts, wrk's summary and latency percentiles (us).
local threads = {}

wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
end
local expect_default = os.getenv("BENCH_EXPECT")

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  non2xx = 0
  unexpected = 0
  statuses = {}
  expect = os.getenv("BENCH_EXPECT")
  if expect == "" then expect = nil end
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    if expect and not string.find(body, expect, 1, true) then
      unexpected = unexpected + 1
    else
      ok = ok + 1
    end
  else
    non2xx = non2xx + 1
    local k = tostring(status)
    statuses[k] = (statuses[k] or 0) + 1
  end
end

function done(summary, latency, requests)
  local tok, tnon, tunexp = 0, 0, 0
  local st = {}
  for _, t in ipairs(threads) do
    tok = tok + t:get("ok")
    tnon = tnon + t:get("non2xx")
    tunexp = tunexp + t:get("unexpected")
    local s = t:get("statuses")
    if s then
      for k, v in pairs(s) do st[k] = (st[k] or 0) + v end
    end
  end
  local parts = {}
  for k, v in pairs(st) do table.insert(parts, string.format('"%s":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"ok":%d,"non2xx":%d,"unexpected":%d,"statuses":{%s},' ..
    '"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"lat_us":{"min":%d,"mean":%.2f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"stdev":%.2f}}\n',
    tok, tnon, tunexp, table.concat(parts, ","),
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.stdev))
end
