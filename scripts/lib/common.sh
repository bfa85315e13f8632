# shellcheck shell=bash
# The shell toolkit every script here sources (not run); the caller sets TAG first. One way to
# do each thing, so a script says what it needs and not how:
#
#   defaults      the default ports and addresses (defaults.sh), use_port_set for a test's set
#   messages      say, die, check/checks_passed (run every check, remember the failures)
#   liveness      wait_until (any command), http_ok and wait_http (an HTTP 2xx)
#   ports         port_owner (who listens on a port), refuse_taken_port
#   installing    apt_install, ensure_commands, pinned_venv, ensure_node_modules (install.sh)
#   building      build_services, require_built (install.sh)
#   processes     running, stop_pid(file), start_daemon (process.sh)

# shellcheck source=scripts/lib/defaults.sh
. "$(dirname "${BASH_SOURCE[0]}")/defaults.sh"
# The cap and eviction policy of every Redis a script starts (see defaults.sh).
export REDIS_MAXMEMORY="${REDIS_MAXMEMORY:-$DEFAULT_REDIS_MAXMEMORY}"
export REDIS_MAXMEMORY_POLICY="${REDIS_MAXMEMORY_POLICY:-$DEFAULT_REDIS_MAXMEMORY_POLICY}"

say() { printf '[%s] %s\n' "${TAG:-stack}" "$*"; }
die() { printf '[%s] error: %s\n' "${TAG:-stack}" "$*" >&2; exit 1; }

# Runs a command as root: directly when root, else through password-less sudo (CI runners).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}
can_be_root() { [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; }

# has_command name: on PATH, or in /usr/sbin (not on a non-root PATH on Debian).
has_command() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

# exe_path name...: the first of the names found, resolved as /proc/<pid>/exe shows it (else
# /usr/bin/<first name>, so that a pid check fails rather than matches anything).
exe_path() {
  local name
  for name in "$@"; do
    if command -v "$name" >/dev/null 2>&1; then readlink -f "$(command -v "$name")"; return 0; fi
    if [ -x "/usr/sbin/$name" ]; then readlink -f "/usr/sbin/$name"; return 0; fi
  done
  echo "/usr/bin/$1"
}

# use_port_set PREFIX: exports every port of the native stack (PROXY_PORT, WRITER_PORT, ...)
# as defaults.sh's DEFAULT_<PREFIX><NAME> says, where defaults.sh has one: npm test's own stack
# (TEST_) and its compose run (COMPOSE_TEST_) are the native stack on other ports.
use_port_set() {
  local name value
  for name in PROXY_PORT WRITER_PORT READER_PORT WRITER_METRICS_PORT READER_METRICS_PORT \
    PROMETHEUS_PORT NODE_EXPORTER_PORT GRAFANA_PORT TLS_PORT; do
    value="DEFAULT_$1$name"
    [ -n "${!value:-}" ] && export "$name=${!value}"
  done
  return 0
}

# check description command...: runs one check of many, prints ok/FAILED, adds a failure to
# CHECKS_FAILED and returns the command's status; checks_passed says whether every check so far
# passed. (Scripts that use it run without `set -e`: a failed check must not end the run.)
CHECKS_PASSED=0
CHECKS_FAILED=()
check() {
  local what="$1" status=0
  shift
  printf '\n--- %s ---\n' "$what"
  "$@" || status=$?
  if [ "$status" = 0 ]; then
    CHECKS_PASSED=$((CHECKS_PASSED + 1))
    printf 'ok: %s\n' "$what"
  else
    CHECKS_FAILED+=("$what")
    printf 'FAILED: %s\n' "$what"
  fi
  return "$status"
}
checks_passed() {
  if [ ${#CHECKS_FAILED[@]} -gt 0 ]; then printf 'failed: %s\n' "${CHECKS_FAILED[@]}"; fi
  [ ${#CHECKS_FAILED[@]} -eq 0 ]
}

# The services' tokio worker threads on this host when READER_WORKER_THREADS or
# WRITER_WORKER_THREADS does not say otherwise: one fewer than the cores, at least one. On a
# small host that also runs nginx, Redis and PostgreSQL, a second worker mostly adds cross-core
# wake-ups (docs/decisions.md 18).
default_worker_threads() {
  local cores
  cores="$(nproc)"
  echo $((cores > 2 ? cores - 1 : 1))
}

# --- liveness: the one rule --------------------------------------------------------------------

# wait_until seconds command...: polls the command (output discarded) every 0.1 s until it
# succeeds; fails after the deadline.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

# http_ok url: the URL answers 2xx within 2 s.
http_ok() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

# wait_http url [seconds]: poll until the URL answers 2xx, or fail after the deadline (30 s).
wait_http() { wait_until "${2:-30}" http_ok "$1"; }

# --- who owns a port ---------------------------------------------------------------------------

# port_owner port: succeeds when something listens on TCP port `port` (any address), and prints
# what: "pid N: its command line" (of the parent, when the listener is a worker of a program
# of the same name, such as nginx's master), or "a process of another user" when ss cannot say.
port_owner() {
  local line pid parent
  line="$(ss -Hltnp "sport = :$1" 2>/dev/null | head -n 1)"
  [ -n "$line" ] || return 1
  pid="$(grep -o 'pid=[0-9]*' <<<"$line" | head -n 1 | cut -d= -f2)"
  [ -n "$pid" ] || { echo "a process of another user"; return 0; }
  parent="$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ')"
  if [ -n "$parent" ] && [ "$(ps -o comm= -p "$parent" 2>/dev/null)" = "$(ps -o comm= -p "$pid" 2>/dev/null)" ]; then
    pid="$parent"
  fi
  echo "pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | sed 's/ *$//' | cut -c1-200)"
}

# refuse_taken_port port what [hint]: dies when something listens on the port, naming it.
refuse_taken_port() {
  local owner
  owner="$(port_owner "$1")" || return 0
  die "127.0.0.1:$1 ($2) is taken by $owner${3:+; $3}"
}

# shellcheck source=scripts/lib/process.sh
. "$(dirname "${BASH_SOURCE[0]}")/process.sh"
# shellcheck source=scripts/lib/install.sh
. "$(dirname "${BASH_SOURCE[0]}")/install.sh"
