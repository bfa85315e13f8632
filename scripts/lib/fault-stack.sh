# shellcheck shell=bash
# Shared by scripts/test-faults.sh, scripts/soak.sh and scripts/soak-faults.sh (sourced, not
# run; after common.sh).

# Stops whatever a fault-test stack left running (found by the pid files under .stack/faults).
# Called before a run, so an aborted earlier run cannot get in the way, and again on exit.
cleanup_fault_stack() {
  node --input-type=module -e "
    const h = await import('$ROOT/tests/faults/harness.mjs');
    await h.cleanupStale({ checkPorts: false });
  " || true
}

# fault_stack_prelude: what both need before the harness runs: the release binaries, the tools
# the harness runs (installed when missing; PostgreSQL's server tools come from
# /usr/lib/postgresql/<version>/bin), Node.js >= 20, and nothing left by an aborted earlier run
# (stopped again at the end, whatever happens).
fault_stack_prelude() {
  require_built
  ensure_commands node=nodejs psql=postgresql-client pg_isready=postgresql-client redis-server=redis-server \
    redis-cli=redis-tools setsid=util-linux curl=curl runuser=util-linux nginx=nginx
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${PG_BIN_DIR:-}" ] || apt_install postgresql
  local node_major
  node_major="$(node -p 'process.versions.node.split(".")[0]')"
  [ "$node_major" -ge 20 ] || die "Node.js >= 20 is needed (found $(node --version))"
  trap cleanup_fault_stack EXIT
  cleanup_fault_stack
}
