# shellcheck shell=bash
# etcd, the Patroni/PostgreSQL nodes and HAProxy (sourced by scripts/ha/stores.sh).

# --- etcd ----------------------------------------------------------------------------------

# --- etcd members: one on the loopback (member 0), or one per host -------------------------

etcd_members() { host_list; }
etcd_name() { if [ "$1" = 0 ]; then echo ha-etcd; else echo "etcd$1"; fi; }
etcd_suffix() { if [ "$1" = 0 ]; then echo ""; else echo "$1"; fi; }
# Every member's client URL, comma-separated (Patroni's and etcdctl's endpoints).
etcd_endpoints() {
  local h out=""
  for h in $(etcd_members); do out+="http://$(addr_of_host "$h"):$HA_ETCD_PORT,"; done
  echo "${out%,}"
}
etcd_hosts() { etcd_endpoints | sed 's#http://##g'; }

# etcdctl as `user` (the password from the environment, never on the command line), from the
# first member's host.
etcdctl_as() {
  local user="$1" first
  shift
  first="$(etcd_members | head -n 1)"
  ETCDCTL_API=3 ETCDCTL_USER="$user" on_host "$first" etcdctl --endpoints="$(etcd_endpoints)" \
    --command-timeout=3s "$@"
}

# Client authentication, once per data directory: a root user (only for this set-up and an
# operator), and Patroni's user, whose role may read and write only keys under
# $HA_ETCD_PREFIX. Once it is on, nothing without a password reads or writes a key (the
# /health endpoint stays open). Passwords go to etcdctl on stdin.
enable_etcd_auth() {
  local ctl=(on_host "$(etcd_members | head -n 1)" etcdctl --endpoints="$(etcd_endpoints)" --command-timeout=3s)
  # A read without a user fails with "user name is empty" once authentication is on: nothing
  # to do. Any other failure (a member just started, no leader yet) is retried: taking it for
  # "on" left a fresh cluster without authentication.
  local answer try
  for try in $(seq 1 30); do
    answer="$(ETCDCTL_API=3 "${ctl[@]}" get --keys-only --limit=1 / 2>&1)" && break
    grep -q "user name is empty" <<<"$answer" && return 0
    [ "$try" = 30 ] && die "etcd does not answer a read: $answer"
    sleep 0.5
  done
  export ETCDCTL_API=3
  printf '%s\n' "$HA_ETCD_ROOT_PASSWORD" | "${ctl[@]}" user add root --interactive=false >/dev/null
  "${ctl[@]}" user grant-role root root >/dev/null
  "${ctl[@]}" role add patroni >/dev/null
  "${ctl[@]}" role grant-permission patroni --prefix=true readwrite "$HA_ETCD_PREFIX" >/dev/null
  printf '%s\n' "$HA_ETCD_PASSWORD" | "${ctl[@]}" user add "$HA_ETCD_USER" --interactive=false >/dev/null
  "${ctl[@]}" user grant-role "$HA_ETCD_USER" patroni >/dev/null
  "${ctl[@]}" auth enable >/dev/null
  say "etcd: client authentication on (user $HA_ETCD_USER may use $HA_ETCD_PREFIX only)"
}

# One member on one host: three would share the host's fate and disk, so they add nothing but
# fsyncs. On simulated hosts, one member per host (a majority survives the loss of any one),
# each listening at its host's address only: the Patroni nodes are its only clients.
start_etcd() {
  local h cluster="" started=0
  for h in $(etcd_members); do
    cluster+="$(etcd_name "$h")=http://$(addr_of_host "$h"):$HA_ETCD_PEER_PORT,"
  done
  cluster="${cluster%,}"
  for h in $(etcd_members); do
    local pidfile addr url
    pidfile="$STATE/etcd$(etcd_suffix "$h").pid" addr="$(addr_of_host "$h")" url="http://$(addr_of_host "$h"):$HA_ETCD_PORT"
    if pid_alive "$pidfile"; then say "$(etcd_name "$h") already running (pid $(cat "$pidfile"))"; continue; fi
    install -d -m 700 "$STATE/etcd$(etcd_suffix "$h")"
    # A member whose data directory exists rejoins the cluster it knows; `new` is only read
    # on the first start.
    host_argv "$h"
    start_bg "etcd$(etcd_suffix "$h")" "$pidfile" "${HOST_ARGV[@]}" etcd --name "$(etcd_name "$h")" \
      --data-dir "$STATE/etcd$(etcd_suffix "$h")/data" \
      --listen-client-urls "$url" --advertise-client-urls "$url" \
      --listen-peer-urls "http://$addr:$HA_ETCD_PEER_PORT" \
      --initial-advertise-peer-urls "http://$addr:$HA_ETCD_PEER_PORT" \
      --initial-cluster "$cluster" \
      --initial-cluster-state new --initial-cluster-token "tm-ha-$HA_PORT_BASE"
    started=1
  done
  for h in $(etcd_members); do
    wait_until 30 on_host "$h" curl -fsS -o /dev/null --max-time 1 "http://$(addr_of_host "$h"):$HA_ETCD_PORT/health" ||
      die "$(etcd_name "$h") did not start; see $LOGS/etcd$(etcd_suffix "$h").log"
  done
  [ "$started" = 0 ] && return 0
  enable_etcd_auth
  say "etcd up: $(etcd_endpoints)"
}

stop_etcd() {
  local h
  for h in $(etcd_members); do stop_store "$(etcd_name "$h")" "$STATE/etcd$(etcd_suffix "$h").pid"; done
}

# --- Patroni and PostgreSQL -------------------------------------------------------------------

# The Patroni configuration of node $1 (1 or 2), with passwords in it: readable by the
# postgres user alone. restapi.authentication guards the REST API's write endpoints (POST,
# PUT, PATCH, DELETE: switchover, restart, reinitialize, config); patronictl -c this file
# sends it. The GET endpoints (/primary, /replica, /sync, /health, /patroni, /metrics) stay
# open by Patroni's design: HAProxy's checks and the tests read them. bootstrap.dcs is written to etcd once, by the
# node that initialises the cluster; later changes go through `patronictl edit-config`.
# Timing (docs/ha.md): ttl 12 s is how long a dead primary keeps the leader lock; loop_wait
# 2 s is how often each node looks; loop_wait + 2 x retry_timeout must not exceed ttl.
# primary_start_timeout 0: a primary whose PostgreSQL crashed fails over to the synchronous
# standby at once instead of recovering in place. synchronous_mode (not strict): a commit is
# acknowledged only once the standby has it, and Patroni promotes only a node that was
# synchronous, so a failover never loses an acknowledged write; with the standby gone the
# primary goes on alone instead of refusing writes (docs/decisions.md 20).
write_patroni_config() {
  local n="$1" dir="$STATE/pg$1" pg_port rest_port addr net
  pg_port="$(echo "$HA_PG_PORTS" | cut -d' ' -f"$n")"
  rest_port="$(echo "$HA_PATRONI_PORTS" | cut -d' ' -f"$n")"
  addr="$(addr_of_node "$n")"
  # Who may connect over TCP: the loopback, or on hosts every host (HAProxy, the replicas).
  net=127.0.0.1/32
  hosts_mode && net="$HA_NET_PREFIX.0.0/24"
  cat >"$dir/patroni.yml" <<EOF
# Written by scripts/ha/stores.sh on every start; edit scripts/ha/lib/postgres.sh instead.
scope: $HA_PATRONI_SCOPE
namespace: /tm-ha/
name: pg$n
log: {level: INFO}
restapi:
  listen: "$addr:$rest_port"
  connect_address: "$addr:$rest_port"
  authentication: {username: "$HA_PATRONI_REST_USER", password: "$HA_PATRONI_REST_PASSWORD"}
etcd3: {hosts: "$(etcd_hosts)", username: "$HA_ETCD_USER", password: "$HA_ETCD_PASSWORD"}
bootstrap:
  dcs:
    ttl: $HA_PATRONI_TTL
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    primary_start_timeout: 0
    synchronous_mode: true
    synchronous_mode_strict: false
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        synchronous_commit: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 256MB
  initdb: [{encoding: UTF8}, {locale: C.UTF-8}, data-checksums]
postgresql:
  listen: "$addr:$pg_port"
  connect_address: "$addr:$pg_port"
  data_dir: "$dir/data"
  bin_dir: "$HA_PG_BIN_DIR"
  pgpass: "$dir/pgpass"
  authentication:
    superuser: {username: postgres, password: "$HA_PG_SUPERUSER_PASSWORD"}
    replication: {username: replicator, password: "$HA_PG_REPLICATION_PASSWORD"}
  parameters:
    unix_socket_directories: "$dir"
  # The socket lies in the node's 0700 folder: only root and the postgres user reach it. Over
  # TCP: replication as replicator, anything as postgres (Patroni, pg_rewind, stores.sh), and
  # the services' roles in their database only.
  pg_hba:
    - local all all trust
    - host replication replicator $net scram-sha-256
    - host all postgres $net scram-sha-256
    - host $HA_DB_NAME ledger_owner,ledger_writer,ledger_reader $net scram-sha-256
watchdog: {mode: "off"}
EOF
}

# The node's PostgreSQL and Patroni run as the postgres user (PostgreSQL refuses root).
start_patroni() {
  local n="$1" dir="$STATE/pg$1" pidfile="$STATE/patroni-pg$1.pid"
  install -d -m 700 -o postgres -g postgres "$dir"
  # Written even for a running node (a rotated password reaches it with `kill -HUP`).
  (umask 077 && write_patroni_config "$n")
  chown postgres:postgres "$dir/patroni.yml"
  chmod 600 "$dir/patroni.yml"
  if pid_alive "$pidfile"; then say "patroni pg$n already running (pid $(cat "$pidfile"))"; return 0; fi
  host_argv "$(host_of_node "$n")"
  start_bg "patroni-pg$n" "$pidfile" "${HOST_ARGV[@]}" \
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$HA_PATRONI_BIN" "$dir/patroni.yml"
  say "patroni pg$n started (pid $(cat "$pidfile"))"
}

# rest_port_of n / pg_port_of n: node n's ports; pg_nodes: 1 2 (3).
rest_port_of() { echo "$HA_PATRONI_PORTS" | cut -d' ' -f"$1"; }
pg_port_of() { echo "$HA_PG_PORTS" | cut -d' ' -f"$1"; }
pg_nodes() { seq 1 "$HA_PG_NODES"; }

# patroni_says n endpoint: node n's Patroni answers 200 on it (asked from the node's host).
patroni_says() {
  on_host "$(host_of_node "$1")" curl -fsS -o /dev/null --max-time 1 \
    "http://$(addr_of_node "$1"):$(rest_port_of "$1")/$2" 2>/dev/null
}

# primary_node: prints the number of the node whose Patroni says it is the primary.
primary_node() {
  local n
  for n in $(pg_nodes); do patroni_says "$n" primary && { echo "$n"; return 0; }; done
  return 1
}

# some_synchronous_standby: prints the node that streams from the primary as its synchronous
# standby (Patroni keeps one).
some_synchronous_standby() {
  local n
  for n in $(pg_nodes); do patroni_says "$n" sync && { echo "$n"; return 0; }; done
  return 1
}

# The first start bootstraps pg1 and clones the others from it (pg_basebackup, by Patroni);
# later starts bring back whichever nodes are down, which rejoin as they find the cluster.
start_postgres_nodes() {
  local n
  if [ ! -d "$STATE/pg1/data" ] && [ ! -d "$STATE/pg2/data" ]; then
    start_patroni 1
    wait_until 90 primary_node || die "pg1 did not bootstrap; see $LOGS/patroni-pg1.log"
    for n in $(pg_nodes | tail -n +2); do start_patroni "$n"; done
  else
    for n in $(pg_nodes); do start_patroni "$n"; done
    wait_until 90 primary_node || die "no PostgreSQL primary; see $LOGS/patroni-pg*.log"
  fi
  local primary standby
  primary="$(primary_node)"
  wait_until 120 some_synchronous_standby \
    || die "no node became the synchronous standby; see $LOGS/patroni-pg*.log"
  standby="$(some_synchronous_standby)"
  say "PostgreSQL primary pg$primary on $(addr_of_node "$primary"):$(pg_port_of "$primary"), synchronous standby pg$standby"
}

# Stops the replicas first, so stopping the primary does not hand one the leader lock.
stop_postgres_nodes() {
  local primary n
  primary="$(primary_node 2>/dev/null || true)"
  for n in $(pg_nodes | grep -vx "${primary:-0}") $primary; do
    stop_store "patroni pg$n" "$STATE/patroni-pg$n.pid"
    # Patroni stops its PostgreSQL on SIGTERM; one left behind (Patroni was killed) is
    # stopped here, so nothing outlives `stop`.
    if [ -f "$STATE/pg$n/data/postmaster.pid" ] && kill -0 "$(head -n 1 "$STATE/pg$n/data/postmaster.pid")" 2>/dev/null; then
      setpriv --reuid=postgres --regid=postgres --init-groups -- \
        "$HA_PG_BIN_DIR/pg_ctl" stop -D "$STATE/pg$n/data" -m fast -w >/dev/null || true
      say "PostgreSQL pg$n stopped"
    fi
  done
}

# psql_write [-d db] sql...: runs SQL as the superuser through the HAProxy write port.
psql_write() {
  local db=postgres
  [ "${1:-}" = -d ] && { db="$2"; shift 2; }
  PGPASSWORD="$HA_PG_SUPERUSER_PASSWORD" PGCONNECT_TIMEOUT=3 on_host "$(host_list | head -n 1)" \
    psql -h 127.0.0.1 -p "$HA_PG_WRITE_PORT" -U postgres -d "$db" -v ON_ERROR_STOP=1 -qtA "$@"
}

# The database and the services' roles (scripts/sql/roles.sql: ledger_owner, ledger_writer,
# ledger_reader, each with its generated password), on every start: roles.sql is idempotent,
# and sets the passwords the secret files hold now (so a rotated one is applied here). The
# schema is not made here: the writer runs the migrations (shared/migrations, embedded as
# MIGRATOR) as ledger_owner when it starts, and they grant the other two what they may do.
ensure_database() {
  wait_until 30 psql_write -c 'SELECT 1' || die "PostgreSQL does not answer on the write port $HA_PG_WRITE_PORT"
  psql_write -f - <<EOF
SELECT format('CREATE DATABASE %I', '$HA_DB_NAME')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$HA_DB_NAME') \gexec
EOF
  # The passwords on psql's input, not its command line.
  {
    printf "\\set owner_password '%s'\n\\set writer_password '%s'\n\\set reader_password '%s'\n" \
      "$HA_DB_OWNER_PASSWORD" "$HA_DB_WRITER_PASSWORD" "$HA_DB_READER_PASSWORD"
    cat "$ROOT/scripts/sql/roles.sql"
  } | psql_write -d "$HA_DB_NAME" -f - >/dev/null
  say "database $HA_DB_NAME and roles ledger_owner, ledger_writer, ledger_reader ready"
}

# --- HAProxy ---------------------------------------------------------------------------------

# TCP proxying; each server is checked through its Patroni REST API once a second, so the
# write port follows a failover within about 2 s of Patroni's. on-marked-down shutdown-sessions
# cuts connections to a node that stopped being primary, so no client keeps writing to it.
# One per host (host 0: the loopback's), listening on that host's loopback.
haproxy_suffix() { if [ "$1" = 0 ]; then echo ""; else echo "-h$1"; fi; }
haproxy_config_of() { echo "$STATE/haproxy/haproxy$(haproxy_suffix "$1").cfg"; }
haproxy_pid_of() { echo "$STATE/haproxy$(haproxy_suffix "$1").pid"; }

write_haproxy_config() {
  local h="$1" n servers=""
  for n in $(pg_nodes); do
    servers+="  server pg$n $(addr_of_node "$n"):$(pg_port_of "$n") check addr $(addr_of_node "$n") port $(rest_port_of "$n")"$'\n'
  done
  mkdir -p "$STATE/haproxy"
  cat >"$(haproxy_config_of "$h")" <<EOF
# Written by scripts/ha/stores.sh on every start; edit scripts/ha/lib/postgres.sh instead.
global
  maxconn 2000
defaults
  mode tcp
  timeout connect 2s
  timeout client 30m
  timeout server 30m
  timeout check 1s
  default-server inter 1s fall $HA_HAPROXY_FALL rise 1 on-marked-down shutdown-sessions
listen pg_write
  bind 127.0.0.1:$HA_PG_WRITE_PORT
  option httpchk
  http-check send meth GET uri /primary
  http-check expect rstring "state"
  http-check expect status 200
$servers
listen pg_read
  bind 127.0.0.1:$HA_PG_READ_PORT
  balance leastconn
  option httpchk
  http-check send meth GET uri /replica
  http-check expect rstring "state"
  http-check expect status 200
$servers
frontend stats
  mode http
  bind 127.0.0.1:$HA_HAPROXY_STATS_PORT
  timeout client 10s
  http-request use-service prometheus-exporter if { path /metrics }
  stats enable
  stats uri /stats
  stats refresh 5s
EOF
}

# haproxy_writes_to_primary_only h: host h's write port has the primary up and the others down.
haproxy_writes_to_primary_only() {
  local h="$1" primary stats n
  primary="$(primary_node)" || return 1
  stats="$(on_host "$h" curl -fsS --max-time 1 "http://127.0.0.1:$HA_HAPROXY_STATS_PORT/stats;csv" | cut -d, -f1,2,18)"
  grep -qx "pg_write,pg$primary,UP" <<<"$stats" || return 1
  for n in $(pg_nodes | grep -vx "$primary"); do grep -qx "pg_write,pg$n,DOWN" <<<"$stats" || return 1; done
}

# HAProxy's stats page answers, or its process is gone.
haproxy_answers_or_died() {
  ! pid_alive "$(haproxy_pid_of "$1")" || on_host "$1" curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$HA_HAPROXY_STATS_PORT/stats"
}

start_haproxy() {
  local h
  for h in $(host_list); do start_haproxy_on "$h"; done
}

start_haproxy_on() {
  local h="$1" pidfile config name
  pidfile="$(haproxy_pid_of "$h")" config="$(haproxy_config_of "$h")" name="haproxy$(haproxy_suffix "$h")"
  write_haproxy_config "$h"
  haproxy -c -q -f "$config" || die "the HAProxy configuration is invalid"
  if pid_alive "$pidfile"; then say "$name already running (pid $(cat "$pidfile"))"; return 0; fi
  # A base moved into Linux's ephemeral range (32768-60999; the defaults lie below it): for a
  # moment, one of its ports can be the source port of some unrelated client connection, and
  # HAProxy exits with "cannot bind socket". Such a port is free again soon: try a few times.
  local try
  for try in 1 2 3 4 5; do
    host_argv "$h"
    start_bg "$name" "$pidfile" "${HOST_ARGV[@]}" haproxy -db -f "$config"
    wait_until 15 haproxy_answers_or_died "$h"
    pid_alive "$pidfile" && break
    grep -q "Address already in use" <(tail -n 5 "$LOGS/$name.log") || die "$name did not start; see $LOGS/$name.log"
    say "$name could not bind a port still in use as a connection's source port (try $try of 5); retrying"
    sleep 1
  done
  wait_until 15 on_host "$h" curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$HA_HAPROXY_STATS_PORT/stats" || die "$name did not start; see $LOGS/$name.log"
  # HAProxy counts a server up until its checks say otherwise, so right after a start the write
  # port may still lead to a replica: wait until it leads to the primary alone.
  wait_until 15 haproxy_writes_to_primary_only "$h" || die "$name does not route writes to the primary alone"
  say "$name up: writes on $HA_PG_WRITE_PORT, reads on $HA_PG_READ_PORT, stats on $HA_HAPROXY_STATS_PORT"
}

stop_haproxy() {
  local h
  for h in $(host_list); do stop_store "haproxy$(haproxy_suffix "$h")" "$(haproxy_pid_of "$h")"; done
}
