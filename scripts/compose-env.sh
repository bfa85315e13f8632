#!/usr/bin/env bash
# Makes .env for docker compose (git-ignored, mode 0600): a copy of .env.example with every
# password generated, on the first run; later runs only add the passwords .env lacks and never
# change one it has (PostgreSQL and Grafana keep theirs in their volumes). docker-compose.yml
# refuses to start without them: there is no default or shared password.
#
#   bash scripts/compose-env.sh && docker compose up --build      (npm run compose:env)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG=compose-env
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/roles.sh
. "$ROOT/scripts/lib/roles.sh"
ENV_FILE="${COMPOSE_ENV_FILE:-$ROOT/.env}"

# Every password docker-compose.yml requires (scripts/lib/roles.sh; tests/ops/compose.test.mjs
# checks the list against the compose file).
read -r -a PASSWORDS <<<"$(echo $COMPOSE_PASSWORDS)"

if [ ! -e "$ENV_FILE" ]; then
  (umask 077; cp "$ROOT/.env.example" "$ENV_FILE")
  say "created $ENV_FILE from .env.example"
fi
chmod 600 "$ENV_FILE"
made=0
for name in "${PASSWORDS[@]}"; do
  grep -q "^$name=." "$ENV_FILE" && continue
  password="$(new_password)"
  if grep -q "^$name=\$" "$ENV_FILE"; then sed -i "s/^$name=\$/$name=$password/" "$ENV_FILE"
  else printf '%s=%s\n' "$name" "$password" >>"$ENV_FILE"
  fi
  made=$((made + 1))
done
say "$ENV_FILE: $made password(s) generated, $((${#PASSWORDS[@]} - made)) kept"
