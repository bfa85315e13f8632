# Process helpers shared by scripts/stack.sh and scripts/monitoring.sh (sourced, not run).
# The caller defines `say`.

# pid_alive pidfile: the pid file exists and its process is running.
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_http url [seconds]: poll until the URL answers 2xx, or fail after the deadline.
wait_http() {
  local deadline=$((SECONDS + ${2:-30}))
  until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# stop_pid name pidfile: SIGTERM, wait up to 15 s for a graceful exit, then SIGKILL.
stop_pid() {
  local name="$1" pidfile="$2" pid
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name did not stop within 15 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  say "$name stopped"
}
