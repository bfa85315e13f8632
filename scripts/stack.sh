#!/usr/bin/env bash
# The native stack (npm start / npm stop): PostgreSQL and Redis on this machine, the writer,
# the reader and nginx through the launcher (scripts/launcher.sh: supervised, restarted within
# a second when they die), plus Prometheus and node-exporter (scripts/monitoring.sh), in the
# background, with every log and pid under .stack/ (git-ignored).
#
#   scripts/stack.sh start    build, start what is not running, wait until healthy (npm start)
#   scripts/stack.sh stop     end supervision, stop what `start` started (npm stop)
#   scripts/stack.sh status   exit 0 if the stack answers through nginx (details: launcher.sh status)
#   scripts/stack.sh deps     only make sure tools, PostgreSQL, Redis and the database are there
#
# Running `start` twice is harmless: an instance that runs and whose binary has not been rebuilt
# is left alone; one that died is started again (a dead process is never taken for a running
# one). PostgreSQL and Redis that were already running are used, never stopped.
#
# The launcher's parameters (state folder, ports, WRITERS/READERS) pass through; two more let
# the tests run this very command against a private stack: STACK_BUILD=no (use the binaries
# as built) and STACK_MONITORING=no (no Prometheus, no node-exporter).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG=stack
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/roles.sh
. "$ROOT/scripts/lib/roles.sh"

export STACK_STATE_DIR="${STACK_STATE_DIR:-$ROOT/.stack}"
STATE="$STACK_STATE_DIR"
LOGS="$STATE/logs"
export DATABASE_URL="${DATABASE_URL:-$DEFAULT_DATABASE_URL}"
export REDIS_URL="${REDIS_URL:-$DEFAULT_REDIS_URL}"
export RUST_LOG="${RUST_LOG:-info}"
export LOG_FORMAT="${LOG_FORMAT:-json}"
PROXY_URL="http://127.0.0.1:${PROXY_PORT:-$DEFAULT_PROXY_PORT}"

ensure_tools() {
  ensure_commands nginx=nginx psql=postgresql-client pg_isready=postgresql-client \
    redis-server=redis-server redis-cli=redis-tools curl=curl setsid=util-linux ss=iproute2
}

# --- PostgreSQL and Redis -------------------------------------------------------------------

db_host_port() { # prints "host port" from DATABASE_URL
  local rest="${DATABASE_URL#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"
  local host="${rest%%:*}" port="5432"
  [[ "$rest" == *:* ]] && port="${rest##*:}"
  echo "$host $port"
}

ensure_postgres() {
  local host port
  read -r host port < <(db_host_port)
  if ! pg_isready -q -h "$host" -p "$port"; then
    if [ "$host" = 127.0.0.1 ] || [ "$host" = localhost ]; then
      ls /etc/postgresql/*/main >/dev/null 2>&1 || apt_install postgresql
      say "starting PostgreSQL"
      local version
      version="$(ls /etc/postgresql | sort -V | tail -n 1)"
      pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    fi
    wait_until 30 pg_isready -q -h "$host" -p "$port" || die "PostgreSQL is not reachable at $host:$port (DATABASE_URL)"
  fi
  local database="${DATABASE_URL##*/}"; database="${database%%\?*}"
  local admin_url="${DATABASE_URL%/*}/postgres"
  if [ "$(psql "$admin_url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'")" != 1 ]; then
    say "creating database $database"
    psql "$admin_url" -qc "CREATE DATABASE \"$database\"" >/dev/null
  fi
}

# Only a Redis this script started has a pid file in the state folder; stop leaves others alone.
REDIS_EXE="$(exe_path redis-server)"
# One it starts has its default user closed by a password (scripts/lib/roles.sh,
# stack_redis_url): REDIS_URL then carries it, for this script and what it starts.
ensure_redis() {
  REDIS_URL="$(stack_redis_url "$STATE" "$REDIS_URL")"
  if redis-cli -u "$REDIS_URL" --no-auth-warning ping >/dev/null 2>&1; then return 0; fi
  local rest="${REDIS_URL#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"
  local port="${rest##*:}" password
  say "starting Redis on port $port (default user closed: password in $STATE/secrets/redis-admin.password)"
  mkdir -p "$STATE/redis"
  password="$(secret_file "$STATE/secrets/redis-admin.password")"
  # In a file of mode 0600, not on the command line (`ps`).
  (umask 077; printf 'requirepass %s\n' "$password" >"$STATE/redis.conf")
  start_daemon "$STATE/redis.pid" "$LOGS/redis.log" redis-server "$STATE/redis.conf" --bind 127.0.0.1 --port "$port" \
    --save "" --appendonly no --dir "$STATE/redis" \
    --maxmemory "$REDIS_MAXMEMORY" --maxmemory-policy "$REDIS_MAXMEMORY_POLICY"
  REDIS_URL="$(with_user "$REDIS_URL" default "$password")"
  wait_until 10 redis-cli -u "$REDIS_URL" --no-auth-warning ping || die "Redis did not start; see $LOGS/redis.log"
}

deps() {
  mkdir -p "$LOGS"
  ensure_tools
  ensure_postgres
  ensure_redis
}

# --- the stack ------------------------------------------------------------------------------

# Another stack on these ports (the replicated topology, npm run ha:start, serves the API on
# the same one) is refused before anything is built or started.
refuse_taken_ports() {
  bash "$ROOT/scripts/launcher.sh" check-ports \
    --hint "another stack? stop it first (npm stop; npm run ha:stop for the replicated topology)"
}

start() {
  refuse_taken_ports
  deps
  # Least privilege: the writer migrates as ledger_owner and serves as ledger_writer, the reader
  # serves as ledger_reader, each with a Redis user of its own (scripts/lib/roles.sh).
  provision_pg_roles
  provision_redis_users "$STATE/secrets"
  [ "${STACK_BUILD:-yes}" = no ] || build_services
  # The services' tokio worker threads (default_worker_threads): measured on 2 cores, an
  # account read cost the reader 25 us of CPU with one worker against 29-34 us with two, and a
  # POST the whole machine 267-275 us against 290-333 us (docs/decisions.md 18).
  export READER_WORKER_THREADS="${READER_WORKER_THREADS:-$(default_worker_threads)}"
  export WRITER_WORKER_THREADS="${WRITER_WORKER_THREADS:-$(default_worker_threads)}"
  bash "$ROOT/scripts/launcher.sh" up
  local prometheus=""
  if [ "${STACK_MONITORING:-yes}" != no ]; then
    bash "$ROOT/scripts/monitoring.sh" start
    prometheus=", Prometheus http://127.0.0.1:${PROMETHEUS_PORT:-$DEFAULT_PROMETHEUS_PORT}"
  fi
  say "stack is up: API $PROXY_URL$prometheus, logs in $LOGS"
}

stop() {
  if [ "${STACK_MONITORING:-yes}" != no ]; then bash "$ROOT/scripts/monitoring.sh" stop; fi
  bash "$ROOT/scripts/launcher.sh" down
  stop_pidfile redis "$STATE/redis.pid" "$REDIS_EXE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) http_ok "$PROXY_URL/ping" ;;
  deps) deps ;;
  reload) bash "$ROOT/scripts/launcher.sh" reload ;;
  *) echo "usage: $0 start|stop|status|deps|reload" >&2; exit 2 ;;
esac
