# shellcheck shell=bash
# BENCH_BIG_LIST=1 npm run bench: GET /transactions over a million rows, and account reads with
# 1 and rows/10 transactions, on a scratch reader of its own (sourced by bench/run.sh, which
# defines run_wrk, json_get, psql_db and the rest). The reader's ports are scripts/lib/
# defaults.sh's DEFAULT_BENCH_BIG_READER_PORT and _METRICS_PORT; its database, bench_big, is
# kept between runs (BENCH_DROP_SCRATCH=1 drops it) and rebuilt when big_list.sql changes.

BIG_ROWS="${BENCH_BIG_ROWS:-1000000}"
BIG_ADDR="127.0.0.1:$DEFAULT_BENCH_BIG_READER_PORT"
BIG_METRICS_ADDR="127.0.0.1:$DEFAULT_BENCH_BIG_READER_METRICS_PORT"
BIG_REDIS_PREFIX="bench_big:"
BIG_LOADER_VERSION="v1" # bump when big_list.sql changes, so a cached bench_big is rebuilt
BIG_READER_PID=""

stop_big_reader() {
  [ -z "$BIG_READER_PID" ] || stop_pid "scratch reader" "$BIG_READER_PID" "$(readlink -f "$(release_dir)/reader")" 10
  BIG_READER_PID=""
  # Its views in Redis (the stack's own keys have another prefix).
  if command -v redis-cli >/dev/null && [ -d "$TMP/big" ]; then
    redis-cli --scan --pattern "${BIG_REDIS_PREFIX}*" 2>/dev/null | xargs -r redis-cli del >/dev/null 2>&1 || true
  fi
}

ensure_big_database() {
  local have
  have="$(psql_db bench_big -c "SELECT rows || ' ' || loader FROM bench_meta" 2>/dev/null || true)"
  if [ "$have" = "$BIG_ROWS $BIG_LOADER_VERSION" ]; then
    say "bench_big already holds $BIG_ROWS transactions: reusing it"
    echo '{"loaded": false}' >"$TMP/big/load.json"
    return
  fi
  say "creating bench_big from the migrations and loading $BIG_ROWS transactions"
  local started=$SECONDS
  psql_admin -c "DROP DATABASE IF EXISTS bench_big" -c "CREATE DATABASE bench_big"
  local migration
  for migration in "$ROOT"/shared/migrations/*.sql; do psql_db bench_big -f "$migration"; done
  psql_db bench_big -v rows="$BIG_ROWS" -v loader="$BIG_LOADER_VERSION" -f "$BENCH_DIR/lib/big_list.sql"
  printf '{"loaded": true, "seconds": %s}\n' "$((SECONDS - started))" >"$TMP/big/load.json"
  say "loaded in $((SECONDS - started)) s"
}

big_list() {
  mkdir -p "$TMP/big"
  ensure_big_database
  require_built
  refuse_taken_port "${BIG_ADDR##*:}" "the scratch reader"
  refuse_taken_port "${BIG_METRICS_ADDR##*:}" "the scratch reader's metrics"
  DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/bench_big" LISTEN_ADDR="$BIG_ADDR" \
    METRICS_ADDR="$BIG_METRICS_ADDR" REDIS_KEY_PREFIX="$BIG_REDIS_PREFIX" \
    REDIS_URL="${REDIS_URL:-$DEFAULT_REDIS_URL}" LOG_FORMAT=json RUST_LOG=info \
    start_daemon "$TMP/big/reader.pid" "$TMP/logs/big-reader.log" "$(release_dir)/reader"
  BIG_READER_PID="$(cat "$TMP/big/reader.pid")"
  wait_http "http://$BIG_ADDR/ping" 10 || die "scratch reader did not start (see $TMP/logs/big-reader.log)"
  say "scratch reader (pid $BIG_READER_PID) on $BIG_ADDR, database bench_big"

  local run
  for run in 1 2; do
    say "GET /transactions, run $run: streaming $BIG_ROWS transactions"
    "$PYTHON" "$BENCH_DIR/lib/rss_sampler.py" "$TMP/big/stream-$run.rss.json" 50 reader="$BIG_READER_PID" &
    local sampler=$!
    sleep 0.3
    curl -sS --max-time 300 -H 'Accept: application/json' \
      -w '%{stderr}{"http_code":%{http_code},"size":%{size_download},"ttfb_s":%{time_starttransfer},"total_s":%{time_total}}' \
      "http://$BIG_ADDR/transactions" 2>"$TMP/big/stream-$run.curl.json" |
      python3 "$BENCH_DIR/lib/bench.py" count-stream "$TMP/big/stream-$run.count.json" || true
    sleep 0.3
    kill -TERM "$sampler" && wait "$sampler" || true
    json_get "$TMP/big/stream-$run.curl.json" "'%d, %.2f s, %.0f tx/s' % (d['http_code'], d['total_s'], $BIG_ROWS / d['total_s'])" 2>/dev/null | sed 's/^/[bench]   /' || true
  done

  # Reads of one account with 1 and one with rows/10 transactions, alternated (A B A B A B) so
  # that a change in background load hits both alike.
  local kind id transactions round
  for kind in single big; do
    id="$(psql_db bench_big -c "SELECT md5('$kind')::uuid")"
    transactions="$(psql_db bench_big -c "SELECT version FROM accounts WHERE account_id = '$id'")"
    printf '{"account_id":"%s","transactions":%s,"connections":%s,"duration_s":%s}\n' \
      "$id" "$transactions" "$READ_CONNS" "$BIG_SECS" >"$TMP/big/account-$kind.meta.json"
    # The cache-miss path: the query the reader runs when the view is not in Redis.
    psql_db bench_big -c "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT balance, version FROM accounts WHERE account_id = '$id'" \
      >"$TMP/big/explain-$kind.json"
    curl -fsS -o /dev/null "http://$BIG_ADDR/accounts/$id" || die "GET /accounts/$id on the scratch reader failed"
  done
  for round in 1 2 3; do
    for kind in single big; do
      id="$(json_get "$TMP/big/account-$kind.meta.json" "d['account_id']")"
      transactions="$(json_get "$TMP/big/account-$kind.meta.json" "d['transactions']")"
      BENCH_PATH="/accounts/$id" run_wrk "big_account_${kind}_$round" \
        "round $round: GET /accounts/{id} with $transactions transactions" \
        "$READ_CONNS" fixed_path.lua "" "http://$BIG_ADDR" "$BIG_SECS" "$TMP/big/account-$kind-$round.json"
    done
  done
  "$PYTHON" - "$TMP/big" <<'EOF'
import json, sys, os
out = {}
for kind in ("single", "big"):
    try:
        plan = json.load(open(os.path.join(sys.argv[1], f"explain-{kind}.json")))[0]
    except (OSError, ValueError):
        continue
    node = plan["Plan"]
    out[kind] = {"execution_ms": plan.get("Execution Time"), "plan": node.get("Node Type") +
                 (f" using {node['Index Name']}" if node.get("Index Name") else ""),
                 "buffers": node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0)}
json.dump(out, open(os.path.join(sys.argv[1], "explain.json"), "w"))
EOF
  stop_big_reader
}

# The list phase when BENCH_BIG_LIST=1 asks for it.
big_list_if_asked() {
  if [ "${BENCH_BIG_LIST:-0}" = 1 ]; then
    big_list
  else
    say "skipping the 1,000,000-transaction phase (BENCH_BIG_LIST=1 runs it)"
  fi
}
