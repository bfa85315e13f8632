#!/usr/bin/env bash
# The security controls through nginx (tests/security/, docs/security.md): restarts npm test's
# native stack (the ports, state folder, database and key prefix scripts/test.sh chose; run
# alone, the TEST_ ones) with API keys on, runs the tests, and leaves the stack running for the
# caller to stop (scripts/test.sh does). The keys are made here with scripts/api-key.sh, so the
# tests know their secrets; nothing is kept after the run but the state folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TAG=security
# shellcheck source=scripts/lib/common.sh
. scripts/lib/common.sh
[ -n "${PROXY_PORT:-}" ] || use_port_set TEST_
export STACK_STATE_DIR="${STACK_STATE_DIR:-$ROOT/.stack/test}"
export DATABASE_URL="${DATABASE_URL:-${TEST_DATABASE_URL:-$DEFAULT_TEST_DATABASE_URL}}"
export REDIS_KEY_PREFIX="${REDIS_KEY_PREFIX:-${TEST_REDIS_KEY_PREFIX:-$DEFAULT_TEST_REDIS_KEY_PREFIX}}"
export API_URL="http://127.0.0.1:$PROXY_PORT"
# A Redis the stack started has its default user closed (scripts/lib/roles.sh).
# shellcheck source=scripts/lib/roles.sh
. scripts/lib/roles.sh
export REDIS_URL="$(stack_redis_url "$ROOT/.stack" "${REDIS_URL:-$DEFAULT_REDIS_URL}")"

export API_KEYS_FILE="$STACK_STATE_DIR/api-keys"
mkdir -p "$STACK_STATE_DIR"
rm -f "$API_KEYS_FILE"
new_key() { bash scripts/api-key.sh "$1" "$2" "$API_KEYS_FILE" 2>/dev/null; }
READ_SECRET="$(new_key reporting read)"
WRITE_SECRET="$(new_key ingest write)"
READ_WRITE_SECRET="$(new_key both read,write)"
export READ_SECRET WRITE_SECRET READ_WRITE_SECRET

say "restarting the stack with API_KEYS_FILE=$API_KEYS_FILE"
bash scripts/stack.sh stop >/dev/null
STACK_BUILD=no STACK_MONITORING=no bash scripts/stack.sh start
node --test --test-concurrency=1 tests/security/
