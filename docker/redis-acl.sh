#!/bin/sh
# docker compose's Redis: the image's own entrypoint, with the ACL users of the writer and the
# reader (scripts/lib/roles.sh: their commands and keys) and the default user off, so only the
# services, with the passwords from .env, get in. (`set -f`: the key patterns stay patterns.)
set -euf
. /ledger/roles.sh
prefix="${REDIS_KEY_PREFIX:-tm:}"
# shellcheck disable=SC2046 # each rule is one word
exec docker-entrypoint.sh redis-server "$@" \
  --user default off \
  --user "$(redis_user writer "$prefix")" on ">$REDIS_WRITER_PASSWORD" $(redis_acl_rules writer "$prefix") \
  --user "$(redis_user reader "$prefix")" on ">$REDIS_READER_PASSWORD" $(redis_acl_rules reader "$prefix")
