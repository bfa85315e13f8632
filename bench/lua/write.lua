-- POST /transactions on random accounts of the 10,000-account pool.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")
local accounts = common.lines("BENCH_ACCOUNTS")

function request()
  return common.post_transaction(accounts)
end
