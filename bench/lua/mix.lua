-- 90/10 read/write: 45% GET /accounts/{id}, 45% GET /transactions/{id}, 10% POST /transactions.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")
local accounts = common.lines("BENCH_ACCOUNTS")
local ids = common.lines("BENCH_TX_IDS")

function request()
  local dice = math.random()
  if dice < 0.10 then
    return common.post_transaction(accounts)
  elseif dice < 0.55 then
    return wrk.format("GET", "/accounts/" .. accounts[math.random(#accounts)])
  else
    return wrk.format("GET", "/transactions/" .. ids[math.random(#ids)])
  end
end
