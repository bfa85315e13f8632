-- Records a batch of transactions (one row per POST /transactions) in one statement, so in one
-- atomic commit and one round trip: $1..$4 are parallel arrays (transaction ids, account ids,
-- amounts, idempotency keys), in the order the requests arrived. A lone request is a batch of
-- one. shared/src/db/record.rs runs this text; the benchmark's limit phase (bench/lib/bench.py)
-- runs the same file through pgbench.
--
-- A row that cannot be recorded is refused on its own, and the rest of the batch is recorded:
-- `key_taken` (its idempotency key is already recorded, or an earlier row of the batch has it)
-- or `balance_overflow` (applied in input order after the rows recorded before it, its
-- account's balance would leave the bigint range). So one bad request costs its batch nothing
-- but its own row. The overflow check is set-based: it adds every earlier row, then verifies
-- that the outcome is exactly the one-by-one outcome (each recorded row stays in range after
-- the recorded rows before it, each refused one would not). When it is not (an earlier refused
-- row pushed a later one out of range), the statement fails with numeric_value_out_of_range
-- and writes nothing; the writer then records the batch one request at a time. (So does a
-- batch whose recorded amounts for one account add up beyond the bigint range, even where the
-- balance stays in it: the account's row is updated with that sum.)
--
-- The batch's existing accounts are locked first, in account_id order (so concurrent batches
-- cannot deadlock), and their balances read under the lock; each account's row is then updated
-- once, with the sum of its recorded amounts. Every CTE sees the same snapshot; the REFERENCES
-- accounts check runs at the end of the statement, after the account rows exist. For every
-- input row, in order, it returns its outcome and, when recorded, the transaction's created_at,
-- its account's balance and version right after that transaction (as if the batch were applied
-- one by one in input order), and the commit's outbox row.
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[]) WITH ORDINALITY
        AS i (transaction_id, account_id, amount, idempotency_key, n)
), locked AS MATERIALIZED (
    SELECT account_id, balance FROM accounts
    WHERE account_id IN (SELECT account_id FROM input)
    ORDER BY account_id
    FOR UPDATE
), keyed AS (
    SELECT input.*, coalesce(locked.balance, 0)::numeric AS start,
           idempotency_key IS NOT NULL AND (
               row_number() OVER (PARTITION BY idempotency_key ORDER BY n) > 1
               OR EXISTS (SELECT 1 FROM transactions t
                          WHERE t.idempotency_key = input.idempotency_key)
           ) AS key_taken
    FROM input LEFT JOIN locked USING (account_id)
), reached AS (
    -- The balance after each row if every earlier row of its account (keys aside) applied.
    SELECT keyed.*,
           start + coalesce(sum(amount) FILTER (WHERE NOT key_taken) OVER upto_this, 0)
               AS reached
    FROM keyed
    WINDOW upto_this AS (PARTITION BY account_id ORDER BY n)
), decided AS (
    SELECT reached.*,
           CASE WHEN key_taken THEN 'key_taken'
                WHEN reached NOT BETWEEN -9223372036854775808 AND 9223372036854775807
                    THEN 'balance_overflow'
                ELSE 'recorded' END AS outcome
    FROM reached
), verified AS (
    -- The balance before and after each row counting only the rows recorded before it.
    SELECT decided.*,
           start + coalesce(sum(amount) FILTER (WHERE outcome = 'recorded') OVER before_this, 0)
               AS balance_before
    FROM decided
    WINDOW before_this AS (PARTITION BY account_id ORDER BY n
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
), recorded AS (
    SELECT transaction_id, account_id, amount, idempotency_key, n,
           -- Whether the set-based outcome is the one-by-one outcome for this row.
           bool_and(outcome = 'key_taken'
                    OR (outcome = 'recorded') = ((balance_before + amount)
                        BETWEEN -9223372036854775808 AND 9223372036854775807))
               OVER () AS exact,
           outcome
    FROM verified
), totals AS (
    SELECT account_id, sum(amount)::bigint AS amount, count(*) AS applied
    FROM recorded WHERE outcome = 'recorded' GROUP BY account_id
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
    SELECT transaction_id, account_id, amount, idempotency_key FROM recorded
    WHERE outcome = 'recorded' ORDER BY n
    RETURNING transaction_id, created_at
), outbox AS (
    INSERT INTO publish_batches (transaction_ids)
    SELECT array_agg(transaction_id ORDER BY n) FROM recorded
    WHERE outcome = 'recorded' HAVING count(*) > 0
    RETURNING batch_id
), later AS (
    -- What the same account's later recorded rows of this batch add on top of each row.
    SELECT n, coalesce(sum(amount) OVER after_this, 0) AS amount,
           count(*) OVER after_this AS applied
    FROM recorded WHERE outcome = 'recorded'
    WINDOW after_this AS (PARTITION BY account_id ORDER BY n
                          ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
)
SELECT recorded.outcome,
       -- Fails the statement (numeric_value_out_of_range) when the outcome is not exact.
       9223372036854775807 + (NOT recorded.exact)::int::bigint AS exact_guard,
       transaction.created_at,
       (account.balance - later.amount)::bigint AS balance,
       account.version - later.applied AS version,
       outbox.batch_id
FROM recorded
LEFT JOIN later USING (n)
LEFT JOIN account ON account.account_id = recorded.account_id AND later.n IS NOT NULL
LEFT JOIN transaction ON transaction.transaction_id = recorded.transaction_id
LEFT JOIN outbox ON later.n IS NOT NULL
ORDER BY recorded.n
