-- Read limit: GET /ping through nginx (the reader answers without touching Redis or PostgreSQL).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
require("common")
wrk.method = "GET"
wrk.path = "/ping"
