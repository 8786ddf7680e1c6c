-- Initial schema, as SQLite's version 1. Times are double precision seconds since the Unix
-- epoch (UTC), so they come back exactly as written; states use the numbers of the
-- boruta.v1 enums; JSON is kept as the text the codec writes. Text that lists are sorted by
-- uses the C collation: code point order, as the other stores sort.

CREATE TABLE requests (
    id                  BIGINT           PRIMARY KEY,
    owner               TEXT COLLATE "C" NOT NULL,
    owner_groups        TEXT             NOT NULL,  -- JSON array, sorted
    caps                TEXT             NOT NULL,  -- JSON object, keys sorted
    priority            INTEGER          NOT NULL,
    valid_after         DOUBLE PRECISION NOT NULL,
    deadline            DOUBLE PRECISION NOT NULL,
    state               INTEGER          NOT NULL,
    reason              TEXT             NOT NULL,
    created_at          DOUBLE PRECISION NOT NULL,
    updated_at          DOUBLE PRECISION NOT NULL,
    job_worker_uuid     TEXT,
    job_started_at      DOUBLE PRECISION,
    job_timeout_at      DOUBLE PRECISION,
    job_max_timeout_at  DOUBLE PRECISION,
    job_prolong_count   INTEGER,
    job_ssh_address     TEXT,
    access_username     TEXT,                       -- only while IN_PROGRESS
    access_key          TEXT                        -- only while IN_PROGRESS
);
CREATE INDEX requests_live ON requests (id) WHERE state IN (1, 2);
CREATE INDEX requests_by_state ON requests (state, id);
CREATE INDEX requests_by_owner ON requests (owner, id);

CREATE TABLE workers (
    uuid                TEXT COLLATE "C" PRIMARY KEY,
    state               INTEGER          NOT NULL,
    groups_json         TEXT             NOT NULL,  -- JSON array, sorted
    caps                TEXT             NOT NULL,  -- JSON object, keys sorted
    dryad_address       TEXT             NOT NULL,
    ssh_address         TEXT             NOT NULL,
    instance_id         TEXT             NOT NULL,
    dryad_version       TEXT             NOT NULL,
    reason              TEXT             NOT NULL,
    request_id          BIGINT           NOT NULL,
    registered_at       DOUBLE PRECISION NOT NULL,
    last_seen           DOUBLE PRECISION NOT NULL,
    jobs_done           INTEGER          NOT NULL,
    failures            INTEGER          NOT NULL,
    prepared_username   TEXT,                       -- only while IDLE
    prepared_key        TEXT                        -- only while IDLE
);

CREATE TABLE worker_history (
    seq                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    worker_uuid         TEXT             NOT NULL,
    time                DOUBLE PRECISION NOT NULL,
    from_state          INTEGER,                    -- NULL for the first registration
    to_state            INTEGER          NOT NULL,
    reason              TEXT             NOT NULL
);
CREATE INDEX worker_history_by_worker ON worker_history (worker_uuid, seq);

CREATE TABLE counters (
    name                TEXT             PRIMARY KEY,
    value               BIGINT           NOT NULL
);
INSERT INTO counters (name, value) VALUES ('last_request_id', 0);
