#!/usr/bin/env bash
# Keeps the native stack's log files bounded (started and stopped by scripts/launcher.sh, under
# its supervisor like the services): every LOG_CHECK_SECONDS (10), each DIR/*.log larger than
# LOG_MAX_BYTES (50 MiB) is copied to NAME.log.1 (replacing the previous one) and truncated in
# place. The services, nginx and the supervisors write with O_APPEND, so they go on at the new
# end without reopening anything. A file therefore holds at most LOG_MAX_BYTES plus what is
# written in one interval, and its .1 one more LOG_MAX_BYTES; the lines written between the copy
# and the truncation (microseconds) are lost.
#
#   cap-logs.sh DIR
set -u
dir="$1"
max="${LOG_MAX_BYTES:-52428800}"
every="${LOG_CHECK_SECONDS:-10}"
trap 'exit 0' TERM INT HUP
while :; do
  for file in "$dir"/*.log; do
    [ -f "$file" ] || continue
    size="$(stat -c %s "$file" 2>/dev/null || echo 0)"
    if [ "$size" -gt "$max" ]; then
      cp -f "$file" "$file.1" && truncate -s 0 "$file"
    fi
  done
  sleep "$every" &
  wait $!
done
