-- Initial schema. Times are REAL seconds since the Unix epoch (UTC); states use the
-- numbers of the boruta.v1 enums. The file holds per-job private keys: it is created 0600.

CREATE TABLE requests (
    id                  INTEGER PRIMARY KEY,
    owner               TEXT    NOT NULL,
    owner_groups        TEXT    NOT NULL,  -- JSON array, sorted
    caps                TEXT    NOT NULL,  -- JSON object, keys sorted
    priority            INTEGER NOT NULL,
    valid_after         REAL    NOT NULL,
    deadline            REAL    NOT NULL,
    state               INTEGER NOT NULL,
    reason              TEXT    NOT NULL,
    created_at          REAL    NOT NULL,
    updated_at          REAL    NOT NULL,
    job_worker_uuid     TEXT,
    job_started_at      REAL,
    job_timeout_at      REAL,
    job_max_timeout_at  REAL,
    job_prolong_count   INTEGER,
    job_ssh_address     TEXT,
    access_username     TEXT,              -- only while IN_PROGRESS
    access_key          TEXT               -- only while IN_PROGRESS
);
CREATE INDEX requests_live ON requests (id) WHERE state IN (1, 2);
CREATE INDEX requests_by_state ON requests (state, id);
CREATE INDEX requests_by_owner ON requests (owner, id);

CREATE TABLE workers (
    uuid                TEXT    PRIMARY KEY,
    state               INTEGER NOT NULL,
    groups_json         TEXT    NOT NULL,  -- JSON array, sorted
    caps                TEXT    NOT NULL,  -- JSON object, keys sorted
    dryad_address       TEXT    NOT NULL,
    ssh_address         TEXT    NOT NULL,
    instance_id         TEXT    NOT NULL,
    dryad_version       TEXT    NOT NULL,
    reason              TEXT    NOT NULL,
    request_id          INTEGER NOT NULL,
    registered_at       REAL    NOT NULL,
    last_seen           REAL    NOT NULL,
    jobs_done           INTEGER NOT NULL,
    failures            INTEGER NOT NULL,
    prepared_username   TEXT,              -- only while IDLE
    prepared_key        TEXT               -- only while IDLE
);

CREATE TABLE worker_history (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    worker_uuid         TEXT    NOT NULL,
    time                REAL    NOT NULL,
    from_state          INTEGER,           -- NULL for the first registration
    to_state            INTEGER NOT NULL,
    reason              TEXT    NOT NULL
);
CREATE INDEX worker_history_by_worker ON worker_history (worker_uuid, seq);

CREATE TABLE counters (
    name                TEXT    PRIMARY KEY,
    value               INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('last_request_id', 0);
