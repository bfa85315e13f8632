# Shared by scripts/test-faults.sh and scripts/soak.sh (sourced, not run); needs $ROOT.

# Stops whatever a fault-test stack left running (found by the pid files under .stack/faults).
# Called before a run, so an aborted earlier run cannot get in the way, and again on exit.
cleanup_fault_stack() {
  node --input-type=module -e "
    const h = await import('$ROOT/tests/faults/harness.mjs');
    await h.cleanupStale({ checkPorts: false });
  " || true
}
