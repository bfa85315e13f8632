# shellcheck shell=bash
# Starting a daemon, which process a pid file names, and stopping it (sourced by common.sh).
#
# A pid file alone proves nothing: the process may have died (its pid file stays), be a zombie
# (kill -0 still succeeds), or its pid may have been reused by something else. A process
# counts as running only if it exists, is not a zombie and runs the expected executable
# (/proc/<pid>/exe), optionally with an expected word in its command line.

# pid_of pidfile: the pid in the file, if it is a number.
pid_of() {
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && echo "$pid"
}

# pid_runs pid executable [cmdline-word]: that pid is alive, not a zombie, runs that
# executable (a replaced file shows as "path (deleted)": still the same program) and, if
# given, has the word in its command line.
pid_runs() {
  local pid="$1" exe="$2" word="${3:-}" stat link
  [ -n "$pid" ] || return 1
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ] || return 1
  link="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  [ "${link% (deleted)}" = "$exe" ] || return 1
  [ -z "$word" ] || tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$word"
}

# pid_alive pidfile: what the pid file names exists and is not a zombie, whatever it runs (for
# daemons started through setpriv or an interpreter, whose executable says little).
pid_alive() {
  local pid stat
  pid="$(pid_of "$1")" || return 1
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ]
}

# running pidfile executable [cmdline-word]: prints the pid of the running process.
running() {
  local pid
  pid="$(pid_of "$1")" && pid_runs "$pid" "$2" "${3:-}" && echo "$pid"
}

# pid_gone pid executable: that pid no longer runs that executable (for wait_until).
pid_gone() { ! pid_runs "$1" "$2"; }

# stop_pid name pid executable [seconds]: SIGTERM, wait for a graceful exit (default 15 s),
# then SIGKILL. Only a pid that still runs that executable is signalled.
stop_pid() {
  local name="$1" pid="$2" exe="$3" seconds="${4:-15}"
  pid_runs "$pid" "$exe" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_until "$seconds" pid_gone "$pid" "$exe"; then
    say "$name did not stop within $seconds s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  say "$name stopped"
}

# stop_pidfile name pidfile executable [cmdline-word] [seconds]: stop_pid on what the file names.
stop_pidfile() {
  local pid
  if pid="$(running "$2" "$3" "${4:-}")"; then stop_pid "$1" "$pid" "$3" "${5:-15}"; fi
  rm -f "$2"
}

# start_daemon pidfile logfile command...: the one way a long-running server is started in the
# background (unsupervised; the launcher supervises the services): in a session of its own, so
# nothing ties it to this shell or its terminal, stdin from /dev/null, stdout and stderr
# appended to the log file, its pid recorded. Liveness is the caller's (wait_http, wait_until).
start_daemon() {
  local pidfile="$1" logfile="$2"
  shift 2
  mkdir -p "$(dirname "$logfile")" "$(dirname "$pidfile")"
  setsid "$@" </dev/null >>"$logfile" 2>&1 &
  echo $! >"$pidfile"
}
