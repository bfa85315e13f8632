# shellcheck shell=bash
# Shared by the scripts under scripts/ha/ (sourced, not run). Needs $ROOT, $STATE and $LOGS.

# wait_http and the default ports (scripts/lib/common.sh); pid_of, stop_pid (process.sh).
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/process.sh
. "$ROOT/scripts/lib/process.sh"
say() { printf '[%s] %s\n' "${HA_TAG:-ha-stores}" "$*"; }
die() { printf '[%s] error: %s\n' "${HA_TAG:-ha-stores}" "$*" >&2; exit 1; }

# pid_alive pidfile: the process the pid file names exists and is not a zombie. (The stores
# run several executables through setpriv and python, so unlike the launcher's `running` this
# does not check the executable; the pid files live in the stores' own state folder.)
pid_alive() {
  local pid stat
  pid="$(pid_of "$1")" || return 1
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ]
}

# stop_store name pidfile: SIGTERM to what the pid file names, SIGKILL after 15 s (stop_pid).
stop_store() {
  local pid exe
  if pid_alive "$2" && pid="$(pid_of "$2")" && exe="$(readlink "/proc/$pid/exe" 2>/dev/null)"; then
    stop_pid "$1" "$pid" "${exe% (deleted)}"
  fi
  rm -f "$2"
}

# Debian package that provides each command (or file) the stores need.
declare -A PACKAGE_OF_TOOL=(
  [patroni]=patroni [patronictl]=patroni [etcd]=etcd-server [haproxy]=haproxy
  [redis-server]=redis-server [redis-cli]=redis-tools [psql]=postgresql-client
  [pg_isready]=postgresql-client [ss]=iproute2 [setpriv]=util-linux [stdbuf]=coreutils
  [curl]=curl [node]=nodejs ["$HA_PG_BIN_DIR/postgres"]=postgresql-15
)

# ensure_packages: installs, with apt-get, the package of every command that is missing.
ensure_packages() {
  local missing=() packages=() seen=" " thing package
  for thing in "${!PACKAGE_OF_TOOL[@]}"; do
    if [[ "$thing" == /* ]]; then [ -x "$thing" ] && continue
    else command -v "$thing" >/dev/null 2>&1 || [ -x "/usr/sbin/$thing" ] && continue
    fi
    missing+=("$thing")
    package="${PACKAGE_OF_TOOL[$thing]}"
    case "$seen" in *" $package "*) ;; *) packages+=("$package"); seen+="$package " ;; esac
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${packages[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # Debian may start a system-wide etcd, HAProxy or Redis on install (on their default
    # ports); the stores run their own instances on their own ports, and leave those alone.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${packages[@]}" >/dev/null
    return 0
  fi
  die "missing: ${missing[*]}. On Debian 12: sudo apt-get install ${packages[*]}"
}

# listening_pid port: the pid of the process that listens on 127.0.0.1:port now (empty if none).
listening_pid() {
  ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2
}

# wait_until seconds command...: polls the command every 0.2 s until it succeeds.
wait_until() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# start_bg name pidfile command...: starts a foreground server in the background, its output
# appended to $LOGS/name.log, and records its pid.
start_bg() {
  local name="$1" pidfile="$2"; shift 2
  nohup "$@" >>"$LOGS/$name.log" 2>&1 &
  echo $! >"$pidfile"
}
