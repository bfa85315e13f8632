#!/usr/bin/env bash
# Every test (npm test): checks of the container, CI and Kubernetes files, the Rust workspace's
# tests against real PostgreSQL and Redis, the API tests through nginx against the native stack,
# the monitoring tests against its Prometheus, the fault tests, and last the compose stack run
# for real (tests/README.md lists what runs where). Starts what it needs and stops what it
# started; exits non-zero if anything failed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/defaults.sh
. scripts/lib/defaults.sh
export DATABASE_URL="${DATABASE_URL:-$DEFAULT_DATABASE_URL}"
export REDIS_URL="${REDIS_URL:-$DEFAULT_REDIS_URL}"

step() { printf '\n=== %s ===\n' "$*"; }

step "dependencies (PostgreSQL, Redis, nginx)"
bash scripts/stack.sh deps

step "container and CI files (dclint, hadolint, yamllint, nginx -t, compose layout)"
bash scripts/check-containers.sh

step "Kubernetes manifests: every overlay rendered (pinned kubectl), kubernetes-validate --strict, invariants"
bash scripts/test-kubernetes.sh

step "cargo fmt --check and clippy"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

step "cargo test (a fresh database per test)"
cargo test --locked --workspace

started_stack=no
if ! bash scripts/stack.sh status 2>/dev/null; then
  started_stack=yes
  # A stack of its own gets a fresh database and key prefix, so that what `npm start`, the
  # benchmark or an earlier run left behind (easily millions of rows, which every unfiltered
  # GET /transactions then streams) neither slows nor skews the tests. A stack that is already
  # running is used as it is.
  export DATABASE_URL="${TEST_DATABASE_URL:-$DEFAULT_TEST_DATABASE_URL}"
  export REDIS_KEY_PREFIX="${TEST_REDIS_KEY_PREFIX:-tm-test:}"
  psql "${DATABASE_URL%/*}/postgres" -v ON_ERROR_STOP=1 -qc \
    "DROP DATABASE IF EXISTS \"${DATABASE_URL##*/}\" WITH (FORCE)"
  if command -v redis-cli >/dev/null; then
    redis-cli -u "$REDIS_URL" --scan --pattern "${REDIS_KEY_PREFIX}*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null
  fi
fi
cleanup() { if [ "$started_stack" = yes ]; then bash scripts/stack.sh stop; fi; }
trap cleanup EXIT

step "native stack"
bash scripts/stack.sh start

step "API tests through nginx (${API_URL:-http://localhost:$DEFAULT_PROXY_PORT})"
npm run --silent test:api

step "schemathesis: the live stack against its OpenAPI document (reader/openapi.json)"
bash scripts/test-schemathesis.sh

step "monitoring: promtool checks, alert rule tests, every dashboard query against Prometheus"
bash scripts/test-monitoring.sh

step "fault tests: Redis and PostgreSQL outages, SIGKILL and SIGTERM under load, hostile input, the launcher's supervision (own servers on other ports)"
bash scripts/test-faults.sh

# The native stack is done with: stop it (if this run started it) before the replicated
# topology and compose, which need the CPU, and compose its ports (8080, 9090).
cleanup
started_stack=no

step "replicated topology: the stores (Patroni, HAProxy, Sentinel) and 2 writers + 2 readers behind nginx under kill -9 of PostgreSQL/Redis masters, a switchover, a writer and a reader (own ports 27xxx/28xxx; about 3.5 minutes)"
npm run --silent test:ha

if bash scripts/stack.sh status 2>/dev/null; then
  echo "error: a native stack that npm test did not start answers on :$DEFAULT_PROXY_PORT; the compose checks need its ports. Stop it (npm stop) and run npm test again." >&2
  exit 1
fi
step "docker compose, run for real: health, API tests, Prometheus, network isolation, redeploy, scale-out, crash, down/up (scripts/test-compose.sh)"
bash scripts/test-compose.sh

echo
echo "all tests passed"
