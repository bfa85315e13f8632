#!/usr/bin/env bash
# The replicated topology (docs/ha.md): the stores (scripts/ha/stores.sh: etcd, 2 Patroni/
# PostgreSQL nodes, HAProxy, Redis master + replica, 3 Sentinels), then 2 writers, 2 readers and
# nginx through the one launcher (scripts/launcher.sh, its own state folder), then Prometheus
# scraping every instance (a generated configuration) and the store-roles exporter.
#
#   scripts/ha/topology.sh start    npm run ha:start: build, start what is not running, wait
#   scripts/ha/topology.sh stop     npm run ha:stop: stop everything `start` started
#   scripts/ha/topology.sh status   npm run ha:status: one JSON object, every component now
#
# Only one of the two stacks runs at a time (both serve the API on 127.0.0.1:8080): `start`
# refuses while the single stack (npm start) is up, and scripts/stack.sh refuses while this one is.
#
# On simulated hosts (HA_HOSTS=3, docs/ha.md "Simulated hosts"): the stores spread over the host
# namespaces, one launcher per host (a writer and a reader, no nginx, on every address of the
# host), and nginx alone on the edge host, in front of all of them; no monitoring.
#
# Settings: scripts/ha/defaults.env (HA_PORT_BASE moves every port but the proxy's,
# HA_PROXY_PORT that one, HA_STATE_DIR the state). Two more let the tests run this very script
# on a private copy: HA_BUILD=no (use the binaries as built) and HA_MONITORING=no (no
# Prometheus, node-exporter or roles exporter).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HA_TAG=ha
# shellcheck source=scripts/ha/lib/common.sh
. "$ROOT/scripts/ha/lib/common.sh"
SERVICES="${HA_SERVICES_STATE:-$STATE/services}"

PROMETHEUS_CONFIG="$STATE/prometheus/prometheus.yml"
ROLES_PID="$STATE/roles-exporter.pid"
NODE_EXE="$(exe_path node)"

# The launcher's parameters for this topology; everything else it passes to the services.
launcher() {
  env STACK_STATE_DIR="$SERVICES" WRITERS="$HA_WRITERS" READERS="$HA_READERS" \
    PROXY_PORT="$HA_PROXY_PORT" WRITER_PORT="$HA_WRITER_PORT" READER_PORT="$HA_READER_PORT" \
    WRITER_METRICS_PORT="$HA_WRITER_METRICS_PORT" READER_METRICS_PORT="$HA_READER_METRICS_PORT" \
    bash "$ROOT/scripts/launcher.sh" "$@"
}

# The single stack and this one both serve the API on DEFAULT_PROXY_PORT: the launcher refuses
# a port that another process holds (only our own instances may), before anything starts.
refuse_if_port_taken() {
  hosts_mode && return 0 # nginx listens in the edge host's namespace
  launcher check-ports --hint "most likely the single stack (npm start): stop it first (npm stop); only one of the two stacks runs at a time"
}

# The Redis master the Sentinels name now, as host:port.
sentinel_master() {
  local port answer
  for port in $HA_SENTINEL_PORTS; do
    answer="$(redis_admin "$port" SENTINEL get-master-addr-by-name "$HA_REDIS_MASTER_NAME" 2>/dev/null | paste -sd: -)" || continue
    [[ "$answer" =~ ^[0-9.]+:[0-9]+$ ]] && { echo "$answer"; return 0; }
  done
  return 1
}

# The services: both on the write port (the primary) - the reader's fallback reads must see
# every acknowledged write (docs/decisions.md 27) - each kind as its own PostgreSQL role (the
# writers migrate as the owner) and its own Redis user, and Redis through the Sentinels, as
# their user `ledger`. Credentials go in the environment (the launcher's per-kind variables),
# never on a command line. REDIS_URL names the master the Sentinels name at start, for builds
# that do not read REDIS_SENTINELS yet (they ignore unknown variables); builds that do follow
# the Sentinels and take only the user, password and database number from it. The services'
# tokio workers as `npm start` sets them (default_worker_threads).
start_services() {
  local master
  master="$(sentinel_master)" || die "no Sentinel names a Redis master \"$HA_REDIS_MASTER_NAME\""
  if hosts_mode; then start_services_on_hosts "$master"; return 0; fi
  service_env "$master" launcher up
}

# service_env master command...: runs the command (a launcher) with the services' settings.
service_env() {
  local master="$1"
  shift
  # shellcheck disable=SC2034 # read by the launcher through the environment
  DATABASE_URL="$HA_DATABASE_URL" MIGRATION_DATABASE_URL="$HA_MIGRATION_DATABASE_URL" \
    READER_DATABASE_URL="$HA_READER_DATABASE_URL" \
    WRITER_REDIS_URL="redis://writer:$HA_REDIS_WRITER_PASSWORD@$master/0" \
    READER_REDIS_URL="redis://reader:$HA_REDIS_READER_PASSWORD@$master/0" \
    REDIS_KEY_PREFIX="$HA_REDIS_KEY_PREFIX" \
    REDIS_SENTINELS="$HA_REDIS_SENTINELS" REDIS_SENTINEL_MASTER="$HA_REDIS_MASTER_NAME" \
    REDIS_SENTINEL_USERNAME=ledger REDIS_SENTINEL_PASSWORD="$HA_SENTINEL_CLIENT_PASSWORD" \
    RUST_LOG="${RUST_LOG:-info}" LOG_FORMAT="${LOG_FORMAT:-json}" \
    READER_WORKER_THREADS="${READER_WORKER_THREADS:-$(default_worker_threads)}" \
    WRITER_WORKER_THREADS="${WRITER_WORKER_THREADS:-$(default_worker_threads)}" \
    "$@"
}

# On hosts: a launcher per host in its namespace (1 writer, 1 reader, listening on every
# address of the host; DATABASE_URL is the host's own HAProxy on its loopback), then nginx on
# the edge, in front of every host's writer and reader, on the address the root namespace
# reaches. Each host's services are one supervised state folder, $STATE/services-h<n>.
host_launcher() {
  local h="$1"
  shift
  # PAUSE_FENCE_MS: a reader whose host was frozen reads no balance from PostgreSQL for one
  # leader ttl after waking (reader/src/pause_fence.rs): its old primary may have lost the lock.
  env STACK_STATE_DIR="$STATE/services-h$h" WRITERS=1 READERS=1 PROXY=no LISTEN_HOST=0.0.0.0 \
    PAUSE_FENCE_MS="${PAUSE_FENCE_MS:-$((HA_PATRONI_TTL * 1000))}" \
    PROXY_PORT="$HA_PROXY_PORT" WRITER_PORT="$HA_WRITER_PORT" READER_PORT="$HA_READER_PORT" \
    WRITER_METRICS_PORT="$HA_WRITER_METRICS_PORT" READER_METRICS_PORT="$HA_READER_METRICS_PORT" \
    ip netns exec "$(ns_of_host "$h")" bash "$ROOT/scripts/launcher.sh" "$@"
}

edge_launcher() {
  local h writers="" readers=""
  for h in $(host_list); do
    writers+="$(addr_of_host "$h"):$HA_WRITER_PORT " readers+="$(addr_of_host "$h"):$HA_READER_PORT "
  done
  env STACK_STATE_DIR="$STATE/services-edge" WRITERS=0 READERS=0 LISTEN_HOST=0.0.0.0 \
    PROXY_PORT="$HA_PROXY_PORT" UPSTREAM_WRITERS="${writers% }" UPSTREAM_READERS="${readers% }" \
    ip netns exec "$EDGE_NS" bash "$ROOT/scripts/launcher.sh" "$@"
}

start_services_on_hosts() {
  local h
  for h in $(host_list); do service_env "$1" host_launcher "$h" up; done
  edge_launcher up
}

# component name kind port [pidfile [host address]]: `ha:status` lists it (scripts/ha/status.mjs).
component() {
  local file="$STATE/components/$1.json"
  printf '{"name":"%s","kind":"%s","port":%s%s%s}\n' "$1" "$2" "$3" "${4:+,\"pidFile\":\"$4\"}" \
    "${5:+,\"host\":\"$5\",\"address\":\"$6\"}" >"$file.tmp"
  mv -f "$file.tmp" "$file"
}

register_services() {
  local k name h
  mkdir -p "$STATE/components"
  if hosts_mode; then
    for h in $(host_list); do
      component "writer-h$h" writer "$HA_WRITER_PORT" "$STATE/services-h$h/writer.pid" "$(ns_of_host "$h")" "$(addr_of_host "$h")"
      component "reader-h$h" reader "$HA_READER_PORT" "$STATE/services-h$h/reader.pid" "$(ns_of_host "$h")" "$(addr_of_host "$h")"
    done
    # The address and port clients use, from the root namespace.
    component nginx nginx "$HA_PROXY_PORT" "$STATE/services-edge/nginx.pid" "$EDGE_NS" "$EDGE_ADDR"
    return 0
  fi
  for ((k = 1; k <= HA_WRITERS; k++)); do
    name="writer$([ "$k" = 1 ] || echo "-$k")"
    component "$name" writer $((HA_WRITER_PORT + k - 1)) "$SERVICES/$name.pid"
  done
  for ((k = 1; k <= HA_READERS; k++)); do
    name="reader$([ "$k" = 1 ] || echo "-$k")"
    component "$name" reader $((HA_READER_PORT + k - 1)) "$SERVICES/$name.pid"
  done
  component nginx nginx "$HA_PROXY_PORT" "$SERVICES/nginx.pid"
}

# targets first-port count job: the scrape targets of one launcher kind, instance = its name.
targets() {
  local first="$1" count="$2" job="$3" k
  for ((k = 1; k <= count; k++)); do
    printf '      - targets: ["127.0.0.1:%s"]\n        labels:\n          instance: %s\n' \
      $((first + k - 1)) "$job$([ "$k" = 1 ] || echo "-$k")"
  done
}

# Prometheus for this topology: the native configuration's jobs (writer, reader, node) with
# every instance, plus HAProxy's /metrics and the store roles. Same rules, same dashboard.
write_prometheus_config() {
  mkdir -p "$(dirname "$PROMETHEUS_CONFIG")"
  {
    echo "# Generated by scripts/ha/topology.sh for the replicated topology; the single stack's"
    echo "# counterpart is monitoring/prometheus/prometheus.native.yml (same jobs, one instance each)."
    printf 'global:\n  scrape_interval: 5s\n  scrape_timeout: 4s\n  evaluation_interval: 5s\n'
    printf 'rule_files:\n  - %s/monitoring/prometheus/rules/*.yml\n' "$ROOT"
    printf 'scrape_configs:\n'
    printf '  - job_name: writer\n    sample_limit: 5000\n    static_configs:\n'
    targets "$HA_WRITER_METRICS_PORT" "$HA_WRITERS" writer
    printf '  - job_name: reader\n    sample_limit: 5000\n    static_configs:\n'
    targets "$HA_READER_METRICS_PORT" "$HA_READERS" reader
    printf '  - job_name: node\n    sample_limit: 20000\n    static_configs:\n      - targets: ["127.0.0.1:%s"]\n        labels:\n          instance: host\n' \
      "${NODE_EXPORTER_PORT:-$DEFAULT_NODE_EXPORTER_PORT}"
    printf '  - job_name: haproxy\n    sample_limit: 5000\n    static_configs:\n      - targets: ["127.0.0.1:%s"]\n        labels:\n          instance: haproxy\n' \
      "$HA_HAPROXY_STATS_PORT"
    printf '  - job_name: store-roles\n    sample_limit: 1000\n    static_configs:\n      - targets: ["127.0.0.1:%s"]\n        labels:\n          instance: stores\n' \
      "$HA_ROLES_EXPORTER_PORT"
  } >"$PROMETHEUS_CONFIG.tmp"
  mv -f "$PROMETHEUS_CONFIG.tmp" "$PROMETHEUS_CONFIG"
}

start_roles_exporter() {
  local pid
  if pid="$(running "$ROLES_PID" "$NODE_EXE" roles-exporter.mjs)"; then
    say "roles exporter already running (pid $pid)"
  else
    HA_STATE_DIR="$STATE" start_daemon "$ROLES_PID" "$LOGS/roles-exporter.log" \
      node "$ROOT/scripts/ha/roles-exporter.mjs" "$HA_ROLES_EXPORTER_PORT"
  fi
  wait_http "http://127.0.0.1:$HA_ROLES_EXPORTER_PORT/metrics" 30 || die "the roles exporter did not start; see $LOGS/roles-exporter.log"
}

# Prometheus and node-exporter as `npm start` runs them (scripts/monitoring.sh), with this
# topology's configuration and state folder.
monitoring() {
  STACK_STATE_DIR="$SERVICES" PROMETHEUS_CONFIG="$PROMETHEUS_CONFIG" bash "$ROOT/scripts/monitoring.sh" "$@"
}

start_monitoring() {
  start_roles_exporter
  write_prometheus_config
  monitoring start
  # ha:status lists the request path and the stores only: its `kind` is one of the documented
  # set (docs/ha.md), which has no entry for the monitoring processes.
  rm -f "$STATE/components/prometheus.json" "$STATE/components/node-exporter.json" "$STATE/components/roles-exporter.json"
}

start() {
  ensure_packages
  ensure_commands nginx=nginx
  refuse_if_port_taken
  [ "${HA_BUILD:-yes}" = no ] || build_services
  bash "$ROOT/scripts/ha/stores.sh" start
  load_secrets # the stores' first start generated them
  start_services
  register_services
  hosts_mode && HA_MONITORING=no # Prometheus would have to reach into every namespace
  [ "${HA_MONITORING:-yes}" = no ] || start_monitoring
  if hosts_mode; then
    say "replicated topology up on $HA_HOSTS hosts: API http://$EDGE_ADDR:$HA_PROXY_PORT (nginx on $EDGE_NS; a writer and a reader on each host); \`npm run ha:status\` shows every component"
    return 0
  fi
  say "replicated topology up: API http://127.0.0.1:$HA_PROXY_PORT ($HA_WRITERS writers, $HA_READERS readers)$([ "${HA_MONITORING:-yes}" = no ] || echo ", Prometheus http://127.0.0.1:${PROMETHEUS_PORT:-$DEFAULT_PROMETHEUS_PORT}"); \`npm run ha:status\` shows every component"
}

stop() {
  if [ "${HA_MONITORING:-yes}" != no ] && ! hosts_mode; then
    monitoring stop
    stop_store "roles exporter" "$ROLES_PID"
  fi
  if hosts_mode; then
    local h
    netns_exists "$EDGE_NS" && edge_launcher down
    for h in $(host_list); do netns_exists "$(ns_of_host "$h")" && host_launcher "$h" down; done
  fi
  launcher down
  rm -f "$STATE"/components/{writer,reader,nginx,roles-exporter,prometheus,node-exporter}*.json
  bash "$ROOT/scripts/ha/stores.sh" stop
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) exec node "$ROOT/scripts/ha/status.mjs" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
