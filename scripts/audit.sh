#!/usr/bin/env bash
# The RustSec advisory scan of Cargo.lock (cargo audit). The advisory database lives on GitHub:
# where GitHub answers, cargo audit fetches it; where it does not (this project's CI machines),
# give a copy with ADVISORY_DB=<path of a checkout of rustsec/advisory-db>, or the scan says
# plainly that it did not run here (the GitHub workflow's `audit` job runs it on every push).
# cargo-audit is installed as a crate when missing (a few minutes, once).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TAG=audit
# shellcheck source=scripts/lib/common.sh
. scripts/lib/common.sh
AUDIT_ROOT="${AUDIT_ROOT:-$HOME/.cache/cargo-audit}"
args=(--deny warnings)
if [ -n "${ADVISORY_DB:-}" ]; then
  args+=(--no-fetch --db "$ADVISORY_DB")
elif ! timeout 10 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
  say "NOT RUN HERE: the advisory database (github.com/rustsec/advisory-db) cannot be reached;"
  say "the GitHub workflow's audit job scans on every push (or set ADVISORY_DB to a local copy)"
  exit 0
fi
# .cargo/audit.toml ignores one advisory of a crate that is only in Cargo.lock, never built:
# make sure it still is not.
for ignored_crate in rsa; do
  if [ -n "$(cargo tree --locked -i "$ignored_crate" --target all 2>/dev/null)" ]; then
    die "$ignored_crate is now compiled in: its advisory may no longer be ignored (.cargo/audit.toml)"
  fi
done
if ! [ -x "$AUDIT_ROOT/bin/cargo-audit" ]; then
  say "installing cargo-audit into $AUDIT_ROOT"
  cargo install cargo-audit --locked --root "$AUDIT_ROOT" >/dev/null
fi
"$AUDIT_ROOT/bin/cargo-audit" audit "${args[@]}"
