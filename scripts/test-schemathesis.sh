#!/usr/bin/env bash
# Fuzzes the live API through nginx with schemathesis, driven by the OpenAPI document the
# reader serves (reader/openapi.json): generated valid and invalid requests for every
# operation, and the checks that no response is a 5xx and every response (status, content
# type, headers, body) is what the document promises.
#
#   bash scripts/test-schemathesis.sh            needs the stack up (npm start)
#
# Environment:
#   API_URL           the proxy (default http://127.0.0.1:PROXY_PORT, scripts/lib/defaults.sh's)
#   ST_MAX_EXAMPLES   test cases per operation and phase (default 50)
#   ST_SEED           a seed to repeat an earlier run (printed at the end of each run)
#   ST_CHECKS         comma-separated checks (default: the five below)
#   ST_TIME_LIMIT     hard limit of the run in seconds (default 170)
#
# Installs schemathesis (pinned) into .stack/tools/schemathesis-venv on first use; its JUnit
# report goes to the stack's state folder (STACK_STATE_DIR, .stack). Creates transactions on
# random accounts in the stack's database. Exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SCHEMATHESIS_VERSION="4.32.5"
VENV="$ROOT/.stack/tools/schemathesis-venv"
TAG=schemathesis
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

API_URL="${API_URL:-http://127.0.0.1:${PROXY_PORT:-$DEFAULT_PROXY_PORT}}"
API_URL="${API_URL%/}"
MAX_EXAMPLES="${ST_MAX_EXAMPLES:-50}"
TIME_LIMIT="${ST_TIME_LIMIT:-170}"
CHECKS="${ST_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance}"
REPORT_DIR="${STACK_STATE_DIR:-$ROOT/.stack}/schemathesis"

# --- schemathesis, pinned, in its own venv ----------------------------------------------------
pinned_venv "$VENV" "schemathesis==$SCHEMATHESIS_VERSION"

# --- the stack serves the document of this checkout -------------------------------------------
http_ok "$API_URL/ping" || die "the API does not answer at $API_URL (start it: npm start)"
served="$(mktemp)"
trap 'rm -f "$served"' EXIT
curl -fsS --max-time 10 "$API_URL/openapi.json" -o "$served" || die "GET $API_URL/openapi.json failed"
python3 - "$served" reader/openapi.json <<'PY' || die "the reader serves another OpenAPI document than reader/openapi.json; rebuild: bash scripts/stack.sh start"
import json, sys
served, in_repo = (json.load(open(path)) for path in sys.argv[1:3])
sys.exit(0 if served == in_repo else 1)
PY

# --- the run ---------------------------------------------------------------------------------
# One worker: the machine is small, and Python 3.11's ast module is not thread-safe (with
# several workers hypothesis can crash with "AST constructor recursion depth mismatch").
args=(
  run "$API_URL/openapi.json"
  --url "$API_URL"
  --checks "$CHECKS"
  --max-examples "$MAX_EXAMPLES"
  --phases examples,coverage,fuzzing,stateful
  --workers 1
  --request-timeout 15
  # The change feeds stream until the client closes them, which a fuzzer's request never does;
  # tests/feed/ covers them through nginx.
  --exclude-path-regex '/events$'
  --report junit --report-junit-path "$REPORT_DIR/junit.xml"
)
[ -n "${ST_SEED:-}" ] && args+=(--seed "$ST_SEED")

say "schemathesis $SCHEMATHESIS_VERSION against $API_URL (checks: $CHECKS; max $MAX_EXAMPLES examples per operation)"
# schemathesis keeps a cache (.schemathesis/, failures to replay first next time) in its
# working directory: run it in the git-ignored report directory.
mkdir -p "$REPORT_DIR"
cd "$REPORT_DIR"
status=0
timeout --signal=INT --kill-after=10 "$TIME_LIMIT" "$VENV/bin/st" "${args[@]}" || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 130 ]; then
  die "schemathesis did not finish within ${TIME_LIMIT}s"
fi
if [ "$status" -ne 0 ]; then
  die "schemathesis found problems (exit $status); JUnit report: ${REPORT_DIR#"$ROOT"/}/junit.xml"
fi
say "no problems found"
