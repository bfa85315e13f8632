-- The outbox gets one row per commit instead of one per transaction. A group commit records up
-- to 256 transactions in one statement; their outbox rows cost an insert, two index entries and
-- a delete each, a fifth of PostgreSQL's work per POST (bench/README.md, issue 14). One row
-- listing the commit's transaction ids keeps the same guarantee (written in the same statement,
-- deleted once the whole commit is in Redis, republished by the repair loop otherwise) for one
-- insert and one delete per commit.
CREATE TABLE publish_batches (
    batch_id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_ids uuid[]      NOT NULL CHECK (cardinality(transaction_ids) > 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX publish_batches_created_at_idx ON publish_batches (created_at);

-- Changes a writer of the previous version left unpublished stay pending, as one batch.
INSERT INTO publish_batches (transaction_ids, created_at)
SELECT array_agg(transaction_id ORDER BY created_at), min(created_at)
FROM publish_outbox
HAVING count(*) > 0;

DROP TABLE publish_outbox;

-- The pending transactions one row each, as the table used to hold them: for operators and
-- tests (`SELECT count(*) FROM publish_outbox`). Read-only; writers use publish_batches.
CREATE VIEW publish_outbox AS
SELECT b.batch_id, t.transaction_id, b.created_at
FROM publish_batches b CROSS JOIN LATERAL unnest(b.transaction_ids) AS t (transaction_id);
