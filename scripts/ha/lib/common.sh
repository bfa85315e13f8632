# shellcheck shell=bash
# Shared by the scripts under scripts/ha/ (sourced, not run; needs $ROOT): the toolkit
# (scripts/lib/common.sh), the topology's settings (scripts/ha/defaults.env, exported), its
# state folder ($STATE, $LOGS) and what only the stores need.

# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
TAG="${HA_TAG:-ha-stores}"
set -a
# shellcheck source=scripts/ha/defaults.env
. "$ROOT/scripts/ha/defaults.env"
HA_STATE_DIR="${HA_STATE_DIR:-$ROOT/.stack/ha}"
set +a
STATE="$HA_STATE_DIR"
LOGS="$STATE/logs"

# stop_store name pidfile: SIGTERM to what the pid file names, SIGKILL after 15 s (stop_pid).
# (The stores run several executables through setpriv and python, so unlike the launcher's
# `running` this does not check the executable; the pid files live in the stores' own folder.)
stop_store() {
  local pid exe
  if pid_alive "$2" && pid="$(pid_of "$2")" && exe="$(readlink "/proc/$pid/exe" 2>/dev/null)"; then
    stop_pid "$1" "$pid" "${exe% (deleted)}"
  fi
  rm -f "$2"
}

# ensure_packages: installs, with apt-get, the package of every command the stores need that is
# missing. Debian may start a system-wide etcd, HAProxy or Redis on install (on their default
# ports); the stores run their own instances on their own ports, and leave those alone.
ensure_packages() {
  ensure_commands patroni=patroni patronictl=patroni etcd=etcd-server haproxy=haproxy \
    redis-server=redis-server redis-cli=redis-tools psql=postgresql-client pg_isready=postgresql-client \
    ss=iproute2 setpriv=util-linux stdbuf=coreutils curl=curl node=nodejs "$HA_PG_BIN_DIR/postgres=postgresql-15"
}

# start_bg name pidfile command...: a store's server in the background, logging to $LOGS/name.log.
start_bg() {
  local name="$1" pidfile="$2"
  shift 2
  start_daemon "$pidfile" "$LOGS/$name.log" "$@"
}
