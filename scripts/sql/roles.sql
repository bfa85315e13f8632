-- Provisions the PostgreSQL roles of least privilege (issue 21) in the current database. Run by
-- an administrator (a superuser, or a role with CREATEROLE that owns the database), with psql,
-- before the writer first starts and again whenever a password changes; idempotent:
--
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -f scripts/sql/roles.sql
--
-- Passwords come from psql variables `owner_password`, `writer_password` and `reader_password`;
-- each one unset leaves that role's password as it is (none, for a new role: fine where
-- PostgreSQL trusts local connections, as natively). Set them on psql's input rather than its
-- command line, so they never show in `ps`:
--
--   { printf '%s\n' "\\set writer_password '$pw'"; cat scripts/sql/roles.sql; } | psql …
--
-- The roles (names fixed: the migrations grant to them):
--   ledger_owner   owns the schema; the writer runs migrations as it (MIGRATION_DATABASE_URL)
--   ledger_writer  the writer serves as it: selects, inserts transactions, accounts and outbox
--                  rows, updates balances, deletes published outbox rows; nothing else
--   ledger_reader  the reader serves as it: SELECT only
-- What each may do on each table is granted by the migrations (function
-- ledger_grant_privileges, shared/migrations/20261207000002_role_privileges.sql), beside the
-- schema; this file creates the roles, gives the owner the schema and calls that function.
\set ON_ERROR_STOP on
\set QUIET on
-- Two runs at once on one database take turns. (Roles belong to the whole server; two runs on
-- two of its databases at the same moment may still meet on one role: "tuple concurrently
-- updated". Run it again: it is idempotent, and it changes a role only where it differs.)
SELECT pg_advisory_lock(hashtext('scripts/sql/roles.sql')) \gset

SELECT format('CREATE ROLE %I', name)
FROM unnest(ARRAY['ledger_owner', 'ledger_writer', 'ledger_reader']) AS name
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name)
\gexec

-- Login roles with no power beyond their grants (ALTER makes a role created earlier match).
-- NOINHERIT: none of them gains privileges by being made a member of another role later.
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT',
              rolname)
FROM pg_roles
WHERE rolname IN ('ledger_owner', 'ledger_writer', 'ledger_reader')
  AND (NOT rolcanlogin OR rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication
       OR rolbypassrls OR rolinherit)
\gexec

\if :{?owner_password}
ALTER ROLE ledger_owner PASSWORD :'owner_password';
\endif
\if :{?writer_password}
ALTER ROLE ledger_writer PASSWORD :'writer_password';
\endif
\if :{?reader_password}
ALTER ROLE ledger_reader PASSWORD :'reader_password';
\endif

-- The database: only these roles (and superusers) connect; nobody else creates anything in it.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO ledger_owner, ledger_writer, ledger_reader',
              current_database()) \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO ledger_owner;
GRANT USAGE ON SCHEMA public TO ledger_writer, ledger_reader;

-- A database migrated before the roles existed (by the superuser): its objects move to the
-- owner, so that later migrations, run as the owner, can change them.
SELECT format('ALTER TABLE %I.%I OWNER TO ledger_owner', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
  AND c.relowner <> 'ledger_owner'::regrole
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
\gexec
SELECT format('ALTER FUNCTION %s OWNER TO ledger_owner', p.oid::regprocedure)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public' AND p.proowner <> 'ledger_owner'::regrole
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
\gexec

-- The grants on the tables, as the migrations give them (once migrated).
SELECT 'DO $$ BEGIN PERFORM ledger_grant_privileges(); END $$'
WHERE to_regprocedure('public.ledger_grant_privileges()') IS NOT NULL
\gexec
SELECT pg_advisory_unlock(hashtext('scripts/sql/roles.sql')) \gset
