#!/usr/bin/env bash
# The dev overlay's Secrets, generated (no password is in git): secrets/*.env beside this
# script (git-ignored, mode 0600), which the overlay's secretGenerator reads. Run once before
# the first `kubectl apply -k deploy/kubernetes/overlays/dev`; later runs keep what exists
# (PostgreSQL keeps its passwords in its volume). scripts/test-kubernetes.sh runs it too.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../../.." && pwd)"
# shellcheck source=scripts/lib/roles.sh
. "$ROOT/scripts/lib/roles.sh"
DIR="$HERE/secrets"
umask 077
mkdir -p "$DIR"

# secret NAME LINE...: secrets/NAME.env with these key=value lines, unless it exists.
secret() {
  local file="$DIR/$1.env"
  shift
  [ -s "$file" ] || printf '%s\n' "$@" >"$file"
}
# The superuser (the postgres container and the db-roles Job only), then the roles of
# scripts/sql/roles.sql: the owner (the writer migrates as it), the writer's and the reader's.
secret db-admin username=postgres "password=$(new_password)"
secret db-app username=ledger_owner "password=$(new_password)"
secret db-writer username=ledger_writer "password=$(new_password)"
secret db-reader username=ledger_reader "password=$(new_password)"
# Redis's ACL users (redis.yaml): the password for Redis, the URL for the service.
for kind in writer reader; do
  password="$(new_password)"
  secret "redis-$kind" "password=$password" \
    "url=$(with_user redis://redis:6379/0 "$(redis_user "$kind" tm:)" "$password")"
done
echo "dev Secrets in $DIR"
