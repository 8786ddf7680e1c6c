-- The idempotency key a request was created with (NULL: none) and a hash of the arguments
-- it was asked with: a NewRequest retried with the key finds the request instead of making
-- a second one. One request per owner and key; purged with its request.
ALTER TABLE requests ADD COLUMN idempotency_key TEXT;
ALTER TABLE requests ADD COLUMN arguments_hash TEXT;
CREATE UNIQUE INDEX requests_by_idempotency_key ON requests (owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
