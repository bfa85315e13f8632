-- GET of one fixed path, BENCH_PATH (the big-list phase: one account, over and over).
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
require("common")
wrk.method = "GET"
wrk.path = assert(os.getenv("BENCH_PATH"), "BENCH_PATH is not set")
