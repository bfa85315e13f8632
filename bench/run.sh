#!/usr/bin/env bash
# npm run bench: the stack measured against this machine's own limits, in one bounded run.
# See bench/README.md for what each phase does and how to read the results.
#
#   BENCH_DURATION=20s           length of each measured phase (integer seconds, "s" optional)
#   BENCH_WRITE_CONNECTIONS=32   HTTP write concurrency = pgbench clients
#   BENCH_READ_CONNECTIONS=64    HTTP read concurrency (reads, mix, GET /ping)
#   BENCH_THREADS=2              wrk threads and pgbench threads
#   BENCH_HALF=0.5               the "half load" phases run at this fraction of the measured peak
#   BENCH_RUNS=1                 N > 1: the main phases N times back to back (one report each,
#                                results/run-N.json), then the summary: each target's median
#   BENCH_BIG_LIST=0             1: also the 1,000,000-transaction phase (GET /transactions);
#                                only: that phase alone
#   BENCH_BIG_ROWS=1000000       rows in that phase
#   BENCH_BIG_DURATION=5s        each of its six account-read measurements (A B A B A B)
#   BENCH_DROP_SCRATCH=0         1: drop the cached scratch database bench_big at the end
#   BENCH_SEED=42                seed of the load generators' random choices
#   BENCH_REFUSED_PERCENT=2      the share of POSTs refused (balance overflow) in refused_write
#   BENCH_TOPOLOGY=single        ha: write and account-read throughput of the replicated
#                                topology against the single stack's, in the same run
#                                (bench/lib/ha.sh; results in bench/results/ha.json)
#
# Exit status: 0 when every phase got only 2xx answers and no socket errors, 1 otherwise (the
# table is printed either way). Targets that are missed are reported, not failed.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
TAG=bench
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/roles.sh
. "$ROOT/scripts/lib/roles.sh"
STATE="${STACK_STATE_DIR:-$ROOT/.stack}"
RESULTS="$BENCH_DIR/results"
TMP="$RESULTS/tmp" # git-ignored: raw outputs of this run

duration="${BENCH_DURATION:-20s}"
SECS="${duration%s}"
[[ "$SECS" =~ ^[0-9]+$ ]] && [ "$SECS" -gt 0 ] || { echo "BENCH_DURATION must be whole seconds, e.g. 20s" >&2; exit 2; }
big_duration="${BENCH_BIG_DURATION:-5s}"
BIG_SECS="${big_duration%s}"
[[ "$BIG_SECS" =~ ^[0-9]+$ ]] || { echo "BENCH_BIG_DURATION must be whole seconds" >&2; exit 2; }
WRITE_CONNS="${BENCH_WRITE_CONNECTIONS:-32}"
READ_CONNS="${BENCH_READ_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
HALF="${BENCH_HALF:-0.5}"
RUNS="${BENCH_RUNS:-1}"
REFUSED_PERCENT="${BENCH_REFUSED_PERCENT:-2}"
[[ "$REFUSED_PERCENT" =~ ^[0-9]+$ ]] && [ "$REFUSED_PERCENT" -le 100 ] || { echo "BENCH_REFUSED_PERCENT must be a whole number 0-100" >&2; exit 2; }
REFUSED_PERCENT_SHARE="$(awk -v p="$REFUSED_PERCENT" 'BEGIN { print p / 100 }')"
# The largest amount the API accepts (2^53 - 1): one deposit of it pins an account at the top
# of the balance range.
PINNED_AMOUNT=9007199254740991
[[ "$RUNS" =~ ^[0-9]+$ ]] && [ "$RUNS" -gt 0 ] || { echo "BENCH_RUNS must be a whole number >= 1" >&2; exit 2; }
ACCOUNTS_N=10000
# The stack npm start runs (its ports: PROXY_PORT, ..., else scripts/lib/defaults.sh's).
URL="${BENCH_URL:-http://127.0.0.1:${PROXY_PORT:-$DEFAULT_PROXY_PORT}}"
PGHOST="${BENCH_PGHOST:-127.0.0.1}"
PGPORT="${BENCH_PGPORT:-5432}"
PGUSER="${BENCH_PGUSER:-postgres}"
WRITER_METRICS="${BENCH_WRITER_METRICS:-http://127.0.0.1:${WRITER_METRICS_PORT:-$DEFAULT_WRITER_METRICS_PORT}/metrics}"
READER_METRICS="${BENCH_READER_METRICS:-http://127.0.0.1:${READER_METRICS_PORT:-$DEFAULT_READER_METRICS_PORT}/metrics}"

case "$URL" in
  http://127.0.0.1:*|http://127.0.0.1/*|http://127.0.0.1) ;;
  *) echo "BENCH_URL must point at 127.0.0.1 (load goes to the loopback only), got $URL" >&2; exit 2 ;;
esac

psql_admin() { psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
psql_db() { local db="$1"; shift; psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$db" -v ON_ERROR_STOP=1 -qAt "$@"; }

# --- tools ----------------------------------------------------------------------------------

# pgbench: on PATH, or in Debian's PostgreSQL folder (postgresql-contrib puts it there).
pgbench_path() { command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n 1; }
PGBENCH=""
ensure_tools() {
  command -v node >/dev/null || die "Node.js >= 20 is needed (it runs npm)"
  ensure_commands wrk=wrk psql=postgresql-client curl=curl python3=python3
  PGBENCH="$(pgbench_path || true)"
  [ -n "$PGBENCH" ] || apt_install postgresql-contrib
  PGBENCH="$(pgbench_path || true)"
  [ -n "$PGBENCH" ] || die "pgbench not found after installing postgresql-contrib"
}

# matplotlib for the chart, in a venv of its own (pinned); without it, no chart this run.
MATPLOTLIB_VERSION="3.10.9"
PYTHON=python3
ensure_chart_python() {
  local venv="$STATE/bench-venv"
  if ! (pinned_venv "$venv" "matplotlib==$MATPLOTLIB_VERSION") >"$TMP/venv.log" 2>&1; then
    say "warning: could not install matplotlib (see $TMP/venv.log); no chart this run"
    return 0
  fi
  PYTHON="$venv/bin/python"
}

# --- the stack --------------------------------------------------------------------------------

STARTED_STACK=0
SAMPLER_PID=""

cleanup() {
  local status=$?
  [ -n "$SAMPLER_PID" ] && kill -TERM "$SAMPLER_PID" 2>/dev/null && wait "$SAMPLER_PID" 2>/dev/null || true
  stop_big_reader || true
  psql_admin -c "DROP DATABASE IF EXISTS bench_limit" 2>/dev/null || true
  if [ "${BENCH_DROP_SCRATCH:-0}" = 1 ]; then
    psql_admin -c "DROP DATABASE IF EXISTS bench_big" 2>/dev/null || true
  fi
  ha_cleanup
  if [ "$STARTED_STACK" = 1 ]; then
    say "stopping the stack this benchmark started"
    bash "$ROOT/scripts/stack.sh" stop || true
  fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stack_status() { bash "$ROOT/scripts/stack.sh" status 2>/dev/null; }

ensure_stack() {
  if stack_status; then
    say "using the running stack ($URL)"
    return
  fi
  # Some of it may be running and just restarting (another session's `npm start` or tests):
  # wait for that instead of starting a second copy, and never stop it afterwards.
  local name
  for name in writer reader nginx; do
    if service_pid "$name" >/dev/null; then
      say "the stack does not answer but its $name is running: waiting up to 60 s for it"
      wait_until 60 stack_status || die "the stack is running but does not answer on $URL"
      say "using the running stack ($URL)"
      return
    fi
  done
  say "the stack is not running: starting it (it is stopped again at the end)"
  STARTED_STACK=1
  bash "$ROOT/scripts/stack.sh" start
}

service_pid() { # name -> pid of the running service, or nothing
  pid_alive "$STATE/$1.pid" && pid_of "$STATE/$1.pid"
}

# BENCH_PIDS for bench/lib/cpu_meter.py: which processes are the stack's (others may run their
# own nginx, writer, Redis or PostgreSQL on this machine; those count as "other").
stack_pids() {
  local pids=() pid datadir
  pid="$(service_pid writer || true)"; [ -n "$pid" ] && pids+=("$pid:writer")
  pid="$(service_pid reader || true)"; [ -n "$pid" ] && pids+=("$pid:reader")
  pid="$(service_pid nginx || true)"; [ -n "$pid" ] && pids+=("$pid:nginx")
  # (A Redis the stack started has its default user closed: scripts/lib/roles.sh.)
  pid="$(redis-cli -u "$(stack_redis_url "$STATE" "${REDIS_URL:-$DEFAULT_REDIS_URL}")" --no-auth-warning info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')"
  [ -n "$pid" ] && pids+=("$pid:redis")
  datadir="$(psql_admin -c "SHOW data_directory" 2>/dev/null || true)"
  pid="$(head -n 1 "$datadir/postmaster.pid" 2>/dev/null || true)"
  [ -n "$pid" ] && pids+=("$pid:postgres")
  [ -n "$BIG_READER_PID" ] && pids+=("$BIG_READER_PID:reader")
  local IFS=,
  echo "${pids[*]}"
}

# --- phases -----------------------------------------------------------------------------------

PHASE_NO=0
phase_file() { printf '%s/phases/%02d-%s' "$TMP" "$PHASE_NO" "$1"; }

# cpu_metered result-json command...: runs the load generator and writes, next to the result,
# the CPU seconds every component used meanwhile (bench/lib/cpu_meter.py).
cpu_metered() {
  local out="${1%.json}.cpu.json"
  shift
  BENCH_PIDS="$(stack_pids)" "$PYTHON" "$BENCH_DIR/lib/cpu_meter.py" run "$out" -- "$@"
}

json_get() { # file python-expression-on-d
  "$PYTHON" -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"
}

progress() { # result-json name
  if [ -f "$1" ]; then
    json_get "$1" "'%-24s %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  p99.9 %7.2f ms  errors %d' % ('$2', d['rps'] or 0, d['latency_ms']['p50'] or 0, d['latency_ms']['p99'] or 0, d['latency_ms']['p999'] or 0, sum(v for v in d['errors'].values()))" | sed 's/^/[bench] /'
  else
    say "$2: no result (see $TMP/logs)"
  fi
}

write_meta() { # file name label connections rate tool
  printf '{"name":"%s","label":"%s","connections":%s,"rate_target":%s,"tool":"%s","duration_s":%s}\n' \
    "$2" "$3" "$4" "${5:-null}" "$6" "$SECS" >"$1"
}

# run_wrk name label connections script [rate] [base-url] [duration-s] [result-file]
run_wrk() {
  local name="$1" label="$2" conns="$3" script="$4" rate="${5:-}" base="${6:-$URL}" secs="${7:-$SECS}"
  local out="${8:-}"
  if [ -z "$out" ]; then
    PHASE_NO=$((PHASE_NO + 1))
    out="$(phase_file "$name").json"
    write_meta "$(phase_file "$name").meta.json" "$name" "$label" "$conns" "$rate" wrk
  fi
  say "$label: ${secs} s, $conns connections${rate:+, capped at $rate req/s}"
  local metrics_urls before after
  if [ "$base" = "$URL" ]; then metrics_urls="$WRITER_METRICS $READER_METRICS"; else metrics_urls="http://$BIG_METRICS_ADDR/metrics"; fi
  # shellcheck disable=SC2086 # two URLs
  before="$("$PYTHON" "$BENCH_DIR/lib/bench.py" server-non2xx $metrics_urls)" || die "cannot read the services' /metrics ($metrics_urls)"
  BENCH_RESULT_FILE="$out" BENCH_LUA_DIR="$BENCH_DIR/lua" BENCH_RATE="$rate" BENCH_THREADS="$THREADS" \
    BENCH_ACCOUNTS="$TMP/accounts.txt" BENCH_TX_IDS="$TMP/transaction-ids.txt" \
    BENCH_SEED="${BENCH_SEED:-42}" BENCH_PINNED_ACCOUNT="${PINNED_ACCOUNT:-}" \
    BENCH_REFUSED_SHARE="${REFUSED_SHARE:-0}" \
    cpu_metered "$out" timeout $((secs + 60)) wrk -t"$THREADS" -c"$conns" -d"${secs}s" --timeout 5s \
    -s "$BENCH_DIR/lua/$script" "$base" >"$TMP/logs/$name.txt" 2>&1 || say "warning: wrk exited with $? (see $TMP/logs/$name.txt)"
  # shellcheck disable=SC2086
  after="$("$PYTHON" "$BENCH_DIR/lib/bench.py" server-non2xx $metrics_urls)" || die "cannot read the services' /metrics ($metrics_urls)"
  "$PYTHON" "$BENCH_DIR/lib/bench.py" add-error "$out" server_non2xx $((after - before))
  "$PYTHON" "$BENCH_DIR/lib/bench.py" expect-refusals "$out" "$conns"
  progress "$out" "$name"
}

# A fresh scratch database from the migrations, with the pool's 10,000 accounts already there,
# as they are in the stack's database by the time the HTTP writes run (seeded below). Both
# pgbench phases of a run use it: the half-load one finds it grown by the full-rate one's rows.
prepare_limit_database() {
  psql_admin -c "DROP DATABASE IF EXISTS bench_limit" -c "CREATE DATABASE bench_limit"
  local migration
  for migration in "$ROOT"/shared/migrations/*.sql; do psql_db bench_limit -f "$migration"; done
  psql_db bench_limit -c "INSERT INTO accounts (account_id, balance, version)
    SELECT md5(n::text)::uuid, 0, 1 FROM generate_series(1, $ACCOUNTS_N) AS n" -c "CHECKPOINT"
  "$PYTHON" "$BENCH_DIR/lib/bench.py" pgbench-script "$ROOT/shared/src/db/record_transactions.sql" "$TMP/record_transactions.pgbench" "$ACCOUNTS_N"
}

# run_pgbench name label [rate]: the writer's statement on bench_limit, at the write
# concurrency; with a rate, pgbench -R (Poisson-spaced starts; the result's latency counts from
# each transaction's actual start, see bench.py pgbench-result).
run_pgbench() {
  local name="$1" label="$2" rate="${3:-}" rated=()
  [ -n "$rate" ] && rated=(-R "$rate")
  PHASE_NO=$((PHASE_NO + 1))
  local base
  base="$(phase_file "$name")"
  write_meta "$base.meta.json" "$name" "$label" "$WRITE_CONNS" "$rate" pgbench
  say "$label: ${SECS} s, $WRITE_CONNS clients${rate:+, -R $rate} (pgbench -M prepared, script: $TMP/record_transactions.pgbench)"
  rm -rf "$TMP/pgbench-log"
  mkdir -p "$TMP/pgbench-log"
  (cd "$TMP/pgbench-log" && cpu_metered "$base.json" timeout $((SECS + 60)) "$PGBENCH" -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -n \
    -M prepared -c "$WRITE_CONNS" -j "$THREADS" -T "$SECS" ${rated[@]+"${rated[@]}"} -l -f "$TMP/record_transactions.pgbench" \
    bench_limit >"$TMP/logs/$name.txt" 2>&1) || say "warning: pgbench exited with $? (see $TMP/logs/$name.txt)"
  "$PYTHON" "$BENCH_DIR/lib/bench.py" pgbench-result "$TMP/logs/$name.txt" "$TMP/pgbench-log" "$base.json" "$rate"
  rm -rf "$TMP/pgbench-log" # about 40 bytes per transaction; the percentiles are in the JSON
  progress "$base.json" "$name"
}

seed_stack() {
  say "seeding: one POST per account of the pool, collecting transaction ids"
  node "$BENCH_DIR/lib/seed.mjs" "$URL" "$TMP/accounts.txt" "$TMP/transaction-ids.txt" "$WRITE_CONNS" ||
    die "seeding the stack failed: the benchmark allows no errors"
}

# The account the refused writes go to: one deposit of the largest amount, so that any further
# deposit overflows its balance (422).
PINNED_ACCOUNT=""
pin_account() {
  PINNED_ACCOUNT="$("$PYTHON" -c 'import uuid; print(uuid.uuid4())')"
  local status
  status="$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "{\"account_id\":\"$PINNED_ACCOUNT\",\"amount\":$PINNED_AMOUNT}" "$URL/transactions")"
  [ "$status" = 201 ] || die "pinning an account at the top of the balance range got $status, not 201"
}

half_rate() { # phase-name -> BENCH_HALF x its req/s, rounded
  local file
  file="$(ls "$TMP"/phases/*-"$1".json 2>/dev/null | head -n 1)"
  [ -n "$file" ] || { echo ""; return; }
  json_get "$file" "max(1, round((d['rps'] or 0) * $HALF))"
}

main_phases() { # writer-pid reader-pid
  local samplers=()
  [ -n "$1" ] && samplers+=("writer=$1")
  [ -n "$2" ] && samplers+=("reader=$2")
  if [ ${#samplers[@]} -gt 0 ]; then
    "$PYTHON" "$BENCH_DIR/lib/rss_sampler.py" "$TMP/rss.json" 100 "${samplers[@]}" &
    SAMPLER_PID=$!
  else
    say "warning: no writer/reader pid files in $STATE: RSS not recorded"
  fi

  # 1. Each limit of the parts right before the stack's phase it is compared with, so that a
  # change in the machine's background load between the two skews the ratio as little as
  # possible (other tenants' load moved single phases by 10-20 % between runs).
  seed_stack
  prepare_limit_database
  run_pgbench limit_write "limit  write  pgbench, same SQL (-M prepared)"
  run_wrk stack_write "stack  write  POST /transactions" "$WRITE_CONNS" write.lua
  run_wrk limit_read "limit  read   GET /ping via nginx" "$READ_CONNS" ping.lua
  run_wrk stack_account_read "stack  read   GET /accounts/{id}" "$READ_CONNS" account_read.lua

  # 2. The rest of the stack through nginx.
  run_wrk stack_transaction_read "stack  read   GET /transactions/{id}" "$READ_CONNS" transaction_read.lua
  run_wrk stack_mix "stack  mix    90% GET / 10% POST" "$READ_CONNS" mix.lua

  # 2b. A refused row must not slow its batch: the same writes with 2 % of them refused (an
  # account pinned at the top of the balance range), right after the clean mix of the same
  # script. report.py prints refused / clean.
  pin_account
  REFUSED_SHARE=0 run_wrk clean_write "stack  write  POST, same script, none refused" \
    "$WRITE_CONNS" write_refused.lua
  REFUSED_SHARE="$REFUSED_PERCENT_SHARE" run_wrk refused_write \
    "stack  write  POST, ${REFUSED_PERCENT} % refused (balance overflow)" "$WRITE_CONNS" write_refused.lua

  # 3. Latency at half of the peak the stack just reached (rate-capped wrk, see common.lua),
  # each right after its limit at exactly the same cap and concurrency: pgbench -R for writes
  # (on bench_limit, grown by limit_write's rows), GET /ping for reads.
  local write_cap read_cap
  write_cap="$(half_rate stack_write)"
  read_cap="$(half_rate stack_account_read)"
  run_pgbench half_limit_write "half   write  limit: pgbench -R, same SQL" "$write_cap"
  run_wrk half_write "half   write  POST /transactions" "$WRITE_CONNS" write.lua "$write_cap"
  run_wrk half_ping "half   read   limit: GET /ping via nginx" "$READ_CONNS" ping.lua "$read_cap"
  run_wrk half_account_read "half   read   GET /accounts/{id}" "$READ_CONNS" account_read.lua "$read_cap"

  if [ -n "$SAMPLER_PID" ]; then
    kill -TERM "$SAMPLER_PID" && wait "$SAMPLER_PID" || true
    SAMPLER_PID=""
  fi

}

# shellcheck source=bench/lib/big_list.sh
. "$BENCH_DIR/lib/big_list.sh"
# shellcheck source=bench/lib/ha.sh
. "$BENCH_DIR/lib/ha.sh"

# --- main -------------------------------------------------------------------------------------

main() {
  case "${BENCH_TOPOLOGY:-single}" in
    single) ;;
    ha) ha_main; return ;;
    *) die "BENCH_TOPOLOGY must be single or ha, got ${BENCH_TOPOLOGY}" ;;
  esac
  rm -rf "$TMP"
  mkdir -p "$TMP/phases" "$TMP/logs"
  ensure_tools
  ensure_chart_python
  ensure_stack
  local writer_pid reader_pid
  writer_pid="$(service_pid writer || true)"
  reader_pid="$(service_pid reader || true)"
  LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)"
  say "machine: $(nproc) cores, load average $LOADAVG (other work on the machine skews the figures)"
  "$PYTHON" "$BENCH_DIR/lib/bench.py" accounts "$ACCOUNTS_N" "$TMP/accounts.txt"

  if [ "${BENCH_BIG_LIST:-0}" = only ]; then
    [ "$RUNS" = 1 ] || say "BENCH_BIG_LIST=only: BENCH_RUNS=$RUNS ignored (the list phase runs once)"
    big_list
    report latest
    return
  fi
  rm -f "$RESULTS"/run-*.json "$RESULTS"/run-*.txt # a previous BENCH_RUNS's, stale now
  if [ "$RUNS" = 1 ]; then
    main_phases "$writer_pid" "$reader_pid"
    big_list_if_asked
    report latest
    return
  fi
  local run status=0
  for run in $(seq 1 "$RUNS"); do
    say "run $run of $RUNS"
    start_run "$run"
    main_phases "$writer_pid" "$reader_pid"
    # The list phase is not one of the main phases: once, in the last run's report.
    [ "$run" = "$RUNS" ] && big_list_if_asked
    report "run-$run" | tee "$RESULTS/run-$run.txt" || status=1
  done
  "$PYTHON" "$BENCH_DIR/lib/bench.py" runs "$RESULTS" "$RUNS" || status=1
  return $status
}

# start_run N (BENCH_RUNS > 1): the raw outputs of run N-1 move to $TMP/run-(N-1), so the
# report of run N reads its own phases only.
start_run() {
  PHASE_NO=0
  [ "$1" -gt 1 ] || return 0
  local previous="$TMP/run-$(($1 - 1))"
  mkdir -p "$previous"
  mv "$TMP/phases" "$TMP/logs" "$previous/"
  [ -f "$TMP/rss.json" ] && mv "$TMP/rss.json" "$previous/"
  mkdir -p "$TMP/phases" "$TMP/logs"
  LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)"
  say "load average $LOADAVG"
}

report() { # name of the JSON in bench/results (latest, run-N); prints the report
  BENCH_REPORT_NAME="$1" BENCH_ROOT="$ROOT" BENCH_DURATION_S="$SECS" BENCH_THREADS="$THREADS" \
    BENCH_HALF="$HALF" BENCH_WRITE_CONNECTIONS="$WRITE_CONNS" BENCH_READ_CONNECTIONS="$READ_CONNS" \
    BENCH_ACCOUNTS_N="$ACCOUNTS_N" BENCH_URL="$URL" BENCH_LOADAVG="$LOADAVG" \
    BENCH_BIG_ROWS="$BIG_ROWS" BENCH_BIG_ADDR="$BIG_ADDR" \
    "$PYTHON" "$BENCH_DIR/lib/bench.py" report "$TMP" "$RESULTS"
}

main "$@"
