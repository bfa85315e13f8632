#!/usr/bin/env bash
# The supervisor of one service instance, started in the background by scripts/launcher.sh
# (one per instance, in its own session, stdio on files). It runs the command, and whenever it
# exits, logs how and starts it again, as compose's `restart: unless-stopped` does:
#
#   supervise.sh STATE NAME STDOUT_FILE STDERR_FILE -- COMMAND...
#
# Files in STATE (the launcher's state folder), the interface to the launcher and the tests:
#   NAME.supervisor.pid   this supervisor (written first thing)
#   NAME.pid              the running instance (rewritten at every start)
#   NAME.exit             how the last instance ended: "pid code signal epoch_ms"
#                         (code or signal is "-"), written once it has been reaped
#   NAME.hold             while it exists, an instance that ends is not restarted (a test or
#                         an operator stops it on purpose); deleting it starts one at once
#   logs/supervisor.log   every start, exit and restart of every instance
#
# SIGTERM (or INT/HUP) ends supervision first: no more restarts; the running instance gets
# SIGTERM, is waited for, and the supervisor exits. A crash restarts after
# SUPERVISE_RESTART_MS (500); an instance that dies again within SUPERVISE_STABLE_MS (10 s) of
# its start waits twice as long each time, up to SUPERVISE_MAX_RESTART_MS (8 s), so a service
# that cannot start does not spin.
set -u

state="$1" name="$2" out="$3" err="$4"
shift 4
[ "${1:-}" = -- ] && shift
log="$state/logs/supervisor.log"
restart_ms="${SUPERVISE_RESTART_MS:-500}"
max_restart_ms="${SUPERVISE_MAX_RESTART_MS:-8000}"
stable_ms="${SUPERVISE_STABLE_MS:-10000}"

now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }
note() { printf '%s [supervisor] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$*" >>"$log"; }
write_file() { echo "$2" >"$1.tmp" && mv -f "$1.tmp" "$1"; }

echo $$ >"$state/$name.supervisor.pid"
stopping=0
child=""
end_supervision() {
  stopping=1
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; fi
}
trap end_supervision TERM INT HUP

# wait_child: waits until the instance is reaped (a trapped signal interrupts `wait`, so wait
# again while it runs); sets rc to its status.
wait_child() {
  while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break
  done
  # bash keeps the status of a reaped child: the exact status even if the last `wait` above
  # was the interrupted one.
  wait "$child" 2>/dev/null
  local again=$?
  [ "$again" = 127 ] || rc=$again
}

delay_ms="$restart_ms"
starts=0
while [ "$stopping" = 0 ]; do
  while [ -e "$state/$name.hold" ] && [ "$stopping" = 0 ]; do sleep 0.05; done
  [ "$stopping" = 0 ] || break
  # A session of its own: the instance has no terminal, and whatever it leaves behind when it
  # dies (nginx workers whose master was killed) is ended with its process group below.
  setsid "$@" </dev/null >>"$out" 2>>"$err" &
  child=$!
  started_ms="$(now_ms)"
  write_file "$state/$name.pid" "$child"
  starts=$((starts + 1))
  if [ "$starts" = 1 ]; then note "$name started (pid $child)"; else note "$name restarted (pid $child, start $starts)"; fi
  wait_child
  ended_ms="$(now_ms)"
  kill -KILL -- "-$child" 2>/dev/null
  if [ "$rc" -gt 128 ]; then
    code=- signal="SIG$(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128)))"
    how="killed by $signal"
  else
    code="$rc" signal=-
    how="exited with code $rc"
  fi
  write_file "$state/$name.exit" "$child $code $signal $ended_ms"
  ran_ms=$((ended_ms - started_ms))
  pid="$child" child=""
  if [ "$stopping" = 1 ]; then
    note "$name (pid $pid) $how; supervision ended"
    break
  fi
  if [ -e "$state/$name.hold" ]; then
    note "$name (pid $pid) $how after ${ran_ms} ms; held (not restarted until $name.hold is removed)"
    delay_ms="$restart_ms"
    continue
  fi
  if [ "$ran_ms" -ge "$stable_ms" ]; then delay_ms="$restart_ms"; fi
  note "$name (pid $pid) $how after ${ran_ms} ms; restarting in ${delay_ms} ms"
  sleep "$((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000)))" &
  sleeper=$!
  wait "$sleeper" 2>/dev/null || kill "$sleeper" 2>/dev/null # ended early by end_supervision
  delay_ms=$((delay_ms * 2 > max_restart_ms ? max_restart_ms : delay_ms * 2))
done
rm -f "$state/$name.pid" "$state/$name.supervisor.pid"
