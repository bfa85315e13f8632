#!/usr/bin/env bash
# npm run test:partitions: the replicated topology on 3 simulated hosts under partitions, a
# split and a frozen primary, its history checked (tests/partitions/partitions.test.mjs), then
# the timeline of that history drawn to .stack/partitions/timeline.png (tests/partitions/plot.py,
# matplotlib in a pinned venv of its own, as the soak's chart; PARTITIONS_CHART=0 skips it).
# Also the checker's own tests (planted faults). Needs root (network namespaces): otherwise the
# test says so and is skipped. Bounded: about 5 minutes, killed after 8.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG=partitions
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
cd "$ROOT"

node --test tests/partitions/checker.test.mjs
[ "${HA_BUILD:-yes}" = no ] || build_services
status=0
timeout --kill-after=30 480 node --test --test-concurrency=1 tests/partitions/partitions.test.mjs || status=$?

OUT="$ROOT/.stack/partitions"
if [ "${PARTITIONS_CHART:-1}" = 1 ] && [ -f "$OUT/report.json" ]; then
  venv="$OUT/venv"
  if (pinned_venv "$venv" "matplotlib==3.10.9") >"$OUT/venv.log" 2>&1; then
    "$venv/bin/python" tests/partitions/plot.py "$OUT/history.jsonl" "$OUT/report.json" "$OUT/timeline.png" || status=1
  else
    say "warning: could not install matplotlib (see $OUT/venv.log); no timeline"
  fi
fi
exit "$status"
