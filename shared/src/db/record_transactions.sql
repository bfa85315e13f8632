-- Records a batch of transactions (one row per POST /transactions) in one statement, so in one
-- atomic commit and one round trip: $1..$5 are parallel arrays (transaction ids, account ids,
-- amounts, idempotency keys, the keys' scopes: the API key id, '' without API keys), in the
-- order the requests arrived. A lone request is a batch of
-- one. shared/src/db/record.rs runs this text; the benchmark's limit phase (bench/lib/bench.py)
-- runs the same file through pgbench.
--
-- A row that cannot be recorded is refused on its own, and the rest of the batch is recorded:
-- `key_taken` (its idempotency key is already recorded; the writer sends a key at most once per
-- batch) or `balance_overflow` (applied in input order after the rows recorded before it, its
-- account's balance would leave the range ±(2^53 - 1), which JSON clients hold exactly; see
-- Amount::MAX_SAFE). So one bad request costs its batch nothing but its own row. The range
-- check is set-based: each row's balance counts every earlier row
-- of its account, from the balance in the statement's snapshot. Where that could differ from
-- the one-by-one outcome (a row was refused, so later rows counted it; or a balance is near the
-- range's ends, from the balance the account had when it was updated, which a concurrent batch
-- may have changed since the snapshot), the statement verifies it (`exactness`); when it
-- differs, the statement fails with numeric_value_out_of_range and writes nothing, and the
-- writer records the batch one request at a time. (Amounts are within ±(2^53 - 1), so a
-- batch's sum for one account, at most 256 of them, stays far inside bigint.)
--
-- Each account's row is updated once, with the sum of its recorded amounts; accounts are locked
-- in account_id order, so concurrent batches cannot deadlock. Every CTE sees the same snapshot;
-- the REFERENCES accounts check runs at the end of the statement, after the account rows exist.
-- For every input row, in order, it returns its outcome and, when recorded, the transaction's
-- created_at, its account's balance and version right after that transaction (as if the batch
-- were applied one by one in input order), and the commit's outbox row.
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[])
        WITH ORDINALITY AS i (transaction_id, account_id, amount, idempotency_key,
                              idempotency_scope, n)
), decided AS MATERIALIZED (
    SELECT transaction_id, account_id, amount, idempotency_key, idempotency_scope, n, start,
           running,
           CASE WHEN key_taken THEN 'key_taken'
                WHEN start + running NOT BETWEEN -9007199254740991 AND 9007199254740991
                    THEN 'balance_overflow'
                ELSE 'recorded' END AS outcome
    FROM (
      SELECT checked.*,
             -- This row's and every earlier row's amount, of its account (keys taken aside).
             coalesce(sum(amount) FILTER (WHERE NOT key_taken) OVER upto_this, 0) AS running
      FROM (
        SELECT input.*, coalesce(accounts.balance, 0)::numeric AS start,
               idempotency_key IS NOT NULL AND EXISTS (
                   SELECT 1 FROM transactions t WHERE t.idempotency_key = input.idempotency_key
                   AND t.idempotency_scope = input.idempotency_scope
               ) AS key_taken
        FROM input LEFT JOIN accounts USING (account_id)
      ) checked
      WINDOW upto_this AS (PARTITION BY account_id ORDER BY n)
    ) summed
), totals AS (
    SELECT account_id, sum(amount)::bigint AS amount, count(*) AS applied
    FROM decided WHERE outcome = 'recorded' GROUP BY account_id
), account AS (
    INSERT INTO accounts AS a (account_id, balance, version)
    SELECT account_id, amount, applied FROM totals ORDER BY account_id
    ON CONFLICT (account_id) DO UPDATE
        SET balance = a.balance + EXCLUDED.balance,
            version = a.version + EXCLUDED.version,
            updated_at = now()
    RETURNING account_id, balance, version
), later AS (
    -- What the same account's later recorded rows of this batch add on top of each row.
    SELECT n, coalesce(sum(amount) OVER after_this, 0) AS amount,
           count(*) OVER after_this AS applied
    FROM decided WHERE outcome = 'recorded'
    WINDOW after_this AS (PARTITION BY account_id ORDER BY n
                          ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
), position_lock AS MATERIALIZED (
    -- The commit position lock (migration 20261207230001_feed_positions.sql): held to the
    -- commit, so seqs are drawn in commit order, which the live feed's ids rely on. Taken
    -- after every account lock (counting `account` runs that CTE first), so no batch waits
    -- for it while holding an account another batch needs first: no deadlock.
    SELECT pg_advisory_xact_lock(7263498121) FROM (SELECT count(*) FROM account) locked
), transaction AS (
    -- Rows draw their seq (the identity) here, under the lock, in input order; each stores its
    -- account's balance right after it, for the feed.
    INSERT INTO transactions (transaction_id, account_id, amount, idempotency_key,
                              idempotency_scope, balance)
    SELECT d.transaction_id, d.account_id, d.amount, d.idempotency_key, d.idempotency_scope,
           account.balance - later.amount
    FROM decided d JOIN later USING (n) JOIN account USING (account_id) CROSS JOIN position_lock
    WHERE d.outcome = 'recorded' ORDER BY d.n
    RETURNING transaction_id, created_at
), outbox AS (
    INSERT INTO publish_batches (transaction_ids)
    SELECT array_agg(transaction_id ORDER BY n) FROM decided
    WHERE outcome = 'recorded' HAVING count(*) > 0
    RETURNING batch_id
), exactness AS (
    -- Whether the outcome is the one-by-one outcome, from the balance each account had when it
    -- was updated (a concurrent batch may have changed it since the snapshot). Evaluated only
    -- when the final SELECT asks (a row refused, or near the range's ends).
    SELECT bool_and(outcome = 'key_taken'
                    OR (outcome = 'recorded') = (balance_before + amount
                        BETWEEN -9007199254740991 AND 9007199254740991)) AS exact
    FROM (
        SELECT d.outcome, d.amount,
               coalesce(a.balance - t.amount, d.start)
               + coalesce(sum(d.amount) FILTER (WHERE d.outcome = 'recorded') OVER (
                   PARTITION BY d.account_id ORDER BY d.n
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS balance_before
        FROM decided d
        LEFT JOIN account a ON a.account_id = d.account_id
        LEFT JOIN totals t ON t.account_id = d.account_id
    ) verified

)
SELECT decided.outcome,
       -- Fails the statement (numeric_value_out_of_range) when a refusal is not the one-by-one
       -- outcome, or the account changed after the snapshot its balance was checked on.
       9223372036854775807 + (
           CASE WHEN decided.outcome = 'balance_overflow'
                    OR (decided.outcome = 'recorded'
                        AND account.balance - totals.amount + decided.running
                            NOT BETWEEN -9007199254740991 AND 9007199254740991)
                    THEN (NOT (SELECT exact FROM exactness))::int
                ELSE 0 END
       )::bigint AS exact_guard,
       transaction.created_at,
       (account.balance - later.amount)::bigint AS balance,
       account.version - later.applied AS version,
       outbox.batch_id
FROM decided
LEFT JOIN later USING (n)
LEFT JOIN account ON account.account_id = decided.account_id AND later.n IS NOT NULL
LEFT JOIN totals ON totals.account_id = decided.account_id AND later.n IS NOT NULL
LEFT JOIN transaction ON transaction.transaction_id = decided.transaction_id
LEFT JOIN outbox ON later.n IS NOT NULL
ORDER BY decided.n
