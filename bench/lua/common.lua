-- Shared by every wrk script of the benchmark (bench/run.sh sets the environment).
--
--   BENCH_RESULT_FILE   done() writes the phase's result there as one JSON object
--   BENCH_ACCOUNTS      file with the account pool, one UUID a line
--   BENCH_TX_IDS        file with transaction ids that exist, one a line
--   BENCH_RATE          optional: requests/s for the whole run (all threads); unset = as fast
--                       as the connections go
--   BENCH_THREADS       wrk's -t, to split BENCH_RATE between the threads
--   BENCH_SEED          seed of the per-thread random generators (deterministic runs)
--
-- Errors: wrk itself counts socket errors and every answer with a status of 400 or more; run.sh
-- also counts, on the services' own /metrics, every answer they gave that was not 2xx (1xx/3xx
-- included). There is deliberately no response() callback: defining one makes wrk copy every
-- response's headers and body into Lua, a cost that grows with the response, so it charged the
-- stack's larger answers (and their ETag header) more than the limit's `{"status":"ok"}`.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec")

local M = {}

function M.now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

function M.lines(variable)
  local path = os.getenv(variable)
  assert(path and path ~= "", variable .. " is not set")
  local list = {}
  for line in io.lines(path) do
    if #line > 0 then list[#list + 1] = line end
  end
  assert(#list > 0, path .. " is empty")
  return list
end

M.json_headers = { ["Content-Type"] = "application/json" }

-- One POST /transactions on a random account of the pool, with a random deposit.
function M.post_transaction(accounts)
  local body = '{"account_id":"' .. accounts[math.random(#accounts)] ..
      '","amount":' .. math.random(1, 1000) .. '}'
  return wrk.format("POST", "/transactions", M.json_headers, body)
end

-- ---- wrk callbacks -----------------------------------------------------------------------

local threads = {}

-- Main state, once per thread, before init().
function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_number", #threads)
end

-- Thread state.
function init(args)
  math.randomseed(tonumber(os.getenv("BENCH_SEED") or "42") * 1000 + (thread_number or 0))
end

-- Rate limiting (half-load phases): each thread hands out send slots 1/rate apart, on the
-- monotonic clock. delay() runs after each response and tells wrk how long the connection
-- waits before its next request. A slot missed (all connections busy) is not made up later,
-- so there is no burst after a stall. wrk's timers have 1 ms resolution; the slots themselves
-- are kept in fractional milliseconds, so rounding does not accumulate.
local rate = tonumber(os.getenv("BENCH_RATE") or "")
if rate and rate > 0 then
  local interval = tonumber(os.getenv("BENCH_THREADS") or "1") * 1000 / rate
  local next_slot = nil
  function delay()
    local now = M.now_ms()
    if next_slot == nil or next_slot < now then next_slot = now end
    local wait = next_slot - now
    next_slot = next_slot + interval
    return math.floor(wait + 0.5)
  end
end

local function json_number(value)
  if value ~= value or value == math.huge or value == -math.huge then return "null" end
  return string.format("%.3f", value)
end

-- Main state, at the end: totals over all threads, written as JSON for bench/lib/report.py.
-- A script that sets M.count_refusals (write_refused.lua) has each thread count the requests
-- it meant to be refused (`refused_sent`) and the 422s it got (`answered_422`): those 422s are
-- expected, not errors, up to the number sent; bench.py expect-refusals checks the rest.
function done(summary, latency, requests)
  local e = summary.errors
  local refusals = ""
  local status_errors = e.status
  if M.count_refusals then
    local sent, answered = 0, 0
    for _, thread in ipairs(threads) do
      sent = sent + (thread:get("refused_sent") or 0)
      answered = answered + (thread:get("answered_422") or 0)
    end
    status_errors = status_errors - math.min(sent, answered)
    refusals = string.format(',"refusals":{"sent":%d,"answered_422":%d}', sent, answered)
  end
  local seconds = summary.duration / 1e6
  local out = assert(io.open(assert(os.getenv("BENCH_RESULT_FILE")), "w"))
  out:write(string.format(
    '{"requests":%d,"duration_s":%s,"rps":%s,"bytes":%d,' ..
    '"latency_ms":{"p50":%s,"p90":%s,"p99":%s,"p999":%s,"mean":%s,"max":%s},' ..
    '"errors":{"status_4xx_5xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}%s}\n',
    summary.requests, json_number(seconds), json_number(summary.requests / seconds), summary.bytes,
    json_number(latency:percentile(50) / 1000), json_number(latency:percentile(90) / 1000),
    json_number(latency:percentile(99) / 1000), json_number(latency:percentile(99.9) / 1000),
    json_number(latency.mean / 1000), json_number(latency.max / 1000),
    status_errors, e.connect, e.read, e.write, e.timeout, refusals))
  out:close()
end

return M
