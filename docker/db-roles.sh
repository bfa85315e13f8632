#!/bin/sh
# docker compose's one-shot `db-roles` service: scripts/sql/roles.sql on the postgres service as
# its superuser, every `up` (idempotent: a volume from before the roles existed gets them too),
# before the writer starts. The roles' passwords come from .env (scripts/compose-env.sh makes
# them) and reach psql on its input, never its command line.
set -eu
export PGPASSWORD="$POSTGRES_PASSWORD" PGHOST=postgres PGUSER=postgres PGDATABASE=transactions
until pg_isready -q; do sleep 1; done
{
  printf '%s\n' "\\set owner_password '$LEDGER_OWNER_PASSWORD'"
  printf '%s\n' "\\set writer_password '$LEDGER_WRITER_PASSWORD'"
  printf '%s\n' "\\set reader_password '$LEDGER_READER_PASSWORD'"
  cat /ledger/roles.sql
} | psql -X -q -v ON_ERROR_STOP=1
echo "db-roles: ledger_owner, ledger_writer and ledger_reader provisioned"
