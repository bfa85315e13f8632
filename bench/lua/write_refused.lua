-- POST /transactions on random accounts of the pool; a share of them (BENCH_REFUSED_SHARE, e.g.
-- 0.02) go to an account pinned at the top of the balance range (BENCH_PINNED_ACCOUNT), which
-- the writer refuses with 422 (balance overflow) inside the batches of the others. With the
-- share 0 it is the clean mix the refused one is compared with: the same script, the same
-- per-response cost (a response() callback, to count the 422s).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")
local accounts = common.lines("BENCH_ACCOUNTS")
local pinned = os.getenv("BENCH_PINNED_ACCOUNT") or ""
local share = tonumber(os.getenv("BENCH_REFUSED_SHARE") or "0") or 0
assert(share == 0 or pinned ~= "", "BENCH_PINNED_ACCOUNT is not set")
common.count_refusals = true

-- Per thread; done() sums them (see common.lua).
refused_sent = 0
answered_422 = 0

function request()
  if share > 0 and math.random() < share then
    refused_sent = refused_sent + 1
    local body = '{"account_id":"' .. pinned .. '","amount":' .. math.random(1, 1000) .. '}'
    return wrk.format("POST", "/transactions", common.json_headers, body)
  end
  return common.post_transaction(accounts)
end

function response(status)
  if status == 422 then answered_422 = answered_422 + 1 end
end
