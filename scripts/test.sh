#!/usr/bin/env bash
# Every test (npm test): checks of the container, CI and Kubernetes files, the Rust workspace's
# tests against real PostgreSQL and Redis, the API tests through nginx against a native stack,
# the monitoring tests against its Prometheus, the fault tests, the replicated topology, and
# last the compose stack run for real (tests/README.md lists what runs where). Starts what it
# needs and stops what it started; exits non-zero if anything failed.
#
# Every stack it starts is its own, on ports of its own (scripts/lib/defaults.sh: TEST_,
# FAULTS_, HA_*_TEST_, COMPOSE_TEST_), so a stack of yours (npm start) may run meanwhile and is
# left as it was: running, its data, its .stack files. The native stack here has its state in
# .stack/test, a fresh database (DEFAULT_TEST_DATABASE_URL) and key prefix, and its Prometheus.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TAG=test
# shellcheck source=scripts/lib/common.sh
. scripts/lib/common.sh
export DATABASE_URL="${DATABASE_URL:-$DEFAULT_DATABASE_URL}"
export REDIS_URL="${REDIS_URL:-$DEFAULT_REDIS_URL}"

step() { printf '\n=== %s ===\n' "$*"; }

step "dependencies (PostgreSQL, Redis, nginx)"
bash scripts/stack.sh deps
# A Redis that deps started has its default user closed: every step below reaches it with the
# password it keeps (scripts/lib/roles.sh).
# shellcheck source=scripts/lib/roles.sh
. scripts/lib/roles.sh
REDIS_URL="$(stack_redis_url "$ROOT/.stack" "$REDIS_URL")"

step "container and CI files (dclint, hadolint, yamllint, nginx -t, compose layout)"
bash scripts/check-containers.sh

step "Kubernetes manifests: every overlay rendered (pinned kubectl), kubernetes-validate --strict, invariants"
bash scripts/test-kubernetes.sh

step "cargo fmt --check and clippy"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

step "advisory scan of the Rust dependencies (cargo audit; where GitHub is unreachable it says so and the GitHub workflow runs it)"
bash scripts/audit.sh

step "cargo test (a fresh database per test)"
# tests/cqrs/tests/encrypted_links.rs starts a PostgreSQL and a Redis of its own with TLS, on
# certificates it makes: PostgreSQL's server binaries, openssl, runuser (when run as root).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${PG_BIN_DIR:-}" ] || apt_install postgresql
ensure_commands openssl=openssl runuser=util-linux
cargo test --locked --workspace

# npm test's own native stack: its ports (use_port_set TEST_), state folder, database and key
# prefix, fresh every run, so that what `npm start`, the benchmark or an earlier run left
# behind (easily millions of rows, which every unfiltered GET /transactions then streams)
# neither slows nor skews the tests.
use_port_set TEST_
export STACK_STATE_DIR="$ROOT/.stack/test"
export DATABASE_URL="${TEST_DATABASE_URL:-$DEFAULT_TEST_DATABASE_URL}"
export REDIS_KEY_PREFIX="${TEST_REDIS_KEY_PREFIX:-$DEFAULT_TEST_REDIS_KEY_PREFIX}"
export API_URL="http://127.0.0.1:$PROXY_PORT" PROMETHEUS_URL="http://127.0.0.1:$PROMETHEUS_PORT"
started_stack=no
cleanup() { if [ "$started_stack" = yes ]; then bash scripts/stack.sh stop; fi; }
trap cleanup EXIT

step "native stack of its own ($API_URL, Prometheus $PROMETHEUS_URL, state in .stack/test)"
# What an aborted earlier run left running is stopped first, then its data goes.
bash scripts/stack.sh stop >/dev/null
psql "${DATABASE_URL%/*}/postgres" -v ON_ERROR_STOP=1 -qc \
  "DROP DATABASE IF EXISTS \"${DATABASE_URL##*/}\" WITH (FORCE)"
redis-cli -u "$REDIS_URL" --scan --pattern "${REDIS_KEY_PREFIX}*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null
rm -rf "$STACK_STATE_DIR/prometheus"
started_stack=yes
bash scripts/stack.sh start

step "API tests through nginx ($API_URL)"
npm run --silent test:api

step "change feeds through nginx: every commit once and in order across reconnects, one account's feed, resume after kill -9 of the reader, the per-client cap (tests/feed/)"
npm run --silent test:feed

step "schemathesis: the live stack against its OpenAPI document (reader/openapi.json)"
bash scripts/test-schemathesis.sh

step "monitoring: promtool checks, alert rule tests, every dashboard query against Prometheus"
bash scripts/test-monitoring.sh

step "edge controls through nginx: rate and connection limits (429 with RateLimit fields), trusted proxies, Host names, HTTPS (own stack on 23xxx, scripts/test-edge.sh)"
bash scripts/test-edge.sh

step "fault tests: Redis and PostgreSQL outages, SIGKILL and SIGTERM under load, hostile input, the launcher's supervision (own servers on other ports)"
bash scripts/test-faults.sh

step "resource soak, CI size: 200,000 writes through nginx with Redis capped at 16 MB, every read exact; fails on memory, series or p99 growth (tests/soak/)"
SOAK_WRITES=200000 SOAK_REDIS_MAXMEMORY=16mb SOAK_STREAM_MAX_LEN=5000 SOAK_CHART=0 bash scripts/soak.sh

step "security controls through nginx: API keys (401/403, scopes, per-key idempotency, reload, no secret in logs) on the same stack restarted with API_KEYS_FILE (tests/security/)"
bash scripts/test-security.sh

# The native stack is done with: stop it before the replicated topology and compose, which
# need the CPU.
cleanup
started_stack=no

step "replicated topology: the stores (Patroni, HAProxy, Sentinel) and 2 writers + 2 readers behind nginx under kill -9 of PostgreSQL/Redis masters, a switchover, a writer and a reader (own ports 27xxx/28xxx; about 3.5 minutes)"
npm run --silent test:ha

step "partitions: the replicated topology on 3 simulated hosts (network namespaces tmpt-*) under host cuts, a 2-1 split and a frozen primary; the clients' history checked (lost, doubled, linearizable balance reads); timeline in .stack/partitions/ (about 4 minutes, at most 8; skipped without root)"
HA_BUILD=no npm run --silent test:partitions

step "docker compose, run for real (own project and ports): health, API tests, Prometheus, network isolation, redeploy, scale-out, crash, down/up (scripts/test-compose.sh)"
bash scripts/test-compose.sh

echo
echo "all tests passed"
