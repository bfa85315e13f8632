-- Least privilege (issue 21). The services may run as three roles that scripts/sql/roles.sql
-- provisions: `ledger_owner` owns the schema and runs these migrations, `ledger_writer` records
-- and publishes transactions, `ledger_reader` only reads. What each service may do is granted
-- here, beside the schema it is about, so a migration that adds a table or a column grants in
-- the same file (re-create this function with the new grants and call it again).
--
-- Granted only to the roles that exist: with none (a development database migrated by the
-- superuser, every test database) this does nothing, and the services run as one role as
-- before. roles.sql calls the function too, for a database migrated before the roles existed.
CREATE FUNCTION ledger_grant_privileges() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_reader') THEN
        -- Accounts and transactions for the reads, publish_batches for /health's publish lag.
        GRANT SELECT ON accounts, transactions, publish_batches, publish_outbox TO ledger_reader;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_writer') THEN
        GRANT SELECT ON accounts, transactions, publish_batches, publish_outbox TO ledger_writer;
        -- record_transactions.sql: a new account's row, or its balance and version moved on.
        -- created_at and updated_at on insert are the database's (their defaults).
        GRANT INSERT (account_id, balance, version), UPDATE (balance, version, updated_at)
            ON accounts TO ledger_writer;
        -- Transactions are immutable: insert only, never update or delete, except that an
        -- idempotency key is forgotten after its retention (writer/src/idempotency.rs; its
        -- SELECT … FOR UPDATE needs this UPDATE too). seq (an identity: no sequence
        -- privilege needed) and created_at are the database's.
        GRANT INSERT (transaction_id, account_id, amount, idempotency_key, idempotency_scope),
              UPDATE (idempotency_key)
            ON transactions TO ledger_writer;
        -- The outbox: a row per commit, deleted once the commit is in Redis.
        GRANT INSERT (transaction_ids), DELETE ON publish_batches TO ledger_writer;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION ledger_grant_privileges() FROM PUBLIC;

SELECT ledger_grant_privileges();
