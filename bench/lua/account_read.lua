-- GET /accounts/{id} over accounts that exist (the seeded pool).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")
local accounts = common.lines("BENCH_ACCOUNTS")

function request()
  return wrk.format("GET", "/accounts/" .. accounts[math.random(#accounts)])
end
