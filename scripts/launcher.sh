#!/usr/bin/env bash
# The one native launcher: N writers, M readers and nginx in front of them, each instance
# supervised (restarted when it dies, scripts/lib/supervise.sh), with every pid, log and
# generated file under one state folder. `npm start`/`npm stop` (scripts/stack.sh) and the fault
# tests (tests/faults/lib/stack.mjs) both run their stacks through it, with their own state
# folder and ports. PostgreSQL and Redis are not its business: the callers bring them.
#
#   scripts/launcher.sh up       start what is not running (or restart what was rebuilt), wait
#                                until every instance answers GET /ping, and nginx through it
#   scripts/launcher.sh down     end supervision, then stop every instance of the state folder
#   scripts/launcher.sh status   one line per instance; exit 0 if all run and nginx answers
#   scripts/launcher.sh nginx-env DIR   write the generated nginx env/ (upstreams, listen) to DIR
#   scripts/launcher.sh nginx-edge DIR  write the generated nginx edge/ (nginx/edge/generate.sh) to DIR
#   scripts/launcher.sh check-ports [--hint TEXT]   fail, naming the owner, if another process
#                                holds one of the ports (`up` checks this first as well)
#
# Parameters: environment variables, or the flags in brackets (defaults: scripts/lib/defaults.sh)
#   STACK_STATE_DIR     [--state DIR]       pids, logs, binaries' copies, nginx prefix (.stack)
#   WRITERS, READERS    [--writers N] [--readers M]   instances of each (1 and 1)
#   PROXY_PORT          [--proxy-port P]    nginx, on 127.0.0.1
#   WRITER_PORT, READER_PORT   [--writer-port P] [--reader-port P]   first instance's API port;
#                       instance k listens on PORT + k - 1
#   WRITER_METRICS_PORT, READER_METRICS_PORT   [--writer-metrics-port P] [--reader-metrics-port P]
#                       first instance's metrics port, likewise consecutive
#   SERVICE_BINARIES    [--binaries DIR]    where `writer` and `reader` are built
#                       ($CARGO_TARGET_DIR/release); the launcher runs copies in STATE/bin
#   LISTEN_HOST         the address the services and nginx listen on (127.0.0.1; the replicated
#                       topology's simulated hosts use 0.0.0.0, inside their own namespaces)
#   PROXY              no: no nginx (a host of the simulated topology: nginx runs elsewhere)
#   UPSTREAM_WRITERS, UPSTREAM_READERS   nginx's servers as "addr:port ..." instead of this
#                       launcher's own instances (nginx on the simulated topology's edge host;
#                       with WRITERS=0 READERS=0 it runs nginx alone); by TCP, and a server that
#                       failed is skipped for 3 s (a cut-off host costs one connect timeout)
#   READER_WORKER_THREADS, WRITER_WORKER_THREADS   the readers' and the writers'
#                       TOKIO_WORKER_THREADS, if set
#   TLS_PORT            nginx's HTTPS port on 127.0.0.1, when TLS_CERT and TLS_KEY are set
#   RATE_LIMIT_*, API_KEYS_FILE, TRUSTED_PROXIES, ALLOWED_HOSTS, TLS_CERT, TLS_KEY
#                       nginx's edge controls (nginx/edge/generate.sh; README, "Rate limits and
#                       HTTPS"); nginx's configuration is regenerated on every `up`
#   PROXY_UPSTREAM      unix (default): nginx reaches each instance on a Unix socket in
#                       STATE/sockets (its LISTEN_SOCKET); tcp: on its API port. Unix falls back
#                       to tcp when a socket path would be too long or nginx's workers could not
#                       reach the folder. Either way every instance also listens on its port.
#   WRITER_DATABASE_URL, READER_DATABASE_URL, WRITER_REDIS_URL, READER_REDIS_URL   each
#                       service's own DATABASE_URL and REDIS_URL, if set (scripts/lib/roles.sh);
#                       MIGRATION_DATABASE_URL reaches the writers only
# Every other variable (DATABASE_URL, REDIS_URL, RUST_LOG, ...) reaches the services as it is.
#
# Instance names: `writer`, `writer-2`, ... and `reader`, `reader-2`, ...; logs in
# STATE/logs/<name>.log, nginx.access.log, nginx.error.log and supervisor.log (every restart).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG=launcher
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

command="${1:-}"
[ $# -gt 0 ] && shift
nginx_env_dir=""
hint=""
while [ $# -gt 0 ]; do
  case "$1" in
    --state) STACK_STATE_DIR="$2" ;;
    --writers) WRITERS="$2" ;;
    --readers) READERS="$2" ;;
    --proxy-port) PROXY_PORT="$2" ;;
    --writer-port) WRITER_PORT="$2" ;;
    --reader-port) READER_PORT="$2" ;;
    --writer-metrics-port) WRITER_METRICS_PORT="$2" ;;
    --reader-metrics-port) READER_METRICS_PORT="$2" ;;
    --binaries) SERVICE_BINARIES="$2" ;;
    --hint) hint="$2" ;;
    *) case "$command" in nginx-env | nginx-edge) [ -z "$nginx_env_dir" ] && { nginx_env_dir="$1"; shift; continue; } ;; esac
       die "unknown argument: $1" ;;
  esac
  shift 2
done

STATE="${STACK_STATE_DIR:-$ROOT/.stack}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd -P)" # /proc/<pid>/exe shows resolved paths
LOGS="$STATE/logs"
WRITERS="${WRITERS:-$DEFAULT_WRITERS}"
READERS="${READERS:-$DEFAULT_READERS}"
PROXY_PORT="${PROXY_PORT:-$DEFAULT_PROXY_PORT}"
WRITER_PORT="${WRITER_PORT:-$DEFAULT_WRITER_PORT}"
READER_PORT="${READER_PORT:-$DEFAULT_READER_PORT}"
WRITER_METRICS_PORT="${WRITER_METRICS_PORT:-$DEFAULT_WRITER_METRICS_PORT}"
READER_METRICS_PORT="${READER_METRICS_PORT:-$DEFAULT_READER_METRICS_PORT}"
TLS_PORT="${TLS_PORT:-$DEFAULT_TLS_PORT}"
# nginx reads the certificate relative to its prefix: make the paths absolute here.
for _tls in TLS_CERT TLS_KEY; do
  if [ -n "${!_tls:-}" ] && [ "${!_tls#/}" = "${!_tls}" ]; then export "$_tls=$PWD/${!_tls}"; fi
done
SERVICE_BINARIES="${SERVICE_BINARIES:-$(release_dir)}"
SUPERVISE="$ROOT/scripts/lib/supervise.sh"
BASH_EXE="$(readlink -f "$BASH")"
NGINX_EXE="$(exe_path nginx)"
NGINX_PREFIX="$STATE/nginx"
SOCKETS="$STATE/sockets"
PROXY_UPSTREAM="${PROXY_UPSTREAM:-unix}"
LISTEN_HOST="${LISTEN_HOST:-127.0.0.1}"
PROXY="${PROXY:-yes}"
UPSTREAM_WRITERS="${UPSTREAM_WRITERS:-}"
UPSTREAM_READERS="${UPSTREAM_READERS:-}"
[ -z "$UPSTREAM_WRITERS$UPSTREAM_READERS" ] || PROXY_UPSTREAM=tcp
export SUPERVISE_RESTART_MS="${SUPERVISE_RESTART_MS:-$DEFAULT_SUPERVISE_RESTART_MS}"
export SUPERVISE_MAX_RESTART_MS="${SUPERVISE_MAX_RESTART_MS:-$DEFAULT_SUPERVISE_MAX_RESTART_MS}"
export SUPERVISE_STABLE_MS="${SUPERVISE_STABLE_MS:-$DEFAULT_SUPERVISE_STABLE_MS}"

# --- instances ------------------------------------------------------------------------------

# name kind k: the k-th instance (1-based) of writer or reader.
name() { if [ "$2" = 1 ]; then echo "$1"; else echo "$1-$2"; fi; }
# exe_of name: the executable an instance of that name runs.
exe_of() {
  case "$1" in
    nginx) echo "$NGINX_EXE" ;;
    logcap) echo "$BASH_EXE" ;;
    *) echo "$STATE/bin/${1%%-*}" ;;
  esac
}
# word_of name: what only this state folder's instance has in its command line.
word_of() {
  case "$1" in
    nginx) echo "-p $NGINX_PREFIX" ;;
    logcap) echo "cap-logs.sh $LOGS" ;;
    *) echo "" ;;
  esac
}
supervisor_of() { running "$STATE/$1.supervisor.pid" "$BASH_EXE" "supervise.sh $STATE $1 "; }
instance_of() { running "$STATE/$1.pid" "$(exe_of "$1")" "$(word_of "$1")"; }

# The names of every instance this state folder has supervised (from the pid files).
known_instances() {
  local file
  for file in "$STATE"/*.supervisor.pid "$STATE"/*.pid; do
    [ -e "$file" ] || continue
    file="${file##*/}"
    echo "${file%%.*}"
  done | sort -u
}

# Every "instance port" pair of this stack: nginx, then each writer's and reader's API and
# metrics ports.
instance_ports() {
  local k
  if [ "$PROXY" != no ]; then
    echo "nginx $PROXY_PORT"
    [ -z "${TLS_CERT:-}" ] || echo "nginx $TLS_PORT"
  fi
  for ((k = 1; k <= WRITERS; k++)); do
    printf '%s %s\n' "$(name writer "$k")" $((WRITER_PORT + k - 1)) "$(name writer "$k")" $((WRITER_METRICS_PORT + k - 1))
  done
  for ((k = 1; k <= READERS; k++)); do
    printf '%s %s\n' "$(name reader "$k")" $((READER_PORT + k - 1)) "$(name reader "$k")" $((READER_METRICS_PORT + k - 1))
  done
}

check_ports() {
  if [ -n "$UPSTREAM_WRITERS" ] && [ -n "$UPSTREAM_READERS" ]; then
    # nginx in front of servers listed by address: no instance of its own is needed.
    [[ "$WRITERS" =~ ^[0-9]+$ ]] && [[ "$READERS" =~ ^[0-9]+$ ]] || die "WRITERS and READERS must be numbers"
  else
    [[ "$WRITERS" =~ ^[1-9][0-9]*$ ]] && [[ "$READERS" =~ ^[1-9][0-9]*$ ]] || die "WRITERS and READERS must be at least 1"
  fi
  local repeated
  repeated="$(instance_ports | cut -d' ' -f2 | sort | uniq -d | tr '\n' ' ')"
  [ -z "$repeated" ] || die "port(s) ${repeated% } used twice: with $WRITERS writers and $READERS readers on consecutive ports, move READER_PORT or the metrics ports"
}

# refuse_foreign_ports: a port held by anything but this state folder's own instance would
# answer the health checks in its place (another stack's nginx on PROXY_PORT looks healthy).
# (The owner is looked at first: an instance its supervisor restarts meanwhile has written its
# pid file before it binds, so it is never taken for a stranger.)
refuse_foreign_ports() {
  local name port owner
  while read -r name port; do
    owner="$(port_owner "$port")" || continue
    instance_of "$name" >/dev/null && continue
    die "127.0.0.1:$port (for $name) is taken by $owner; ${hint:-stop it, or move this stack (PROXY_PORT, WRITER_PORT, ...)}"
  done < <(instance_ports)
}

# start_supervised name stdout stderr command...: unless a supervisor of that name runs, starts
# one (in its own session: nothing ties it to this shell or its terminal). Never reports a dead
# instance as running.
start_supervised() {
  local name="$1" out="$2" err="$3" pid
  shift 3
  if supervisor_of "$name" >/dev/null; then
    if pid="$(instance_of "$name")"; then say "$name already running (pid $pid)"
    else say "$name is down; its supervisor is restarting it"
    fi
    return 0
  fi
  # Its supervisor is gone (killed, or the machine restarted): whatever the pid files name is
  # stale, or an instance left running on its own, which is stopped and started supervised.
  stop_pidfile "$name (unsupervised)" "$STATE/$name.pid" "$(exe_of "$name")" "$(word_of "$name")"
  rm -f "$STATE/$name.hold" "$STATE/$name.exit" "$STATE/$name.supervisor.pid"
  setsid "$BASH" "$SUPERVISE" "$STATE" "$name" "$out" "$err" -- "$@" </dev/null >>"$LOGS/supervisor.log" 2>&1 &
  wait_until 10 supervisor_of "$name" || die "the supervisor of $name did not start; see $LOGS/supervisor.log"
  say "$name started under supervision"
}

# stop_instance name: ends supervision first (the supervisor stops restarting, sends the
# instance SIGTERM and waits for it), then makes sure the instance is gone.
stop_instance() {
  local name="$1" pid exe
  exe="$(exe_of "$name")"
  if pid="$(supervisor_of "$name")"; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until 30 pid_gone "$pid" "$BASH_EXE"; then
      say "the supervisor of $name did not end within 30 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  stop_pidfile "$name" "$STATE/$name.pid" "$exe" "$(word_of "$name")"
  rm -f "$STATE/$name.supervisor.pid" "$STATE/$name.hold"
  say "$name stopped"
}

# --- writer and reader ----------------------------------------------------------------------

# install_binary kind: STATE/bin/<kind> is a copy of the built binary (a later `cargo build`
# cannot swap the file under a running service). When the build differs from the copy, the
# kind's running instances are stopped first, and started again from the new copy below.
install_binary() {
  local kind="$1" source="$SERVICE_BINARIES/$1" copy="$STATE/bin/$1" name
  [ -x "$source" ] || die "$source is missing: build it first (npm start, or cargo build --release -p writer -p reader)"
  cmp -s "$source" "$copy" && return 0
  for name in $(known_instances); do
    if [ "${name%%-*}" = "$kind" ] && supervisor_of "$name" >/dev/null; then
      say "$name runs an older build; restarting it"
      stop_instance "$name"
    fi
  done
  mkdir -p "$STATE/bin"
  cp -f "$source" "$copy.tmp"
  mv -f "$copy.tmp" "$copy"
}

# The services need no privileges: started as root, they run as nobody (setpriv execs, so the
# supervised pid is the service's), if nobody can reach the copies.
as_nobody() {
  if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1 && id nobody >/dev/null 2>&1; then
    local drop=(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups --)
    if "${drop[@]}" test -x "$STATE/bin/writer"; then
      printf '%s\n' "${drop[@]}"
      return 0
    fi
    say "nobody cannot reach $STATE/bin; the services run as root" >&2
  fi
}

# start_service kind k
start_service() {
  local kind="$1" k="$2" name port metrics
  name="$(name "$kind" "$k")"
  if [ "$kind" = writer ]; then port=$((WRITER_PORT + k - 1)) metrics=$((WRITER_METRICS_PORT + k - 1))
  else port=$((READER_PORT + k - 1)) metrics=$((READER_METRICS_PORT + k - 1))
  fi
  local env=(LISTEN_ADDR="$LISTEN_HOST:$port" METRICS_ADDR="$LISTEN_HOST:$metrics")
  [ "$PROXY_UPSTREAM" = unix ] && env+=(LISTEN_SOCKET="$(socket_of "$name")")
  [ "$kind" = reader ] && [ -n "${READER_WORKER_THREADS:-}" ] && env+=(TOKIO_WORKER_THREADS="$READER_WORKER_THREADS")
  [ "$kind" = writer ] && [ -n "${WRITER_WORKER_THREADS:-}" ] && env+=(TOKIO_WORKER_THREADS="$WRITER_WORKER_THREADS")
  local drop
  mapfile -t drop < <(as_nobody)
  # Each service as its own role and Redis user where the caller provisioned them
  # (scripts/lib/roles.sh); passed in the environment, never on a command line (`ps`).
  local database_url="${DATABASE_URL:-}" redis_url="${REDIS_URL:-}" migration_url=""
  if [ "$kind" = writer ]; then
    database_url="${WRITER_DATABASE_URL:-$database_url}" redis_url="${WRITER_REDIS_URL:-$redis_url}"
    migration_url="${MIGRATION_DATABASE_URL:-}"
  else
    database_url="${READER_DATABASE_URL:-$database_url}" redis_url="${READER_REDIS_URL:-$redis_url}"
  fi
  DATABASE_URL="$database_url" REDIS_URL="$redis_url" MIGRATION_DATABASE_URL="$migration_url" \
    start_supervised "$name" "$LOGS/$name.log" "$LOGS/$name.log" env "${env[@]}" "${drop[@]}" "$STATE/bin/$kind"
  if ! wait_http "http://127.0.0.1:$port/ping" 90; then
    tail -n 20 "$LOGS/$name.log" >&2 || true
    die "$name did not become healthy on 127.0.0.1:$port; see $LOGS/$name.log and $LOGS/supervisor.log"
  fi
  say "$name up on 127.0.0.1:$port (metrics on 127.0.0.1:$metrics)"
}

# Instances of an earlier `up` with more writers or readers than now.
stop_surplus() {
  local name kind k
  for name in $(known_instances); do
    kind="${name%%-*}" k="${name#*-}"
    [ "$kind" != "$name" ] || continue
    case "$kind" in writer) [ "$k" -gt "$WRITERS" ] || continue ;; reader) [ "$k" -gt "$READERS" ] || continue ;; *) continue ;; esac
    stop_instance "$name"
  done
}

# --- nginx ----------------------------------------------------------------------------------

# Where instance NAME listens for nginx when PROXY_UPSTREAM=unix.
socket_of() { echo "$SOCKETS/$1.sock"; }

# Unix sockets between nginx and the services skip the loopback's TCP/IP stack: about 10 us
# less CPU per request for the two processes (bench/README.md, docs/decisions.md 29). Decided
# once per `up`, before the services start: a sun_path holds 107 bytes, and nginx's workers
# (nobody, when started as root) must be able to enter the folder.
choose_upstream() {
  [ "$PROXY_UPSTREAM" = unix ] || { PROXY_UPSTREAM=tcp; return 0; }
  local longest
  longest="$(socket_of "reader-$READERS")"
  if [ ${#longest} -gt 100 ]; then
    say "state folder path too long for Unix sockets ($longest): nginx uses TCP"
    PROXY_UPSTREAM=tcp; return 0
  fi
  mkdir -p "$SOCKETS"
  chmod 1777 "$SOCKETS" # the services may run as nobody and create their sockets here
  if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1 && id nobody >/dev/null 2>&1 &&
    ! setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups -- test -x "$SOCKETS"; then
    say "nobody (nginx's workers) cannot enter $SOCKETS: nginx uses TCP"
    PROXY_UPSTREAM=tcp
  fi
}

# upstream group first-port count: one upstream group, its servers on consecutive ports (or
# their Unix sockets). Several servers share the load by least connections (a long
# GET /transactions stream must not count as one request).
upstream() {
  local group="$1" first="$2" count="$3" k servers
  echo "upstream $group {"
  servers="UPSTREAM_${group^^}S"
  if [ -n "${!servers}" ]; then
    echo "    least_conn;"
    for k in ${!servers}; do echo "    server $k max_fails=1 fail_timeout=3s;"; done
    printf '    keepalive 64;\n    keepalive_requests 100000;\n}\n'
    return 0
  fi
  [ "$count" -gt 1 ] && echo "    least_conn;"
  for ((k = 0; k < count; k++)); do
    if [ "$PROXY_UPSTREAM" = unix ]; then
      echo "    server unix:$(socket_of "$(name "$group" $((k + 1)))") max_fails=0;"
    else
      echo "    server 127.0.0.1:$((first + k)) max_fails=0;"
    fi
  done
  echo "    keepalive 64;"
  echo "    keepalive_requests 100000;"
  echo "}"
}

# nginx_env dir: what differs between this stack and compose (nginx/compose/), generated from
# the launcher's parameters: the upstream groups and the listen address.
nginx_env() {
  local dir="$1"
  # A state folder from before the launcher has env/ as a link to the repository's old
  # nginx/native/ (gone now): replace it, never write through it.
  if [ -L "$dir" ]; then rm -f "$dir"; fi
  mkdir -p "$dir"
  {
    echo "# Generated by scripts/launcher.sh: $WRITERS writer(s), $READERS reader(s) on this host, by $PROXY_UPSTREAM."
    upstream writer "$WRITER_PORT" "$WRITERS"
    upstream reader "$READER_PORT" "$READERS"
  } >"$dir/upstreams.conf.tmp"
  mv -f "$dir/upstreams.conf.tmp" "$dir/upstreams.conf"
  printf '# Generated by scripts/launcher.sh (LISTEN_HOST).\nlisten %s:%s reuseport backlog=4096;\n' \
    "$LISTEN_HOST" "$PROXY_PORT" >"$dir/listen.conf"
}

# nginx_edge dir: the edge controls (rate limits, trusted proxies, Host names, HTTPS) from the
# settings in the environment, by the generator the containers run too.
nginx_edge() {
  EDGE_TLS_LISTEN="127.0.0.1:$TLS_PORT" sh "$ROOT/nginx/edge/generate.sh" "$1" ||
    die "nginx's edge settings are invalid (see above)"
}

# nginx's stdout and stderr are always the log files, so that nginx.conf's /dev/stdout and
# /dev/stderr (what compose's log collection reads) name files here too, whatever this script's
# own stdio is: a socket (a Node child process), which nginx cannot open(), or a closed terminal.
start_nginx() {
  mkdir -p "$NGINX_PREFIX"
  nginx_env "$NGINX_PREFIX/env"
  nginx_edge "$NGINX_PREFIX/edge"
  ln -sfn "$ROOT/nginx/nginx.conf" "$NGINX_PREFIX/nginx.conf"
  local out="$LOGS/nginx.access.log" err="$LOGS/nginx.error.log" pid
  local args=(-p "$NGINX_PREFIX/" -c "$NGINX_PREFIX/nginx.conf" -e "$err")
  if ! "$NGINX_EXE" -t -q "${args[@]}" -g "pid $NGINX_PREFIX/nginx.pid;" </dev/null >>"$out" 2>>"$err"; then
    tail -n 5 "$err" >&2
    die "nginx configuration is invalid; see $err"
  fi
  if supervisor_of nginx >/dev/null && pid="$(instance_of nginx)"; then
    kill -HUP "$pid"
    say "nginx already running (pid $pid); configuration reloaded"
  else
    start_supervised nginx "$out" "$err" "$NGINX_EXE" "${args[@]}" -g "pid $NGINX_PREFIX/nginx.pid; daemon off;"
  fi
  wait_http "http://127.0.0.1:$PROXY_PORT/ping" 30 || die "nginx did not answer on 127.0.0.1:$PROXY_PORT; see $err"
  say "nginx up on http://127.0.0.1:$PROXY_PORT"
}

# --- commands -------------------------------------------------------------------------------

up() {
  check_ports
  refuse_foreign_ports
  mkdir -p "$LOGS"
  choose_upstream
  install_binary writer
  install_binary reader
  stop_surplus
  local k
  # Writers first: the first one migrates the schema.
  for ((k = 1; k <= WRITERS; k++)); do start_service writer "$k"; done
  for ((k = 1; k <= READERS; k++)); do start_service reader "$k"; done
  [ "$PROXY" = no ] || start_nginx
  # The log files' bound (scripts/lib/cap-logs.sh), supervised like the rest.
  supervisor_of logcap >/dev/null ||
    start_supervised logcap "$LOGS/logcap.log" "$LOGS/logcap.log" bash "$ROOT/scripts/lib/cap-logs.sh" "$LOGS"
}

down() {
  local name
  [ -d "$STATE" ] || return 0
  # nginx first (no new requests), then readers, then writers.
  [ -e "$STATE/nginx.pid" ] || [ -e "$STATE/nginx.supervisor.pid" ] && stop_instance nginx
  for name in $(known_instances | grep '^reader'); do stop_instance "$name"; done
  for name in $(known_instances | grep '^writer'); do stop_instance "$name"; done
  { [ -e "$STATE/logcap.pid" ] || [ -e "$STATE/logcap.supervisor.pid" ]; } && stop_instance logcap
  return 0
}

status() {
  local name pid rc=0
  for name in $(known_instances | grep -E '^(writer|reader|nginx)'); do
    if pid="$(instance_of "$name")"; then
      say "$name: running (pid $pid)$(supervisor_of "$name" >/dev/null || echo ', unsupervised')"
    elif supervisor_of "$name" >/dev/null; then
      say "$name: down, being restarted by its supervisor"; rc=1
    else
      say "$name: not running"; rc=1
    fi
  done
  [ "$PROXY" = no ] || http_ok "http://127.0.0.1:$PROXY_PORT/ping" || { say "nothing answers on 127.0.0.1:$PROXY_PORT"; rc=1; }
  return "$rc"
}

# reload: every writer and reader reads API_KEYS_FILE again (SIGHUP); nothing restarts and no
# request is dropped. Without API keys a service logs the signal and carries on.
reload() {
  local name pid n=0
  for name in $(known_instances | grep -E '^(writer|reader)'); do
    if pid="$(instance_of "$name")"; then kill -HUP "$pid" && n=$((n + 1)); fi
  done
  say "sent SIGHUP to $n service instance(s): each reads API_KEYS_FILE again"
}

case "$command" in
  up) up ;;
  reload) reload ;;
  down) down ;;
  status) status ;;
  check-ports) check_ports; refuse_foreign_ports ;;
  nginx-env) [ -n "$nginx_env_dir" ] || die "usage: $0 nginx-env DIR"; check_ports; choose_upstream; nginx_env "$nginx_env_dir" ;;
  nginx-edge) [ -n "$nginx_env_dir" ] || die "usage: $0 nginx-edge DIR"; nginx_edge "$nginx_env_dir" ;;
  *) echo "usage: $0 up|down|status|reload|check-ports|nginx-env DIR|nginx-edge DIR [--state DIR] [--writers N] [--readers M] [--proxy-port P] ..." >&2; exit 2 ;;
esac
