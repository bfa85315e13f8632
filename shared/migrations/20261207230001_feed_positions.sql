-- The live change feed (issue 23, reader/src/feed.rs). An event's id is its transaction's
-- `seq`; the feed needs two things of it that the identity alone does not give:
--
-- * Commit order. From this migration on, the record statement takes a transaction-level
--   advisory lock (the "commit position lock") after its account locks and before its rows
--   draw their `seq`, and holds it until it commits. So seqs are drawn in commit order, and a
--   snapshot that sees a seq sees every committed lower one: a reader that has delivered up to
--   seq S only ever finds new rows above S (rolled-back batches leave holes, never late rows).
-- * The balance right after each transaction, which the statement already computes: `balance`.
--
-- Rows recorded before this migration have no balance (NULL) and their seqs are not in commit
-- order: they are before the feed began, and a resume from among them is refused with an error
-- event (nothing is backfilled: that would rewrite the whole table). A nullable column without a
-- default is free to add (no table rewrite), and no index is added: the feed reads through the
-- existing seq and (account_id, seq) indexes.
ALTER TABLE transactions ADD COLUMN balance bigint;

-- As in 20261207000002_role_privileges.sql, with the writer also inserting `balance`. The
-- reader's table-wide SELECT on transactions already covers the new column.
CREATE OR REPLACE FUNCTION ledger_grant_privileges() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_reader') THEN
        -- Accounts and transactions for the reads and the feed, publish_batches for /health's
        -- publish lag.
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
        GRANT INSERT (transaction_id, account_id, amount, idempotency_key, idempotency_scope,
                      balance),
              UPDATE (idempotency_key)
            ON transactions TO ledger_writer;
        -- The outbox: a row per commit, deleted once the commit is in Redis.
        GRANT INSERT (transaction_ids), DELETE ON publish_batches TO ledger_writer;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION ledger_grant_privileges() FROM PUBLIC;

SELECT ledger_grant_privileges();
