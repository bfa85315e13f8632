-- Read limit: GET /ping through nginx (the reader answers without touching Redis or PostgreSQL).
-- The request is built in Lua for every call, like the stack's reads build theirs, so wrk
-- spends the same per request in both and the read ratio compares the stack, not wrk's two
-- modes (a static request saves wrk a few microseconds per request).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
require("common")

function request()
  return wrk.format("GET", "/ping")
end
