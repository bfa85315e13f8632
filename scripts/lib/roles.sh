# shellcheck shell=bash
# (POSIX sh where the compose Redis container sources it: docker/redis-acl.sh.)
# Least privilege (issue 21), sourced by scripts/stack.sh (and the compose and test scripts for
# the Redis rules): each service reaches PostgreSQL and Redis as a user that can do what it
# does and nothing more.
#
#   with_user URL USER [PASSWORD]   URL with its user (and password) replaced
#   provision_pg_roles              scripts/sql/roles.sql over DATABASE_URL (the admin), then
#                                   exports MIGRATION_/WRITER_/READER_DATABASE_URL (each only
#                                   where unset) as the three roles
#   stack_redis_url STATE URL       URL, with the administrator's password if the stack of
#                                   STATE started that Redis (its default user is closed)
#   redis_acl_rules KIND PREFIX     the ACL rules of the writer's or the reader's Redis user
#   provision_redis_users DIR       ACL users for the writer and the reader on the Redis at
#                                   REDIS_URL (passwords in DIR, mode 0600), then exports
#                                   WRITER_REDIS_URL and READER_REDIS_URL (each only where unset)

# Every password docker-compose.yml requires from .env (scripts/compose-env.sh generates them;
# scripts/test-compose.sh makes fresh ones per run).
COMPOSE_PASSWORDS="POSTGRES_PASSWORD LEDGER_OWNER_PASSWORD LEDGER_WRITER_PASSWORD LEDGER_READER_PASSWORD
  REDIS_WRITER_PASSWORD REDIS_READER_PASSWORD GRAFANA_ADMIN_PASSWORD"

# with_user URL USER [PASSWORD]: scheme://USER[:PASSWORD]@host..., whatever user URL had.
with_user() {
  local url="$1" user="$2" password="${3:-}" scheme rest
  scheme="${url%%://*}"; rest="${url#*://}"
  case "${rest%%/*}" in *@*) rest="${rest#*@}" ;; esac
  printf '%s://%s%s@%s' "$scheme" "$user" "${password:+:$password}" "$rest"
}

# A password of 48 hex digits (nothing to quote in a URL, a config file or psql).
new_password() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

# secret_file PATH: PATH's password, made on first use (mode 0600): stable across restarts, so
# running services keep working when the stack is started again.
secret_file() {
  local path="$1"
  if [ ! -s "$path" ]; then
    (umask 077; mkdir -p "$(dirname "$path")"; new_password >"$path")
  fi
  cat "$path"
}

# The stack's PostgreSQL roles. DATABASE_URL is the administrator's (it creates the database
# too); when its role may not create roles, the services run as it, as before. Natively
# PostgreSQL trusts local connections, so the roles have no password here; on one that asks
# for passwords, set the three URLs (with the passwords given to roles.sql) yourself.
provision_pg_roles() {
  local may
  may="$(psql "$DATABASE_URL" -XtAc \
    "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user" 2>/dev/null || true)"
  if [ "$may" != t ]; then
    say "DATABASE_URL's role may not create roles: the services connect as it (no least-privilege roles)"
    return 0
  fi
  psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -f "$ROOT/scripts/sql/roles.sql" >/dev/null ||
    die "scripts/sql/roles.sql failed on DATABASE_URL"
  export MIGRATION_DATABASE_URL="${MIGRATION_DATABASE_URL:-$(with_user "$DATABASE_URL" ledger_owner)}"
  export WRITER_DATABASE_URL="${WRITER_DATABASE_URL:-$(with_user "$DATABASE_URL" ledger_writer)}"
  export READER_DATABASE_URL="${READER_DATABASE_URL:-$(with_user "$DATABASE_URL" ledger_reader)}"
}

# A Redis the stack starts itself (none answered at REDIS_URL) has its default user closed by
# a password (requirepass in STATE/redis.conf), kept in STATE/secrets/redis-admin.password
# (mode 0600); the stack and npm test's scripts reach it through this URL.
stack_redis_url() {
  local state="$1" url="$2" password
  if [ -s "$state/secrets/redis-admin.password" ] && pid_alive "$state/redis.pid"; then
    password="$(cat "$state/secrets/redis-admin.password")"
    with_user "$url" default "$password"
  else
    printf '%s' "$url"
  fi
}

# redis_acl_rules writer|reader PREFIX: the commands each service sends (shared/src/cache/*.rs,
# the Lua scripts in cache/lua.rs and cache/link.rs, and the client's connection set-up), on
# its own keys only. The reader fills views (a cache miss) and claims the views' generation, so
# it writes those keys too, but never the change stream; neither can delete, flush, list keys,
# configure or subscribe. (The client's CLIENT SETINFO is left out: Redis 7.0 does not know it,
# and the client ignores its refusal.)
redis_acl_rules() {
  local kind="$1" prefix="$2" common
  common="resetchannels -@all +auth +hello +select +ping +info +role"
  common="$common +evalsha +script|load +get +set +hget +hset +expire +incr"
  case "$kind" in
    writer) printf '%s\n' "resetkeys ~${prefix}* $common +xadd" ;;
    reader) printf '%s\n' "resetkeys ~${prefix}account:* ~${prefix}transaction:* ~${prefix}views-* $common" ;;
    *) echo "redis_acl_rules: writer or reader, not $kind" >&2; return 1 ;;
  esac
}

# The ACL user names of a key prefix: two stacks on one Redis (other prefixes) keep their own.
redis_user() { printf 'ledger-%s-%s' "$1" "$(printf '%s' "$2" | tr -c 'A-Za-z0-9' '-')"; }

# provision_redis_users DIR: on a Redis with ACLs (6 or later) where REDIS_URL may manage them.
# Its default user is left as it is: on a Redis the stack did not start (shared with others)
# closing it is the operator's job (docs/deploy.md, "Credentials").
provision_redis_users() {
  local dir="$1" prefix="${REDIS_KEY_PREFIX:-tm:}" kind user password whoami
  # A user name answers; an error (no ACLs before Redis 6, NOAUTH, NOPERM) has spaces.
  whoami="$(redis-cli -u "$REDIS_URL" --no-auth-warning ACL WHOAMI 2>/dev/null || true)"
  case "$whoami" in
    "" | *" "*)
      say "Redis at REDIS_URL has no ACLs (or REDIS_URL may not manage them): the services use REDIS_URL as is"
      return 0 ;;
  esac
  for kind in writer reader; do
    user="$(redis_user "$kind" "$prefix")"
    password="$(secret_file "$dir/redis-$kind.password")"
    # On redis-cli's input, not its command line: the password never shows in `ps`.
    printf 'ACL SETUSER %s reset on >%s %s\n' "$user" "$password" "$(redis_acl_rules "$kind" "$prefix")" |
      redis-cli -u "$REDIS_URL" --no-auth-warning | grep -qx OK || die "could not create the Redis ACL user $user"
    case "$kind" in
      writer) export WRITER_REDIS_URL="${WRITER_REDIS_URL:-$(with_user "$REDIS_URL" "$user" "$password")}" ;;
      reader) export READER_REDIS_URL="${READER_REDIS_URL:-$(with_user "$REDIS_URL" "$user" "$password")}" ;;
    esac
  done
}
