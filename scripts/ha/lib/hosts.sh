# shellcheck shell=bash
# Simulated hosts (HA_HOSTS > 0; sourced by scripts/ha/lib/common.sh): where each node of the
# topology runs and at which address, and the network namespaces that play the hosts.
#
#   ${HA_NETNS_PREFIX}net    a bridge, br0, and one end of every host's link; nothing else
#   ${HA_NETNS_PREFIX}h1..hN the hosts: eth0 at $HA_NET_PREFIX.0.n/24 on the bridge, and lo
#   ${HA_NETNS_PREFIX}edge   nginx: eth0 at $HA_NET_PREFIX.0.100 on the bridge, and up0 at
#                            $HA_NET_PREFIX.1.2/30, linked to ${HA_NETNS_PREFIX}up at
#                            $HA_NET_PREFIX.1.1 in the root namespace (the clients' way in)
#
# The bridge lives in a namespace of its own, so no forwarding rule of the root namespace (Docker
# sets FORWARD to DROP) sees its traffic, and no host can reach anything outside: the hosts have
# no route beyond their /24, the edge none beyond its two links. With HA_HOSTS=0 every function
# below answers for the loopback of the current namespace (host 0), and the scripts run as they
# always did.

hosts_mode() { [ "${HA_HOSTS:-0}" -gt 0 ]; }
# host_of_node n: the host node n of a store runs on (round robin), 0 on the loopback.
host_of_node() { if hosts_mode; then echo $((($1 - 1) % HA_HOSTS + 1)); else echo 0; fi; }
# addr_of_host h: the address the host's servers listen on.
addr_of_host() { if [ "$1" = 0 ]; then echo 127.0.0.1; else echo "$HA_NET_PREFIX.0.$1"; fi; }
addr_of_node() { addr_of_host "$(host_of_node "$1")"; }
ns_of_host() { echo "${HA_NETNS_PREFIX}h$1"; }
EDGE_NS="${HA_NETNS_PREFIX}edge"
NET_NS="${HA_NETNS_PREFIX}net"
UPLINK="${HA_NETNS_PREFIX}up"
EDGE_ADDR="$HA_NET_PREFIX.1.2"
# The host numbers: 1..HA_HOSTS, or 0.
host_list() { if hosts_mode; then seq 1 "$HA_HOSTS"; else echo 0; fi; }

# on_host h command...: runs it in host h's namespace (execs: the pid stays the command's).
on_host() {
  local h="$1"
  shift
  if [ "$h" = 0 ]; then "$@"; else ip netns exec "$(ns_of_host "$h")" "$@"; fi
}

# host_argv h: sets HOST_ARGV to the words that run a command in host h's namespace (none for
# host 0), for what takes a command line rather than a function (start_daemon's setsid).
host_argv() {
  HOST_ARGV=()
  [ "$1" = 0 ] || HOST_ARGV=(ip netns exec "$(ns_of_host "$1")")
}

# index_in list value: the 1-based position of value in the space-separated list.
index_in() {
  local i=0 item
  for item in $1; do i=$((i + 1)); [ "$item" = "$2" ] && { echo "$i"; return 0; }; done
  return 1
}

# host_of_port port: the host of the store node listening on that port (the ports are distinct
# per node, so a port names its node); etcd's is member 1's.
host_of_port() {
  local n list
  for list in "$HA_PG_PORTS" "$HA_PATRONI_PORTS" "$HA_REDIS_PORTS" "$HA_SENTINEL_PORTS"; do
    n="$(index_in "$list" "$1")" && { host_of_node "$n"; return 0; }
  done
  host_of_node 1
}
addr_of_port() { addr_of_host "$(host_of_port "$1")"; }

# --- the namespaces ------------------------------------------------------------------------

netns_exists() { ip netns list | grep -qE "^$1( |$)"; }

# hosts_up: creates whatever namespace or link is missing (idempotent), then applies HA_NETEM.
hosts_up() {
  hosts_mode || return 0
  [ "$(id -u)" = 0 ] || die "HA_HOSTS needs root (network namespaces); run as root, or without HA_HOSTS for the loopback topology"
  ensure_commands ip=iproute2 iptables=iptables tc=iproute2
  local h ns
  netns_exists "$NET_NS" || {
    ip netns add "$NET_NS"
    ip -n "$NET_NS" link add br0 type bridge
    ip -n "$NET_NS" link set br0 up
    ip -n "$NET_NS" link set lo up
  }
  for h in $(host_list) edge; do
    if [ "$h" = edge ]; then ns="$EDGE_NS"; else ns="$(ns_of_host "$h")"; fi
    netns_exists "$ns" && continue
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # Created in the bridge's namespace, one end moved to the host as eth0.
    ip -n "$NET_NS" link add "p-$h" type veth peer name eth0 netns "$ns"
    ip -n "$NET_NS" link set "p-$h" master br0 up
    if [ "$h" = edge ]; then
      ip -n "$ns" addr add "$HA_NET_PREFIX.0.100/24" dev eth0
    else
      ip -n "$ns" addr add "$(addr_of_host "$h")/24" dev eth0
    fi
    ip -n "$ns" link set eth0 up
  done
  if ! ip link show "$UPLINK" >/dev/null 2>&1; then
    ip link add "$UPLINK" type veth peer name up0 netns "$EDGE_NS"
    ip addr add "$HA_NET_PREFIX.1.1/30" dev "$UPLINK"
    ip link set "$UPLINK" up
    ip -n "$EDGE_NS" addr add "$EDGE_ADDR/30" dev up0
    ip -n "$EDGE_NS" link set up0 up
  fi
  if [ -n "$HA_NETEM" ]; then
    # shellcheck disable=SC2086 # the netem arguments are words
    for h in $(host_list); do ip netns exec "$(ns_of_host "$h")" tc qdisc replace dev eth0 root netem $HA_NETEM; done
  fi
  say "hosts up: $(for h in $(host_list); do printf '%s=%s ' "$(ns_of_host "$h")" "$(addr_of_host "$h")"; done)$EDGE_NS=$EDGE_ADDR (from here)"
}

# hosts_down: deletes every namespace and link hosts_up made (their processes must be gone:
# a namespace lives on while a process is in it).
hosts_down() {
  hosts_mode || return 0
  local h
  ip link del "$UPLINK" 2>/dev/null || true
  for h in $(host_list); do ip netns del "$(ns_of_host "$h")" 2>/dev/null || true; done
  ip netns del "$EDGE_NS" 2>/dev/null || true
  ip netns del "$NET_NS" 2>/dev/null || true
  say "hosts removed ($(host_list | sed "s/^/${HA_NETNS_PREFIX}h/" | paste -sd' '), $EDGE_NS, $NET_NS, $UPLINK)"
}
