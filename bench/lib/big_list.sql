-- Fills the scratch database bench_big (already created from shared/migrations) with :rows
-- transactions and the accounts they imply, with consistent balances and versions, in a few
-- set-based statements. Deterministic: the same ids every time.
--
--   every 10th transaction      -> the "big" account,    md5('big')::uuid    (rows/10 of them)
--   transaction 1               -> the "single" account, md5('single')::uuid (exactly one)
--   the others                  -> 9,973 pool accounts,  md5(k::text)::uuid
--
-- psql -v rows=1000000 -f big_list.sql
\set ON_ERROR_STOP on
BEGIN;
SET LOCAL synchronous_commit = off;
SET LOCAL work_mem = '64MB';
CREATE TEMP TABLE gen ON COMMIT DROP AS
SELECT n,
       CASE WHEN n = 1 THEN md5('single')::uuid
            WHEN n % 10 = 0 THEN md5('big')::uuid
            ELSE md5((n % 9973 + 1)::text)::uuid
       END AS account_id,
       (n % 1000 + 1)::bigint AS amount
FROM generate_series(1, :rows) AS n;
INSERT INTO accounts (account_id, balance, version)
SELECT account_id, sum(amount), count(*) FROM gen GROUP BY account_id;
-- In creation order, so `seq` (the list's order) follows n.
INSERT INTO transactions (transaction_id, account_id, amount, created_at)
SELECT md5('tx-' || n)::uuid, account_id, amount,
       timestamptz '2026-01-01 00:00:00+00' + n * interval '1 millisecond'
FROM gen ORDER BY n;
CREATE TABLE bench_meta (rows bigint NOT NULL, loader text NOT NULL);
INSERT INTO bench_meta VALUES (:rows, :'loader');
COMMIT;
-- Hint bits and statistics now, so the first measured stream does not pay for them.
VACUUM (ANALYZE) transactions;
VACUUM (ANALYZE) accounts;
