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
# shellcheck source=scripts/ha/lib/hosts.sh
. "$ROOT/scripts/ha/lib/hosts.sh"
LOGS="$STATE/logs"
SECRETS="$STATE/secrets"

# Every password of the topology: variable, then the file under $SECRETS that holds it. One
# secret per user and purpose, so each can be rotated (or leak) alone (docs/ha.md).
HA_SECRETS=(
  HA_PG_SUPERUSER_PASSWORD=pg-superuser HA_PG_REPLICATION_PASSWORD=pg-replication
  HA_DB_OWNER_PASSWORD=pg-ledger-owner HA_DB_WRITER_PASSWORD=pg-ledger-writer
  HA_DB_READER_PASSWORD=pg-ledger-reader HA_PATRONI_REST_PASSWORD=patroni-rest
  HA_ETCD_ROOT_PASSWORD=etcd-root HA_ETCD_PASSWORD=etcd-patroni
  HA_REDIS_ADMIN_PASSWORD=redis-admin HA_REDIS_MONITOR_PASSWORD=redis-monitor
  HA_REDIS_WRITER_PASSWORD=redis-writer HA_REDIS_READER_PASSWORD=redis-reader
  HA_REDIS_SENTINEL_PASSWORD=redis-sentinel HA_REDIS_REPLICA_PASSWORD=redis-replica
  HA_SENTINEL_CLIENT_PASSWORD=sentinel-client
)

# ensure_secrets: writes every secret that has no file yet (128 random bits as hex: no
# character that a URL, a YAML file or a Redis configuration would need to quote).
ensure_secrets() {
  local entry file
  install -d -m 700 "$SECRETS"
  for entry in "${HA_SECRETS[@]}"; do
    file="$SECRETS/${entry#*=}"
    [ -s "$file" ] && continue
    (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$file.tmp") && mv -f "$file.tmp" "$file"
  done
  load_secrets
}

# load_secrets: the variables from the files that exist (empty before the first start), and
# what is built from them: the services' URLs. Not exported: a process gets only the
# passwords it is handed (the launcher passes its whole environment to the services).
load_secrets() {
  local entry file value
  for entry in "${HA_SECRETS[@]}"; do
    file="$SECRETS/${entry#*=}"
    value=""
    [ -r "$file" ] && value="$(cat "$file")"
    printf -v "${entry%%=*}" '%s' "$value"
  done
  # Each host's HAProxy, on that host's loopback (on hosts too: every host has its own).
  local write="127.0.0.1:$HA_PG_WRITE_PORT/$HA_DB_NAME"
  # The writers serve as ledger_writer and migrate as ledger_owner; the readers read as
  # ledger_reader, on the write port too (decision 27); the read port's URL is for others.
  HA_DATABASE_URL="postgres://ledger_writer:$HA_DB_WRITER_PASSWORD@$write"
  HA_MIGRATION_DATABASE_URL="postgres://ledger_owner:$HA_DB_OWNER_PASSWORD@$write"
  HA_READER_DATABASE_URL="postgres://ledger_reader:$HA_DB_READER_PASSWORD@$write"
  HA_DATABASE_READ_URL="postgres://ledger_reader:$HA_DB_READER_PASSWORD@127.0.0.1:$HA_PG_READ_PORT/$HA_DB_NAME"
}
load_secrets

# redis_admin port args...: redis-cli as the admin user, on a Redis node or a Sentinel (both
# have it; on hosts, from the node's own host); the password through the environment.
redis_admin() {
  local port="$1"
  shift
  REDISCLI_AUTH="$HA_REDIS_ADMIN_PASSWORD" on_host "$(host_of_port "$port")" \
    redis-cli --no-auth-warning --user admin -h "$(addr_of_port "$port")" -p "$port" "$@"
}

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
  ensure_commands patroni=patroni patronictl=patroni etcd=etcd-server etcdctl=etcd-client haproxy=haproxy \
    redis-server=redis-server redis-cli=redis-tools psql=postgresql-client pg_isready=postgresql-client \
    ss=iproute2 setpriv=util-linux stdbuf=coreutils curl=curl node=nodejs "$HA_PG_BIN_DIR/postgres=postgresql-15"
}

# ensure_patroni: HA_PATRONI (defaults.env) in its venv, installed once: Debian's python and
# Debian's packages of Patroni's dependencies (the `patroni` package pulls them in), only
# Patroni itself from PyPI, without its dependencies. /usr/bin/python3, not whatever python3
# comes first on PATH: Patroni runs as the postgres user, who must be able to run it.
ensure_patroni() {
  [ "$HA_PATRONI" = system ] && return 0
  [ -x "$HA_PATRONI_BIN" ] && [ "$(cat "$HA_PATRONI_VENV/.pinned" 2>/dev/null)" = "patroni==$HA_PATRONI" ] && return 0
  local log
  log="$(dirname "$HA_PATRONI_VENV")/patroni-venv.log"
  mkdir -p "$(dirname "$HA_PATRONI_VENV")"
  say "installing Patroni $HA_PATRONI into $HA_PATRONI_VENV"
  rm -rf "$HA_PATRONI_VENV"
  { /usr/bin/python3 -m venv --system-site-packages "$HA_PATRONI_VENV" &&
    "$HA_PATRONI_VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "patroni==$HA_PATRONI"; } >"$log" 2>&1 ||
    die "could not install Patroni $HA_PATRONI (see $log); HA_PATRONI=system runs Debian's"
  chmod -R a+rX "$HA_PATRONI_VENV"
  echo "patroni==$HA_PATRONI" >"$HA_PATRONI_VENV/.pinned"
}

# start_bg name pidfile command...: a store's server in the background, logging to $LOGS/name.log.
start_bg() {
  local name="$1" pidfile="$2"
  shift 2
  start_daemon "$pidfile" "$LOGS/$name.log" "$@"
}
