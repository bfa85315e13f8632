# shellcheck shell=bash
# Redis master + 2 replicas and three Sentinels (sourced by scripts/ha/stores.sh).

redis_port_of() { echo "$HA_REDIS_PORTS" | cut -d' ' -f"$1"; }
# The node numbers (1 2 3), from the list of ports.
redis_nodes() { local n=0 port; for port in $HA_REDIS_PORTS; do n=$((n + 1)); printf '%s ' "$n"; done; }
sentinel_port_of() { echo "$HA_SENTINEL_PORTS" | cut -d' ' -f"$1"; }

# The ACL users of every Redis node (the default user is off: nothing runs without a user).
# The services' users have the rules every stack gives them (scripts/lib/roles.sh: the
# commands they send, on keys under their prefix; the reader's never the change stream).
# Sentinel's and the replication user's commands are the ones Redis's documentation lists.
redis_users() {
  echo "user default off"
  echo "user admin on >$HA_REDIS_ADMIN_PASSWORD ~* &* +@all"
  echo "user monitor on >$HA_REDIS_MONITOR_PASSWORD resetchannels -@all +ping +info +role"
  echo "user writer on >$HA_REDIS_WRITER_PASSWORD $(redis_acl_rules writer "$HA_REDIS_KEY_PREFIX")"
  echo "user reader on >$HA_REDIS_READER_PASSWORD $(redis_acl_rules reader "$HA_REDIS_KEY_PREFIX")"
  echo "user sentinel on >$HA_REDIS_SENTINEL_PASSWORD allchannels -@all +multi +slaveof +ping +exec +subscribe +config|rewrite +role +publish +info +client|setname +client|kill +script|kill"
  echo "user replica on >$HA_REDIS_REPLICA_PASSWORD resetchannels -@all +psync +replconf +ping"
  echo "masteruser replica"
  echo "masterauth $HA_REDIS_REPLICA_PASSWORD"
}

# The ACL users of every Sentinel: admin (the other Sentinels log in as it, and the scripts),
# monitor (INFO for ha:status) and ledger, the services' user, which may only ask where the
# master is.
sentinel_users() {
  echo "user default off"
  echo "user admin on >$HA_REDIS_ADMIN_PASSWORD ~* &* +@all"
  echo "user monitor on >$HA_REDIS_MONITOR_PASSWORD resetchannels -@all +ping +info"
  echo "user ledger on >$HA_SENTINEL_CLIENT_PASSWORD resetchannels -@all +auth +hello +ping +client|setname +sentinel|get-master-addr-by-name"
  echo "sentinel sentinel-user admin"
  echo "sentinel sentinel-pass $HA_REDIS_ADMIN_PASSWORD"
}

# Each configuration file is written once: after that Sentinel owns it (a failover rewrites
# `replicaof` in the Redis files and the master in the Sentinel files), so a restart comes
# back in the roles of the last failover, not the first ones. The files hold the users'
# passwords (a rewrite keeps only their SHA-256): mode 0600.
# No persistence, like the single stack: Redis holds only views rebuilt from PostgreSQL. The
# replica resynchronises from the master (diskless, no delay) whenever it (re)connects.
write_redis_config() {
  local n="$1" dir="$STATE/redis$1"
  [ -f "$dir/redis.conf" ] && return 0
  install -d -m 700 "$dir"
  (umask 077 && {
    echo "# Written once by scripts/ha/stores.sh; Sentinel rewrites it on failovers."
    echo "bind $(addr_of_node "$n")"
    echo "port $(redis_port_of "$n")"
    echo "dir $dir"
    echo 'save ""'
    echo "appendonly no"
    echo "maxmemory $REDIS_MAXMEMORY"
    echo "maxmemory-policy $REDIS_MAXMEMORY_POLICY"
    echo "repl-diskless-sync yes"
    echo "repl-diskless-sync-delay 0"
    echo "replica-read-only yes"
    # Whatever its role now: a replica promoted later refuses the same way (defaults.env).
    echo "min-replicas-to-write $HA_REDIS_MIN_REPLICAS"
    echo "min-replicas-max-lag $HA_REDIS_MIN_REPLICAS_MAX_LAG"
    redis_users
    [ "$n" = 1 ] || echo "replicaof $(addr_of_node 1) $(redis_port_of 1)"
  } >"$dir/redis.conf")
}

# down-after-milliseconds (HA_SENTINEL_DOWN_AFTER_MS, 5 s): a master that has not answered
# that long is subjectively down; with 2 of the 3 Sentinels agreeing it is objectively down and
# one of them fails it over. It is longer than a cut-off master takes to refuse writes
# (min-replicas-max-lag 2 s + up to 2 s of Redis's once-a-second bookkeeping), so that no
# publish is acknowledged by the old master once the new one serves (docs/ha.md).
# failover-timeout 5000 bounds a failover that stalls before another Sentinel retries it.
write_sentinel_config() {
  local n="$1" dir="$STATE/sentinel$1"
  [ -f "$dir/sentinel.conf" ] && return 0
  install -d -m 700 "$dir"
  (umask 077 && cat >"$dir/sentinel.conf" <<EOF
# Written once by scripts/ha/stores.sh; Sentinel rewrites it with what it learns.
bind $(addr_of_node "$n")
port $(sentinel_port_of "$n")
dir $dir
sentinel monitor $HA_REDIS_MASTER_NAME $(addr_of_node 1) $(redis_port_of 1) $HA_SENTINEL_QUORUM
sentinel down-after-milliseconds $HA_REDIS_MASTER_NAME $HA_SENTINEL_DOWN_AFTER_MS
sentinel failover-timeout $HA_REDIS_MASTER_NAME 5000
sentinel parallel-syncs $HA_REDIS_MASTER_NAME 1
sentinel auth-user $HA_REDIS_MASTER_NAME sentinel
sentinel auth-pass $HA_REDIS_MASTER_NAME $HA_REDIS_SENTINEL_PASSWORD
$(sentinel_users)
EOF
  )
}

start_redis_nodes() {
  local n pidfile port follow master
  for n in $(redis_nodes); do
    pidfile="$STATE/redis$n.pid"; port="$(redis_port_of "$n")"
    if pid_alive "$pidfile"; then say "redis$n already running (pid $(cat "$pidfile"))"; continue; fi
    write_redis_config "$n"
    # A node that comes back after a failover, while the Sentinels already follow another
    # master, starts as that master's replica: never a second master, even for seconds.
    follow=()
    master="$(redis_master_addr 2>/dev/null || true)"
    [ -n "$master" ] && [ "${master#* }" != "$port" ] && follow=(--replicaof "${master% *}" "${master#* }")
    host_argv "$(host_of_node "$n")"
    start_bg "redis$n" "$pidfile" "${HOST_ARGV[@]}" redis-server "$STATE/redis$n/redis.conf" "${follow[@]}"
    wait_until 15 redis_admin "$port" ping || die "redis$n did not start; see $LOGS/redis$n.log"
    say "redis$n up on $port"
  done
}

start_sentinels() {
  local n pidfile port
  for n in 1 2 3; do
    pidfile="$STATE/sentinel$n.pid"; port="$(sentinel_port_of "$n")"
    if pid_alive "$pidfile"; then say "sentinel$n already running (pid $(cat "$pidfile"))"; continue; fi
    write_sentinel_config "$n"
    host_argv "$(host_of_node "$n")"
    start_bg "sentinel$n" "$pidfile" "${HOST_ARGV[@]}" redis-server "$STATE/sentinel$n/sentinel.conf" --sentinel
    wait_until 15 redis_admin "$port" ping || die "sentinel$n did not start; see $LOGS/sentinel$n.log"
  done
  # Ready once every Sentinel knows the other two and the replicas (they find each other
  # through the master's hello channel, within a few seconds).
  for n in 1 2 3; do
    wait_until 30 sentinel_sees_all "$(sentinel_port_of "$n")" \
      || die "sentinel$n does not see 2 other Sentinels and every replica; see $LOGS/sentinel$n.log"
  done
  say "sentinels up on $HA_SENTINEL_PORTS, master $(redis_master_addr | tr ' ' ':')"
}

# sentinel_sees_all port: the Sentinel knows 2 other Sentinels and every replica of the master.
sentinel_sees_all() {
  local info nodes
  read -ra nodes <<<"$(redis_nodes)"
  info="$(redis_admin "$1" SENTINEL master "$HA_REDIS_MASTER_NAME" | paste - -)"
  grep -qP '^num-other-sentinels\t2$' <<<"$info" && grep -qP "^num-slaves\t$((${#nodes[@]} - 1))\$" <<<"$info"
}

# redis_master_addr: "host port" of the master, as the first Sentinel that answers says.
redis_master_addr() {
  local port addr
  for port in $HA_SENTINEL_PORTS; do
    addr="$(redis_admin "$port" SENTINEL get-master-addr-by-name "$HA_REDIS_MASTER_NAME" 2>/dev/null | paste -sd' ')"
    [[ "$addr" == *" "* ]] && { echo "$addr"; return 0; }
  done
  return 1
}

stop_redis_side() {
  local n
  for n in 3 2 1; do stop_store "sentinel$n" "$STATE/sentinel$n.pid"; done
  for n in $(redis_nodes | tr ' ' '\n' | sort -rn); do stop_store "redis$n" "$STATE/redis$n.pid"; done
}
