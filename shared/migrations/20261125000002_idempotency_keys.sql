-- Idempotent POST /transactions: a client may send an `Idempotency-Key` header, stored with the
-- transaction it created. The unique index makes concurrent retries of one key apply once: the
-- second insert waits for the first to commit, then fails on the index, and the writer answers
-- with the transaction that won. Stored in the same row (not a separate table with expiry) so the
-- key is exactly as durable as the transaction it protects.
ALTER TABLE transactions ADD COLUMN idempotency_key text;
CREATE UNIQUE INDEX transactions_idempotency_key_key
    ON transactions (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
