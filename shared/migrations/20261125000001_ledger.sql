-- The ledger. PostgreSQL is the source of truth; Redis only holds views derived from it.

-- One row per account, created by the account's first transaction (an account exists once it
-- has a transaction). `balance` is the running sum of the account's amounts: the writer changes
-- it in the same statement that inserts the transaction, so the two can never disagree.
-- `version` counts the transactions applied to the account. It orders the account views cached
-- in Redis: a view may only replace one with a lower version, so a slow or repeated publish can
-- never put an older balance over a newer one.
CREATE TABLE accounts (
    account_id uuid        PRIMARY KEY,
    balance    bigint      NOT NULL,
    version    bigint      NOT NULL CHECK (version > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Transactions are immutable. `seq` is a total creation order: it keeps listings stable and is
-- the key for paging (a UUID v4 has no order; `created_at` can tie).
CREATE TABLE transactions (
    seq            bigint      GENERATED ALWAYS AS IDENTITY,
    transaction_id uuid        PRIMARY KEY,
    account_id     uuid        NOT NULL REFERENCES accounts (account_id),
    amount         bigint      NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX transactions_seq_key ON transactions (seq);
-- One account's history in order, and the balance = sum(amount) audit, without a full scan.
CREATE INDEX transactions_account_seq_idx ON transactions (account_id, seq);

-- Transactional outbox: a row is written in the same statement as the transaction and removed
-- once its change is in Redis. Whatever is left here after a crash, a Redis outage or a failed
-- publish is published again by the writer's repair loop, so the cached views always catch up.
CREATE TABLE publish_outbox (
    transaction_id uuid        PRIMARY KEY,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX publish_outbox_created_at_idx ON publish_outbox (created_at);
