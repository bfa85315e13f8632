-- GET /transactions/{id} over transactions that exist (ids collected when seeding).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")
local ids = common.lines("BENCH_TX_IDS")

function request()
  return wrk.format("GET", "/transactions/" .. ids[math.random(#ids)])
end
