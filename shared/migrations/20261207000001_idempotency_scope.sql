-- Idempotency keys get a scope: the id of the API key that sent the request ('' without API
-- keys, as every key was before). Two clients that pick the same key then never share a
-- transaction, and a 201 or 422 tells a client only about its own keys. A constant default
-- makes the new column free to add (no table rewrite).
ALTER TABLE transactions ADD COLUMN idempotency_scope text NOT NULL DEFAULT '';

CREATE UNIQUE INDEX transactions_idempotency_scope_key
    ON transactions (idempotency_scope, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX transactions_idempotency_key_key;

-- Keys are honoured for IDEMPOTENCY_KEY_RETENTION_SECONDS; then the writer clears them (the
-- transaction stays). This index finds the expired ones without scanning the ledger.
CREATE INDEX transactions_idempotency_created_at_idx
    ON transactions (created_at)
    WHERE idempotency_key IS NOT NULL;
