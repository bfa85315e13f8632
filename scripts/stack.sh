#!/usr/bin/env bash
# The native stack: PostgreSQL, Redis, writer, reader and nginx on this machine, plus
# Prometheus and node-exporter (scripts/monitoring.sh), in the background, with every log and
# pid under .stack/ (git-ignored).
#
#   scripts/stack.sh start    build, start what is not running, wait until healthy (npm start)
#   scripts/stack.sh stop     stop what `start` started (npm stop)
#   scripts/stack.sh status   exit 0 if the stack answers through nginx
#   scripts/stack.sh deps     only make sure tools, PostgreSQL, Redis and the database are there
#
# Running `start` twice is harmless: a service that is up and whose binary has not been rebuilt
# is left alone. PostgreSQL and Redis that were already running are used, never stopped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${STACK_STATE_DIR:-$ROOT/.stack}"
LOGS="$STATE/logs"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/transactions}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export RUST_LOG="${RUST_LOG:-info}"
export LOG_FORMAT="${LOG_FORMAT:-json}"
WRITER_ADDR="127.0.0.1:8081"
READER_ADDR="127.0.0.1:8082"
WRITER_METRICS_ADDR="127.0.0.1:9181"
READER_METRICS_ADDR="127.0.0.1:9182"
PROXY_URL="http://127.0.0.1:8080"

say() { printf '[stack] %s\n' "$*"; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }
# pid_alive, wait_http, stop_pid
# shellcheck source=scripts/lib/process.sh
. "$ROOT/scripts/lib/process.sh"

# --- tools --------------------------------------------------------------------------------

# Debian package that provides each command the stack needs.
declare -A PACKAGE_OF=(
  [nginx]=nginx [psql]=postgresql-client [pg_isready]=postgresql-client
  [pg_ctlcluster]=postgresql [redis-server]=redis-server [redis-cli]=redis-tools [curl]=curl
)

ensure_tools() {
  local missing=() cmd
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$cmd")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local packages=() seen=" "
  for cmd in "${missing[@]}"; do
    local package="${PACKAGE_OF[$cmd]:-$cmd}"
    case "$seen" in *" $package "*) ;; *) packages+=("$package"); seen+="$package " ;; esac
  done
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${packages[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    # Debian starts some daemons on install; this stack runs its own.
    return 0
  fi
  die "missing commands: ${missing[*]}. Install them, e.g. on Debian/Ubuntu: sudo apt-get install ${packages[*]}"
}

ensure_cargo() {
  command -v cargo >/dev/null 2>&1 && return 0
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH" && return 0
  die "cargo is missing. Install Rust with rustup: https://rustup.rs (curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh)"
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
      ls /etc/postgresql/*/main >/dev/null 2>&1 || ensure_tools pg_ctlcluster
      say "starting PostgreSQL"
      local version
      version="$(ls /etc/postgresql | sort -V | tail -n 1)"
      pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    fi
    for _ in $(seq 1 30); do pg_isready -q -h "$host" -p "$port" && break; sleep 1; done
    pg_isready -q -h "$host" -p "$port" || die "PostgreSQL is not reachable at $host:$port (DATABASE_URL)"
  fi
  local database="${DATABASE_URL##*/}"; database="${database%%\?*}"
  local admin_url="${DATABASE_URL%/*}/postgres"
  if [ "$(psql "$admin_url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'")" != 1 ]; then
    say "creating database $database"
    psql "$admin_url" -qc "CREATE DATABASE \"$database\"" >/dev/null
  fi
}

ensure_redis() {
  if redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then return 0; fi
  local rest="${REDIS_URL#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"
  local port="${rest##*:}"
  say "starting Redis on port $port"
  mkdir -p "$STATE/redis" "$LOGS"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$STATE/redis" --logfile "$LOGS/redis.log" --pidfile "$STATE/redis.pid"
  for _ in $(seq 1 20); do redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 && return 0; sleep 0.5; done
  die "Redis did not start; see $LOGS/redis.log"
}

# --- our processes --------------------------------------------------------------------------

# start_service name binary listen metrics
start_service() {
  local name="$1" binary="$2" listen="$3" metrics="$4" pidfile="$STATE/$1.pid"
  if pid_alive "$pidfile"; then
    if [ "$binary" -nt "$pidfile" ]; then
      say "$name was rebuilt; restarting it"
      stop_pid "$name" "$pidfile"
    else
      say "$name already running (pid $(cat "$pidfile"))"
      return 0
    fi
  fi
  # Run a copy (a later `cargo build` cannot swap the file under a running service) from
  # .stack/bin. The services need no privileges: started as root, they drop to nobody
  # (setpriv execs, so $! is still the service's pid), if nobody can reach the copy.
  mkdir -p "$STATE/bin"
  cp -f "$binary" "$STATE/bin/$name"
  local run=("$STATE/bin/$name")
  if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1 && id nobody >/dev/null 2>&1; then
    local as_nobody=(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups --)
    if "${as_nobody[@]}" test -x "$STATE/bin/$name"; then
      run=("${as_nobody[@]}" "$STATE/bin/$name")
    else
      say "nobody cannot reach $STATE/bin; running $name as root"
    fi
  fi
  LISTEN_ADDR="$listen" METRICS_ADDR="$metrics" nohup "${run[@]}" >>"$LOGS/$name.log" 2>&1 &
  echo $! >"$pidfile"
  if ! wait_http "http://$listen/ping" 90; then
    tail -n 20 "$LOGS/$name.log" >&2 || true
    die "$name did not become healthy; see $LOGS/$name.log"
  fi
  say "$name up on $listen (metrics on $metrics)"
}

start_nginx() {
  local pidfile="$STATE/nginx.pid" prefix="$STATE/nginx"
  mkdir -p "$prefix"
  # nginx resolves `include env/...` next to the config it was given: link both into place.
  ln -sfn "$ROOT/nginx/nginx.conf" "$prefix/nginx.conf"
  ln -sfn "$ROOT/nginx/native" "$prefix/env"
  local nginx_bin; nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
  local args=(-p "$prefix" -c "$prefix/nginx.conf")
  "$nginx_bin" -t -q "${args[@]}" -g "pid $pidfile;" || die "nginx configuration is invalid"
  if pid_alive "$pidfile"; then
    "$nginx_bin" "${args[@]}" -g "pid $pidfile;" -s reload
    say "nginx already running; configuration reloaded"
  else
    nohup "$nginx_bin" "${args[@]}" -g "pid $pidfile; daemon off;" >>"$LOGS/nginx.access.log" 2>>"$LOGS/nginx.error.log" &
  fi
  wait_http "$PROXY_URL/ping" 30 || die "nginx did not answer on $PROXY_URL; see $LOGS/nginx.error.log"
  say "nginx up on $PROXY_URL"
}

build() {
  ensure_cargo
  say "building writer and reader (release)"
  (cd "$ROOT" && cargo build --release --locked -p writer -p reader)
}

start() {
  mkdir -p "$LOGS"
  ensure_tools nginx psql pg_isready redis-server redis-cli curl
  ensure_postgres
  ensure_redis
  build
  start_service writer "$TARGET_DIR/release/writer" "$WRITER_ADDR" "$WRITER_METRICS_ADDR"
  # The reader's tokio worker threads: one fewer than the cores, at least one. On a small host
  # that also runs nginx, Redis and PostgreSQL, a second worker mostly adds cross-core wake-ups:
  # measured on 2 cores, an account read cost the reader 25 us of CPU with one worker against
  # 29-34 us with two (docs/decisions.md 18). READER_WORKER_THREADS overrides it.
  local cores reader_threads
  cores="$(nproc)"
  reader_threads="${READER_WORKER_THREADS:-$((cores > 2 ? cores - 1 : 1))}"
  TOKIO_WORKER_THREADS="$reader_threads" \
    start_service reader "$TARGET_DIR/release/reader" "$READER_ADDR" "$READER_METRICS_ADDR"
  start_nginx
  bash "$ROOT/scripts/monitoring.sh" start
  say "stack is up: API $PROXY_URL, Prometheus http://127.0.0.1:9090, logs in $LOGS"
}

stop() {
  bash "$ROOT/scripts/monitoring.sh" stop
  stop_pid nginx "$STATE/nginx.pid"
  stop_pid reader "$STATE/reader.pid"
  stop_pid writer "$STATE/writer.pid"
  # Only a Redis this script started has a pid file here.
  stop_pid redis "$STATE/redis.pid"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) curl -fsS -o /dev/null --max-time 2 "$PROXY_URL/ping" ;;
  deps) mkdir -p "$LOGS"; ensure_tools nginx psql pg_isready redis-server redis-cli curl; ensure_postgres; ensure_redis ;;
  *) echo "usage: $0 start|stop|status|deps" >&2; exit 2 ;;
esac
