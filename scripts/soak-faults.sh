#!/usr/bin/env bash
# npm run soak:faults: the fault soak (docs/reliability.md), outside `npm test`: the fault-test stack under mixed
# load for SOAK_SECONDS (default 600) with a fault every SOAK_FAULT_EVERY seconds (default 20):
# writer and reader SIGKILL and SIGTERM, Redis restarts and write pauses, PostgreSQL restarts
# and crashes. Ends with the fault tests' invariants; exits non-zero if any fails.
#
#   bash scripts/soak-faults.sh
#   SOAK_SECONDS=120 SOAK_FAULT_EVERY=10 bash scripts/soak-faults.sh
#
# Same ports, state and requirements as scripts/test-faults.sh (release binaries must exist).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TAG=soak
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/fault-stack.sh
. "$ROOT/scripts/lib/fault-stack.sh"
fault_stack_prelude

say "${SOAK_SECONDS:-600} s, a fault every ${SOAK_FAULT_EVERY:-20} s; logs in .stack/faults/logs"
node tests/faults/soak.mjs
