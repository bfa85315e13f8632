#!/usr/bin/env bash
# npm run soak: the resource soak (tests/soak/resources.mjs), outside `npm test`: sustained mixed
# load through nginx on the fault-test stack for SOAK_SECONDS (default 600), sampling Redis's
# memory and keys, the services' RSS, PostgreSQL's size, the metric series and p99. Writes
# .stack/soak/report.json and a chart of it, .stack/soak/report.png; exits non-zero when a bound
# is passed (see the test file for which).
#
#   npm run soak
#   SOAK_SECONDS=120 npm run soak
#   SOAK_WRITES=200000 SOAK_REDIS_MAXMEMORY=16mb npm run soak    # the CI-sized run of npm test
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

REPORT="$ROOT/.stack/soak/report.json"
mkdir -p "$(dirname "$REPORT")"
status=0
SOAK_REPORT="$REPORT" node tests/soak/resources.mjs || status=$?

# The chart needs matplotlib, in a venv of its own (pinned); SOAK_CHART=0 skips it (CI).
if [ "${SOAK_CHART:-1}" = 1 ] && [ -f "$REPORT" ]; then
  venv="$ROOT/.stack/soak/venv"
  if (pinned_venv "$venv" "matplotlib==3.10.9") >"$ROOT/.stack/soak/venv.log" 2>&1; then
    "$venv/bin/python" tests/soak/plot.py "$REPORT" "${REPORT%.json}.png" || status=1
  else
    say "warning: could not install matplotlib (see .stack/soak/venv.log); no chart"
  fi
fi
exit "$status"
