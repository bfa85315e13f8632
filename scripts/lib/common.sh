# What every script here needs (sourced, not run): say/die with the script's tag, the default
# ports (defaults.sh), installing missing Debian packages, pinned Python tools in a venv, and a
# check() that runs every check and remembers the failures. The caller sets TAG first.

# shellcheck source=scripts/lib/defaults.sh
. "$(dirname "${BASH_SOURCE[0]}")/defaults.sh"

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

# apt_install package...: installs Debian packages when root (or sudo) and apt-get are there;
# otherwise dies saying what to install. Debian starts some daemons on install; the scripts
# here run their own instances and leave those alone (monitoring.sh disables its two).
apt_install() {
  [ $# -gt 0 ] || return 0
  if can_be_root && command -v apt-get >/dev/null 2>&1; then
    say "installing $* with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
      die "could not install $*"
    return 0
  fi
  die "missing: $*. Install them, e.g. on Debian/Ubuntu: sudo apt-get install $*"
}

# ensure_commands command=package...: installs the package of each command that is missing.
ensure_commands() {
  local pair packages=() seen=" "
  for pair in "$@"; do
    has_command "${pair%%=*}" && continue
    case "$seen" in *" ${pair#*=} "*) ;; *) packages+=("${pair#*=}"); seen+="${pair#*=} " ;; esac
  done
  apt_install "${packages[@]}"
}

# pinned_venv dir package==version...: a venv at dir holding exactly these pins; rebuilt when
# the pins change (they are recorded in dir/.pinned).
pinned_venv() {
  local venv="$1" wanted
  shift
  wanted="$*"
  [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.pinned" 2>/dev/null)" = "$wanted" ] && return 0
  command -v python3 >/dev/null 2>&1 || die "python3 is missing (Debian: apt-get install python3 python3-venv)"
  say "installing $wanted into $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    apt_install python3-venv # Debian's python3 comes without venv
    python3 -m venv "$venv" || die "python3 cannot create a venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" || die "pip install $wanted failed"
  echo "$wanted" >"$venv/.pinned"
}

# check description command...: runs one check of many, prints ok/FAILED, and adds a failure
# to CHECKS_FAILED; checks_passed says whether every check so far passed.
CHECKS_PASSED=0
CHECKS_FAILED=()
check() {
  local what="$1"
  shift
  printf '\n--- %s ---\n' "$what"
  if "$@"; then
    CHECKS_PASSED=$((CHECKS_PASSED + 1))
    printf 'ok: %s\n' "$what"
  else
    CHECKS_FAILED+=("$what")
    printf 'FAILED: %s\n' "$what"
  fi
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

# wait_http url [seconds]: poll until the URL answers 2xx, or fail after the deadline.
wait_http() {
  local deadline=$((SECONDS + ${2:-30}))
  until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}
