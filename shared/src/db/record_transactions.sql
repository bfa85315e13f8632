-- Records a batch of transactions (one row per POST /transactions) in one statement, so in one
-- atomic commit and one round trip: $1..$4 are parallel arrays (transaction ids, account ids,
-- amounts, idempotency keys), in the order the requests arrived. A lone request is a batch of
-- one. shared/src/db/record.rs runs this text; the benchmark's limit phase (bench/lib/bench.py)
-- runs the same file through pgbench.
--
-- Each account's row is updated once, with the sum of its amounts; accounts are locked in
-- account_id order, so concurrent batches cannot deadlock. Every CTE sees the same snapshot; the
-- REFERENCES accounts check runs at the end of the statement, after the account rows exist. For
-- every input row, in order, it returns the transaction's created_at, its account's balance and
-- version right after that transaction (as if the batch were applied one by one in input
-- order), and the commit's outbox row.
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[]) WITH ORDINALITY
        AS i (transaction_id, account_id, amount, idempotency_key, n)
), totals AS (
    SELECT account_id, sum(amount)::bigint AS amount, count(*) AS applied
    FROM input GROUP BY account_id
), account AS (
    INSERT INTO accounts AS a (account_id, balance, version)
    SELECT account_id, amount, applied FROM totals ORDER BY account_id
    ON CONFLICT (account_id) DO UPDATE
        SET balance = a.balance + EXCLUDED.balance,
            version = a.version + EXCLUDED.version,
            updated_at = now()
    RETURNING account_id, balance, version
), transaction AS (
    INSERT INTO transactions (transaction_id, account_id, amount, idempotency_key)
    SELECT transaction_id, account_id, amount, idempotency_key FROM input ORDER BY n
    RETURNING transaction_id, created_at
), outbox AS (
    INSERT INTO publish_batches (transaction_ids)
    SELECT array_agg(transaction_id ORDER BY n) FROM input
    RETURNING batch_id
), later AS (
    -- What the same account's later rows of this batch add on top of each row.
    SELECT n, transaction_id, account_id,
           coalesce(sum(amount) OVER after_this, 0) AS amount,
           count(*) OVER after_this AS applied
    FROM input
    WINDOW after_this AS (PARTITION BY account_id ORDER BY n
                          ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
)
SELECT transaction.created_at,
       (account.balance - later.amount)::bigint AS balance,
       account.version - later.applied AS version,
       outbox.batch_id
FROM later
JOIN account USING (account_id)
JOIN transaction USING (transaction_id)
CROSS JOIN outbox
ORDER BY later.n
