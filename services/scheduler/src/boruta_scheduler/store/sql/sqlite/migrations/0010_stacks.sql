-- Stacks: named sets of workers wired together, made by admins (docs/admin-guide.md). The
-- members are a JSON list of worker UUIDs; collateral is not stored, it follows from the
-- running jobs.
CREATE TABLE stacks (
    name TEXT PRIMARY KEY,
    workers_json TEXT NOT NULL,
    created_at REAL NOT NULL
);
