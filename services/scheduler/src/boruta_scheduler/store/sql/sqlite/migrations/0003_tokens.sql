-- Bearer tokens issued by admins. Only a hash of each secret is kept.
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    admin INTEGER NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL,
    issued_by TEXT NOT NULL,
    description TEXT NOT NULL
);
