#!/usr/bin/env bash
# The replicated stores of the HA topology (docs/ha.md): etcd, PostgreSQL as two Patroni nodes
# behind HAProxy, Redis master + replica with three Sentinels. All run in the background on
# 127.0.0.1, on the ports of scripts/ha/defaults.env, with state and logs under .stack/ha/.
#
#   scripts/ha/stores.sh start    install what is missing, start what is not running, wait
#                                 until a primary, a replica and the Sentinels are ready
#   scripts/ha/stores.sh stop     stop everything `start` started
#   scripts/ha/stores.sh status   one JSON object: every component, its pid, port and role now
#   scripts/ha/stores.sh env      the resolved settings (ports, names, URLs) as KEY=VALUE
#   scripts/ha/stores.sh clean    stop, then delete the state (data directories included)
#
# `start` is idempotent: run again, it brings back only what died (a killed node rejoins as a
# replica), so a supervisor may call it. HA_STATE_DIR moves the state; HA_PORT_BASE the ports.
# Other parts of the topology (writers, readers, nginx) appear in `status` by dropping a
# file in $HA_STATE_DIR/components/ (see scripts/ha/status.mjs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/ha/lib/common.sh
. "$ROOT/scripts/ha/lib/common.sh"
# libpq settings of the caller's shell (PGPASSWORD above all) would reach Patroni, PostgreSQL
# and pg_rewind and override the credentials Patroni gives them: none pass through.
for name in $(compgen -e | grep '^PG' || true); do unset "$name"; done
# shellcheck source=scripts/ha/lib/postgres.sh
. "$ROOT/scripts/ha/lib/postgres.sh"
# shellcheck source=scripts/lib/roles.sh
. "$ROOT/scripts/lib/roles.sh"
# shellcheck source=scripts/ha/lib/redis.sh
. "$ROOT/scripts/ha/lib/redis.sh"

start() {
  ensure_packages
  ensure_patroni
  hosts_up
  # Readable by the postgres user, who runs PostgreSQL from a directory inside.
  mkdir -p "$LOGS" "$STATE/components"
  chmod 755 "$STATE"
  ensure_secrets
  start_etcd
  start_postgres_nodes
  start_haproxy
  ensure_database
  start_redis_nodes
  start_sentinels
  say "stores up; \`bash scripts/ha/stores.sh status\` shows them, logs in $LOGS"
}

stop() {
  [ -d "$STATE" ] || return 0
  stop_haproxy
  stop_postgres_nodes
  stop_redis_side
  stop_etcd
  hosts_down
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) shift; exec node "$ROOT/scripts/ha/status.mjs" "$@" ;;
  env) for name in $(compgen -v HA_); do printf '%s=%s\n' "$name" "${!name}"; done ;;
  clean) stop; rm -rf "$STATE"; say "removed $STATE" ;;
  *) echo "usage: $0 start|stop|status|env|clean" >&2; exit 2 ;;
esac
