#!/usr/bin/env bash
# Every test (npm test): checks of the container and CI files, the Rust workspace's tests
# against real PostgreSQL and Redis, then the API tests through nginx against the native stack
# and the monitoring tests against its Prometheus. Starts what it needs and stops what it
# started; exits non-zero if anything failed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/transactions}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"

step() { printf '\n=== %s ===\n' "$*"; }

step "dependencies (PostgreSQL, Redis, nginx)"
bash scripts/stack.sh deps

step "container and CI files (dclint, hadolint, yamllint, nginx -t, compose layout)"
bash scripts/check-containers.sh

step "cargo fmt --check and clippy"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

step "cargo test (a fresh database per test)"
cargo test --locked --workspace

started_stack=no
if ! bash scripts/stack.sh status 2>/dev/null; then started_stack=yes; fi
cleanup() { if [ "$started_stack" = yes ]; then bash scripts/stack.sh stop; fi; }
trap cleanup EXIT

step "native stack"
bash scripts/stack.sh start

step "API tests through nginx (${API_URL:-http://localhost:8080})"
npm run --silent test:api

step "schemathesis: the live stack against its OpenAPI document (reader/openapi.json)"
bash scripts/test-schemathesis.sh

step "monitoring: promtool checks, alert rule tests, every dashboard query against Prometheus"
bash scripts/test-monitoring.sh

step "fault tests: Redis and PostgreSQL outages, SIGKILL and SIGTERM under load, hostile input (own servers on other ports)"
bash scripts/test-faults.sh

echo
echo "all tests passed"
