#!/usr/bin/env bash
# The fault tests (docs/reliability.md): each test file starts a private stack on its own ports
# (PostgreSQL 15432, Redis 16379, nginx 18080, writer 18081/19181, reader 18082/19182: the
# DEFAULT_FAULTS_* of scripts/lib/defaults.sh; state and logs in .stack/faults/), writer, reader
# and nginx run by scripts/launcher.sh as under npm start, breaks it for real while clients send
# through nginx, and checks that nothing acknowledged was lost or applied twice. launcher.test.mjs
# checks the launcher itself (supervision, npm start after a crash, npm stop). The shared
# PostgreSQL and Redis and the other stacks (npm start's, npm test's) are never touched.
#
#   bash scripts/test-faults.sh                 every fault test (a few minutes at most)
#   bash scripts/test-faults.sh tests/faults/redis.test.mjs      one file
#
# Builds nothing: target/release/writer and target/release/reader must exist (npm start or
# `cargo build --release -p writer -p reader`). FAULTS_PORT_OFFSET moves every port (for a
# machine where one of them is taken).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TAG=faults
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/fault-stack.sh
. "$ROOT/scripts/lib/fault-stack.sh"
fault_stack_prelude

started=$SECONDS
if [ $# -gt 0 ]; then
  files=("$@")
else
  files=(tests/faults/)
fi
say "running ${files[*]} (logs in .stack/faults/logs)"
status=0
node --test --test-concurrency=1 "${files[@]}" || status=$?
say "finished in $((SECONDS - started)) s"
if [ "$status" -ne 0 ]; then
  say "FAILED; service logs: .stack/faults/logs/{writer,reader,nginx.error,supervisor,launcher,postgres,redis}.log"
fi
exit "$status"
