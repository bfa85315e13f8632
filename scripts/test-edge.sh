#!/usr/bin/env bash
# The edge controls through nginx (npm run test:edge; also part of npm test): rate and connection
# limits with their 429s, trusted proxies, accepted Host names and HTTPS (tests/edge/). One
# native stack of its own, started by scripts/launcher.sh as under npm start, on the ports of
# scripts/lib/defaults.sh's DEFAULT_EDGE_TEST_* (state in .stack/edge-test, its own database and
# key prefix on the PostgreSQL and Redis of DATABASE_URL and REDIS_URL). The tests reconfigure
# nginx by running `launcher.sh up` again with the settings of each case: that regenerates
# nginx's edge/ and reloads nginx, and leaves the services as they are, started without any
# edge setting. Needs the release binaries (builds nothing); stops the stack when it ends.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TAG=test-edge
# shellcheck source=scripts/lib/common.sh
. scripts/lib/common.sh

require_built
ensure_commands node=nodejs curl=curl openssl=openssl nginx=nginx psql=postgresql-client redis-cli=redis-tools setsid=util-linux

use_port_set EDGE_TEST_
export STACK_STATE_DIR="$ROOT/.stack/edge-test"
export DATABASE_URL="${EDGE_TEST_DATABASE_URL:-$DEFAULT_EDGE_TEST_DATABASE_URL}"
export REDIS_URL="${REDIS_URL:-$DEFAULT_REDIS_URL}"
export REDIS_KEY_PREFIX="${EDGE_TEST_REDIS_KEY_PREFIX:-$DEFAULT_EDGE_TEST_REDIS_KEY_PREFIX}"
export API_URL="http://127.0.0.1:$PROXY_PORT"
# The caller's own edge settings would leak into every case.
unset RATE_LIMIT_RPS RATE_LIMIT_BURST RATE_LIMIT_LIST_PER_MINUTE RATE_LIMIT_CONN API_KEYS_FILE \
  TRUSTED_PROXIES ALLOWED_HOSTS TLS_CERT TLS_KEY

stop() { bash scripts/launcher.sh down >/dev/null || true; }
trap stop EXIT
stop
admin_url="${DATABASE_URL%/*}/postgres"
database="${DATABASE_URL##*/}"
psql "$admin_url" -v ON_ERROR_STOP=1 -qc "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)"
psql "$admin_url" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$database\""
redis-cli -u "$REDIS_URL" --scan --pattern "${REDIS_KEY_PREFIX}*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null
bash scripts/launcher.sh up

status=0
node --test --test-concurrency=1 tests/edge/ || status=$?
[ "$status" = 0 ] || say "FAILED; nginx's logs: .stack/edge-test/logs/nginx.{error,access}.log, its edge/: .stack/edge-test/nginx/edge/"
exit "$status"
