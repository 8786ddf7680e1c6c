-- Bearer tokens issued by admins. Only a hash of each secret is kept; ids come from the
-- scheduler's core.
CREATE TABLE tokens (
    id BIGINT PRIMARY KEY,
    "user" TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    admin BOOLEAN NOT NULL,
    secret_hash BYTEA NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION,
    issued_by TEXT NOT NULL,
    description TEXT NOT NULL
);
