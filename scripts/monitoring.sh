#!/usr/bin/env bash
# Native monitoring: Prometheus and node-exporter on this machine, in the background, with their
# data, logs and pids under .stack/ (git-ignored), like scripts/stack.sh.
#
#   scripts/monitoring.sh start    start what is not running, wait until ready (npm start)
#   scripts/monitoring.sh stop     stop what `start` started (npm stop)
#   scripts/monitoring.sh status   print what runs; exit 0 if both answer
#
# Prometheus (127.0.0.1:9090) reads monitoring/prometheus/prometheus.native.yml, which differs
# from the container config only in target addresses, and the same rule files. Running `start`
# twice is harmless: a running Prometheus only gets its configuration and rules reloaded.
# Grafana is not run natively; docker compose provisions it from monitoring/grafana/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${STACK_STATE_DIR:-$ROOT/.stack}"
LOGS="$STATE/logs"

TAG=monitoring
# say, die, apt_install, wait_http, defaults; running, stop_pidfile
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/process.sh
. "$ROOT/scripts/lib/process.sh"

PROMETHEUS_ADDR="127.0.0.1:${PROMETHEUS_PORT:-$DEFAULT_PROMETHEUS_PORT}"
NODE_EXPORTER_ADDR="127.0.0.1:${NODE_EXPORTER_PORT:-$DEFAULT_NODE_EXPORTER_PORT}"
# The replicated topology (scripts/ha/topology.sh) passes its generated configuration.
PROMETHEUS_CONFIG="${PROMETHEUS_CONFIG:-$ROOT/monitoring/prometheus/prometheus.native.yml}"
PROMETHEUS_DATA="$STATE/prometheus"
PROMETHEUS_PID="$STATE/prometheus.pid"
NODE_EXPORTER_PID="$STATE/node-exporter.pid"


# --- tools --------------------------------------------------------------------------------

# Debian's binary names first, then the upstream ones (release tarballs).
find_binary() { # name...
  local name
  for name in "$@"; do
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  done
  return 1
}

ensure_packages() {
  local packages=()
  find_binary prometheus >/dev/null || packages+=(prometheus)
  find_binary promtool >/dev/null || packages+=(prometheus)
  find_binary prometheus-node-exporter node_exporter >/dev/null || packages+=(prometheus-node-exporter)
  command -v curl >/dev/null 2>&1 || packages+=(curl)
  [ ${#packages[@]} -eq 0 ] && return 0
  mapfile -t packages < <(printf "%s\n" "${packages[@]}" | sort -u)
  apt_install "${packages[@]}"
  # Debian starts (and on systemd enables) its own services on install, with its own
  # configuration and on the same ports; this script runs its own instances instead.
  local unit
  for unit in prometheus prometheus-node-exporter; do
    if [ -d /run/systemd/system ]; then
      as_root systemctl disable --now "$unit" >/dev/null 2>&1 || true
    elif command -v invoke-rc.d >/dev/null 2>&1; then
      as_root invoke-rc.d "$unit" stop >/dev/null 2>&1 || true
    fi
  done
}

# The executables, resolved as /proc/<pid>/exe shows them (a pid file alone proves nothing).
exe_of() { readlink -f "$(find_binary "$@" || echo "/usr/bin/$1")"; }

# --- processes ------------------------------------------------------------------------------

answers() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

start_node_exporter() {
  local url="http://$NODE_EXPORTER_ADDR/metrics"
  local pid
  if pid="$(running "$NODE_EXPORTER_PID" "$(exe_of prometheus-node-exporter node_exporter)")"; then
    say "node-exporter already running (pid $pid)"
    return 0
  fi
  answers "$url" && die "something else already listens on $NODE_EXPORTER_ADDR (Debian's prometheus-node-exporter service? stop it: service prometheus-node-exporter stop)"
  local binary; binary="$(find_binary prometheus-node-exporter node_exporter)"
  # The systemd collector needs a running systemd and the dashboards do not use it.
  nohup "$binary" --web.listen-address="$NODE_EXPORTER_ADDR" --no-collector.systemd \
    </dev/null >>"$LOGS/node-exporter.log" 2>&1 &
  echo $! >"$NODE_EXPORTER_PID"
  if ! wait_http "$url" 30; then
    tail -n 20 "$LOGS/node-exporter.log" >&2 || true
    die "node-exporter did not start; see $LOGS/node-exporter.log"
  fi
  say "node-exporter up on $NODE_EXPORTER_ADDR"
}

start_prometheus() {
  local url="http://$PROMETHEUS_ADDR"
  promtool check config "$PROMETHEUS_CONFIG" >/dev/null 2>&1 \
    || { promtool check config "$PROMETHEUS_CONFIG" >&2 || true; die "$PROMETHEUS_CONFIG is invalid"; }
  local pid
  if pid="$(running "$PROMETHEUS_PID" "$(exe_of prometheus)")"; then
    # Picks up changed scrape configuration and rule files (--web.enable-lifecycle).
    curl -fsS -o /dev/null --max-time 10 -X POST "$url/-/reload" \
      || die "Prometheus (pid $pid) did not reload its configuration; see $LOGS/prometheus.log"
    say "Prometheus already running (pid $pid); configuration reloaded"
    return 0
  fi
  answers "$url/-/ready" && die "something else already listens on $PROMETHEUS_ADDR (Debian's prometheus service? stop it: service prometheus stop)"
  mkdir -p "$PROMETHEUS_DATA"
  local binary; binary="$(find_binary prometheus)"
  # Console templates are not used; Debian's defaults (/etc/prometheus/consoles...) do no harm.
  nohup "$binary" \
    --config.file="$PROMETHEUS_CONFIG" \
    --storage.tsdb.path="$PROMETHEUS_DATA" \
    --storage.tsdb.retention.time=7d \
    --web.listen-address="$PROMETHEUS_ADDR" \
    --web.enable-lifecycle \
    </dev/null >>"$LOGS/prometheus.log" 2>&1 &
  echo $! >"$PROMETHEUS_PID"
  if ! wait_http "$url/-/ready" 60; then
    tail -n 20 "$LOGS/prometheus.log" >&2 || true
    die "Prometheus did not become ready; see $LOGS/prometheus.log"
  fi
  say "Prometheus up on $url (config $PROMETHEUS_CONFIG, data in $PROMETHEUS_DATA)"
}

start() {
  mkdir -p "$LOGS"
  ensure_packages
  start_node_exporter
  start_prometheus
}

stop() {
  stop_pidfile prometheus "$PROMETHEUS_PID" "$(exe_of prometheus)"
  stop_pidfile node-exporter "$NODE_EXPORTER_PID" "$(exe_of prometheus-node-exporter node_exporter)"
}

status() {
  local rc=0
  if answers "http://$PROMETHEUS_ADDR/-/ready"; then
    say "Prometheus answers on http://$PROMETHEUS_ADDR$(running "$PROMETHEUS_PID" "$(exe_of prometheus)" | sed 's/.*/ (pid &)/')"
  else
    say "Prometheus is not answering on http://$PROMETHEUS_ADDR"; rc=1
  fi
  if answers "http://$NODE_EXPORTER_ADDR/metrics"; then
    say "node-exporter answers on http://$NODE_EXPORTER_ADDR$(running "$NODE_EXPORTER_PID" "$(exe_of prometheus-node-exporter node_exporter)" | sed 's/.*/ (pid &)/')"
  else
    say "node-exporter is not answering on http://$NODE_EXPORTER_ADDR"; rc=1
  fi
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
