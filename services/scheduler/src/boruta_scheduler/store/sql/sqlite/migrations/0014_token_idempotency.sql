-- IssueToken's idempotency key (docs/security.md, "Retried IssueToken"): a hash of the key
-- with the issuing admin's name (NULL: issued without a key), a hash of the call's
-- arguments, and the token's secret sealed with a pad only the key gives, kept for the few
-- minutes a retry may come in and then cleared (NULL).
ALTER TABLE tokens ADD COLUMN idempotency_key_hash BLOB;
ALTER TABLE tokens ADD COLUMN arguments_hash TEXT;
ALTER TABLE tokens ADD COLUMN sealed_secret BLOB;
CREATE UNIQUE INDEX tokens_by_idempotency_key ON tokens (issued_by, idempotency_key_hash)
    WHERE idempotency_key_hash IS NOT NULL;
