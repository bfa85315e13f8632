#!/usr/bin/env bash
# Native monitoring: Prometheus and node-exporter on this machine, in the background, with their
# data, logs and pids under .stack/ (git-ignored), like scripts/stack.sh.
#
#   scripts/monitoring.sh start    start what is not running, wait until ready (npm start)
#   scripts/monitoring.sh stop     stop what `start` started (npm stop)
#   scripts/monitoring.sh status   print what runs; exit 0 if both answer
#
# Prometheus (127.0.0.1:PROMETHEUS_PORT) reads monitoring/prometheus/prometheus.native.yml,
# which differs from the container config only in target addresses, and the same rule files;
# when the stack runs on other ports (WRITER_METRICS_PORT, READER_METRICS_PORT,
# NODE_EXPORTER_PORT: npm test's own stack), a copy with those ports in the state folder.
# Running `start` twice is harmless: a running Prometheus only gets its configuration and rules
# reloaded. Grafana is not run natively; docker compose provisions it from monitoring/grafana/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${STACK_STATE_DIR:-$ROOT/.stack}"
LOGS="$STATE/logs"

TAG=monitoring
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

PROMETHEUS_ADDR="127.0.0.1:${PROMETHEUS_PORT:-$DEFAULT_PROMETHEUS_PORT}"
NODE_EXPORTER_ADDR="127.0.0.1:${NODE_EXPORTER_PORT:-$DEFAULT_NODE_EXPORTER_PORT}"
# The replicated topology (scripts/ha/topology.sh) passes its generated configuration.
NATIVE_CONFIG="$ROOT/monitoring/prometheus/prometheus.native.yml"
PROMETHEUS_CONFIG="${PROMETHEUS_CONFIG:-}"
PROMETHEUS_DATA="$STATE/prometheus"
PROMETHEUS_PID="$STATE/prometheus.pid"
NODE_EXPORTER_PID="$STATE/node-exporter.pid"

# --- tools --------------------------------------------------------------------------------

# Debian's binary names first, then the upstream ones (release tarballs).
TOOLS=(prometheus=prometheus promtool=prometheus curl=curl ss=iproute2
  'prometheus-node-exporter|node_exporter=prometheus-node-exporter')
PROMETHEUS_EXE="$(exe_path prometheus)"
NODE_EXPORTER_EXE="$(exe_path prometheus-node-exporter node_exporter)"

ensure_packages() {
  local packages
  mapfile -t packages < <(missing_packages "${TOOLS[@]}")
  [ ${#packages[@]} -gt 0 ] || return 0
  apt_install "${packages[@]}"
  PROMETHEUS_EXE="$(exe_path prometheus)"
  NODE_EXPORTER_EXE="$(exe_path prometheus-node-exporter node_exporter)"
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

# --- processes ------------------------------------------------------------------------------

# start_server name pidfile url seconds command...: unless it runs (then `already`), refuses a
# port someone else holds, starts it and waits until the URL answers.
start_server() {
  local name="$1" pidfile="$2" url="$3" seconds="$4" exe="$5" pid port
  shift 4
  if pid="$(running "$pidfile" "$exe")"; then
    echo "$pid"
    return 0
  fi
  port="${url#http://*:}"; port="${port%%/*}"
  refuse_taken_port "$port" "$name" "Debian's own $name service? stop it (service $name stop; Debian's names it prometheus-node-exporter)"
  start_daemon "$pidfile" "$LOGS/$name.log" "$@"
  if ! wait_http "$url" "$seconds"; then
    tail -n 20 "$LOGS/$name.log" >&2 || true
    die "$name did not start; see $LOGS/$name.log"
  fi
}

start_node_exporter() {
  local pid
  # The systemd collector needs a running systemd and the dashboards do not use it.
  pid="$(start_server node-exporter "$NODE_EXPORTER_PID" "http://$NODE_EXPORTER_ADDR/metrics" 30 \
    "$NODE_EXPORTER_EXE" --web.listen-address="$NODE_EXPORTER_ADDR" --no-collector.systemd)"
  if [ -n "$pid" ]; then say "node-exporter already running (pid $pid)"; else say "node-exporter up on $NODE_EXPORTER_ADDR"; fi
}

# The configuration Prometheus reads: the topology's, else the native one with this stack's
# metrics ports (the same file when they are the defaults) and its rule files by full path.
write_native_config() {
  PROMETHEUS_CONFIG="$STATE/prometheus-config/prometheus.yml"
  mkdir -p "${PROMETHEUS_CONFIG%/*}"
  sed -e "s|\"127.0.0.1:$DEFAULT_WRITER_METRICS_PORT\"|\"127.0.0.1:${WRITER_METRICS_PORT:-$DEFAULT_WRITER_METRICS_PORT}\"|" \
    -e "s|\"127.0.0.1:$DEFAULT_READER_METRICS_PORT\"|\"127.0.0.1:${READER_METRICS_PORT:-$DEFAULT_READER_METRICS_PORT}\"|" \
    -e "s|\"127.0.0.1:$DEFAULT_NODE_EXPORTER_PORT\"|\"127.0.0.1:${NODE_EXPORTER_PORT:-$DEFAULT_NODE_EXPORTER_PORT}\"|" \
    -e "s|^  - rules/|  - $ROOT/monitoring/prometheus/rules/|" "$NATIVE_CONFIG" >"$PROMETHEUS_CONFIG.tmp"
  mv -f "$PROMETHEUS_CONFIG.tmp" "$PROMETHEUS_CONFIG"
}

start_prometheus() {
  local url="http://$PROMETHEUS_ADDR" pid
  [ -n "$PROMETHEUS_CONFIG" ] || write_native_config
  promtool check config "$PROMETHEUS_CONFIG" >/dev/null 2>&1 \
    || { promtool check config "$PROMETHEUS_CONFIG" >&2 || true; die "$PROMETHEUS_CONFIG is invalid"; }
  mkdir -p "$PROMETHEUS_DATA"
  # Console templates are not used; Debian's defaults (/etc/prometheus/consoles...) do no harm.
  pid="$(start_server prometheus "$PROMETHEUS_PID" "$url/-/ready" 60 "$PROMETHEUS_EXE" \
    --config.file="$PROMETHEUS_CONFIG" \
    --storage.tsdb.path="$PROMETHEUS_DATA" \
    --storage.tsdb.retention.time="${PROMETHEUS_RETENTION:-7d}" \
    --storage.tsdb.retention.size="${PROMETHEUS_RETENTION_SIZE:-1GB}" \
    --web.listen-address="$PROMETHEUS_ADDR" \
    --web.enable-lifecycle)"
  if [ -z "$pid" ]; then
    say "Prometheus up on $url (config $PROMETHEUS_CONFIG, data in $PROMETHEUS_DATA)"
    return 0
  fi
  # Picks up changed scrape configuration and rule files (--web.enable-lifecycle).
  curl -fsS -o /dev/null --max-time 10 -X POST "$url/-/reload" \
    || die "Prometheus (pid $pid) did not reload its configuration; see $LOGS/prometheus.log"
  say "Prometheus already running (pid $pid); configuration reloaded"
}

start() {
  mkdir -p "$LOGS"
  ensure_packages
  start_node_exporter
  start_prometheus
}

stop() {
  stop_pidfile prometheus "$PROMETHEUS_PID" "$PROMETHEUS_EXE"
  stop_pidfile node-exporter "$NODE_EXPORTER_PID" "$NODE_EXPORTER_EXE"
}

status() {
  local rc=0
  if http_ok "http://$PROMETHEUS_ADDR/-/ready"; then
    say "Prometheus answers on http://$PROMETHEUS_ADDR$(running "$PROMETHEUS_PID" "$PROMETHEUS_EXE" | sed 's/.*/ (pid &)/')"
  else
    say "Prometheus is not answering on http://$PROMETHEUS_ADDR"; rc=1
  fi
  if http_ok "http://$NODE_EXPORTER_ADDR/metrics"; then
    say "node-exporter answers on http://$NODE_EXPORTER_ADDR$(running "$NODE_EXPORTER_PID" "$NODE_EXPORTER_EXE" | sed 's/.*/ (pid &)/')"
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
