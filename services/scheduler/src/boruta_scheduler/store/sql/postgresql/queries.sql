-- Named queries of the PostgreSQL store; each starts with a "-- name:" line. Parameters
-- are psycopg's %(name)s.

-- name: lock_schema
-- Schedulers starting together against one database migrate one after another.
SELECT pg_advisory_xact_lock(7291046512);

-- name: create_schema_version
CREATE TABLE IF NOT EXISTS schema_version (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    version  INTEGER NOT NULL
);
INSERT INTO schema_version (only_row, version) VALUES (TRUE, 0) ON CONFLICT DO NOTHING;

-- name: get_schema_version
SELECT version FROM schema_version;

-- name: set_schema_version
UPDATE schema_version SET version = %(version)s;

-- name: upsert_request
INSERT INTO requests (
    id, owner, owner_groups, caps, priority, valid_after, deadline, state, reason,
    created_at, updated_at, job_worker_uuid, job_started_at, job_timeout_at,
    job_max_timeout_at, job_prolong_count, job_ssh_address, access_username, access_key,
    access_host_keys, job_tunnel_port, job_timeout, idempotency_key, arguments_hash,
    profiles, more_jobs, together
) VALUES (
    %(id)s, %(owner)s, %(owner_groups)s, %(caps)s, %(priority)s, %(valid_after)s,
    %(deadline)s, %(state)s, %(reason)s, %(created_at)s, %(updated_at)s,
    %(job_worker_uuid)s, %(job_started_at)s, %(job_timeout_at)s, %(job_max_timeout_at)s,
    %(job_prolong_count)s, %(job_ssh_address)s, %(access_username)s, %(access_key)s,
    %(access_host_keys)s, %(job_tunnel_port)s, %(job_timeout)s,
    %(idempotency_key)s, %(arguments_hash)s, %(profiles)s, %(more_jobs)s,
    %(together)s
) ON CONFLICT (id) DO UPDATE SET
    owner = EXCLUDED.owner,
    owner_groups = EXCLUDED.owner_groups,
    caps = EXCLUDED.caps,
    priority = EXCLUDED.priority,
    valid_after = EXCLUDED.valid_after,
    deadline = EXCLUDED.deadline,
    state = EXCLUDED.state,
    reason = EXCLUDED.reason,
    created_at = EXCLUDED.created_at,
    updated_at = EXCLUDED.updated_at,
    job_worker_uuid = EXCLUDED.job_worker_uuid,
    job_started_at = EXCLUDED.job_started_at,
    job_timeout_at = EXCLUDED.job_timeout_at,
    job_max_timeout_at = EXCLUDED.job_max_timeout_at,
    job_prolong_count = EXCLUDED.job_prolong_count,
    job_ssh_address = EXCLUDED.job_ssh_address,
    access_username = EXCLUDED.access_username,
    access_key = EXCLUDED.access_key,
    access_host_keys = EXCLUDED.access_host_keys,
    job_tunnel_port = EXCLUDED.job_tunnel_port,
    job_timeout = EXCLUDED.job_timeout,
    idempotency_key = EXCLUDED.idempotency_key,
    arguments_hash = EXCLUDED.arguments_hash,
    profiles = EXCLUDED.profiles,
    more_jobs = EXCLUDED.more_jobs,
    together = EXCLUDED.together;

-- name: upsert_worker
INSERT INTO workers (
    uuid, state, groups_json, caps, dryad_address, ssh_address, instance_id, dryad_version,
    reason, request_id, registered_at, last_seen, jobs_done, failures, prepared_username,
    prepared_key, prepared_host_keys, health, drain_reason
) VALUES (
    %(uuid)s, %(state)s, %(groups_json)s, %(caps)s, %(dryad_address)s, %(ssh_address)s,
    %(instance_id)s, %(dryad_version)s, %(reason)s, %(request_id)s, %(registered_at)s,
    %(last_seen)s, %(jobs_done)s, %(failures)s, %(prepared_username)s, %(prepared_key)s,
    %(prepared_host_keys)s, %(health)s, %(drain_reason)s
) ON CONFLICT (uuid) DO UPDATE SET
    state = EXCLUDED.state,
    groups_json = EXCLUDED.groups_json,
    caps = EXCLUDED.caps,
    dryad_address = EXCLUDED.dryad_address,
    ssh_address = EXCLUDED.ssh_address,
    instance_id = EXCLUDED.instance_id,
    dryad_version = EXCLUDED.dryad_version,
    reason = EXCLUDED.reason,
    request_id = EXCLUDED.request_id,
    registered_at = EXCLUDED.registered_at,
    last_seen = EXCLUDED.last_seen,
    jobs_done = EXCLUDED.jobs_done,
    failures = EXCLUDED.failures,
    prepared_username = EXCLUDED.prepared_username,
    prepared_key = EXCLUDED.prepared_key,
    prepared_host_keys = EXCLUDED.prepared_host_keys,
    health = EXCLUDED.health,
    drain_reason = EXCLUDED.drain_reason;

-- name: touch_worker
UPDATE workers SET last_seen = %(last_seen)s WHERE uuid = %(uuid)s;

-- name: delete_worker
DELETE FROM workers WHERE uuid = %(uuid)s;

-- name: delete_worker_history
DELETE FROM worker_history WHERE worker_uuid = %(uuid)s;

-- name: insert_history
INSERT INTO worker_history (worker_uuid, time, from_state, to_state, reason)
VALUES (%(worker_uuid)s, %(time)s, %(from_state)s, %(to_state)s, %(reason)s);

-- name: set_last_request_id
UPDATE counters SET value = GREATEST(value, %(value)s) WHERE name = 'last_request_id';

-- name: get_last_request_id
SELECT value FROM counters WHERE name = 'last_request_id';

-- name: live_requests
SELECT * FROM requests WHERE state IN (1, 2) ORDER BY id;

-- name: all_workers
SELECT * FROM workers ORDER BY uuid;

-- name: get_request
SELECT * FROM requests WHERE id = %(id)s;

-- name: find_request
SELECT * FROM requests WHERE owner = %(owner)s AND idempotency_key = %(key)s;

-- name: worker_history
SELECT * FROM worker_history
WHERE worker_uuid = %(uuid)s AND seq < %(before)s
ORDER BY seq DESC
LIMIT %(limit)s;

-- name: upsert_token
-- A token's only changes after it is issued are its revocation and its sealed secret's
-- clearing.
INSERT INTO tokens (
    id, "user", groups_json, admin, secret_hash, created_at, expires_at, revoked_at,
    issued_by, description, idempotency_key_hash, arguments_hash, sealed_secret
) VALUES (
    %(id)s, %(user)s, %(groups_json)s, %(admin)s, %(secret_hash)s, %(created_at)s,
    %(expires_at)s, %(revoked_at)s, %(issued_by)s, %(description)s,
    %(idempotency_key_hash)s, %(arguments_hash)s, %(sealed_secret)s
) ON CONFLICT (id) DO UPDATE SET
    revoked_at = EXCLUDED.revoked_at, sealed_secret = EXCLUDED.sealed_secret;

-- name: delete_token
DELETE FROM tokens WHERE id = %(id)s;

-- name: set_last_token_id
UPDATE counters SET value = GREATEST(value, %(value)s) WHERE name = 'last_token_id';

-- name: get_last_token_id
SELECT value FROM counters WHERE name = 'last_token_id';

-- name: select_tokens
SELECT * FROM tokens ORDER BY id;

-- name: upsert_stack
INSERT INTO stacks (name, workers_json, created_at)
VALUES (%(name)s, %(workers_json)s, %(created_at)s)
ON CONFLICT (name) DO UPDATE SET workers_json = EXCLUDED.workers_json,
    created_at = EXCLUDED.created_at;

-- name: delete_stack
DELETE FROM stacks WHERE name = %(name)s;

-- name: select_stacks
SELECT * FROM stacks ORDER BY name;

-- name: insert_audit
INSERT INTO audit (time, actor, role, action, target, detail)
VALUES (%(time)s, %(actor)s, %(role)s, %(action)s, %(target)s, %(detail)s);

-- name: select_audit
SELECT * FROM audit WHERE id < %(before)s ORDER BY id DESC LIMIT %(limit)s;

-- name: purge_requests
DELETE FROM requests WHERE id IN (
    SELECT id FROM requests WHERE state > 2 AND updated_at < %(before)s LIMIT %(limit)s
);

-- name: purge_history
-- Entries are added in time order, so the oldest are the first by seq (and by id): only
-- the first `limit` rows are looked at, however long the table.
DELETE FROM worker_history WHERE seq IN (
    SELECT seq FROM (SELECT seq, time FROM worker_history ORDER BY seq LIMIT %(limit)s) AS oldest
    WHERE time < %(before)s
);

-- name: purge_audit
DELETE FROM audit WHERE id IN (
    SELECT id FROM (SELECT id, time FROM audit ORDER BY id LIMIT %(limit)s) AS oldest
    WHERE time < %(before)s
);

-- name: create_leader
-- The leader's lease (design rule 10): one row, made by the first scheduler that asks (not a
-- migration: SQLite has no leader). A scheduler leads while the row's epoch is its own;
-- taking over bumps the epoch. Times are the server's clock (now()), never a scheduler's.
CREATE TABLE IF NOT EXISTS leader (
    only_row      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    epoch         BIGINT NOT NULL,
    holder        TEXT NOT NULL,
    address       TEXT NOT NULL,
    token_address TEXT NOT NULL,
    expires       TIMESTAMPTZ NOT NULL
);
INSERT INTO leader (only_row, epoch, holder, address, token_address, expires)
VALUES (TRUE, 0, '', '', '', '-infinity') ON CONFLICT DO NOTHING;
-- The fence, first in every transaction of a leader: the row's shared lock makes a takeover
-- wait for the commit, and unless the epoch is still ours the transaction fails (SQLSTATE
-- BR001), on the server, so the check costs no round trip of its own.
CREATE OR REPLACE FUNCTION boruta_fence(ours BIGINT) RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM leader WHERE epoch = ours FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'epoch % leads, not %', (SELECT epoch FROM leader), ours
            USING ERRCODE = 'BR001';
    END IF;
END $$;

-- name: leader_acquire
-- Once the lease has run out by the server's clock, or at once from our own previous
-- process (the holder names the host and port we have bound, so that one is gone); the new
-- epoch is the fence either way.
UPDATE leader
SET epoch = epoch + 1, holder = %(holder)s, address = %(address)s,
    token_address = %(token_address)s, expires = now() + make_interval(secs => %(lease)s)
WHERE expires < now() OR holder = %(holder)s
RETURNING epoch;

-- name: leader_renew
-- Whether or not the lease ran out: while nobody took over, our epoch is still the fence.
UPDATE leader SET expires = now() + make_interval(secs => %(lease)s)
WHERE epoch = %(epoch)s
RETURNING epoch;

-- name: leader_release
-- A leader stopping cleanly hands over at once rather than after its lease.
UPDATE leader SET expires = '-infinity' WHERE epoch = %(epoch)s RETURNING epoch;

-- name: leader_get
SELECT epoch, holder, address, token_address, expires > now() AS live FROM leader;

-- name: leader_fence
-- In every transaction of a leader (boruta_fence above): whatever commits under an epoch is
-- in the next leader's load, and nothing commits under it after.
SELECT boruta_fence(%(epoch)s);

-- name: create_page_token_key
-- The key that signs list page tokens (listing.py), one for every scheduler on the database,
-- so that a list paged across a takeover goes on (not a migration: SQLite and memory keep
-- theirs in a file of the data directory). The first scheduler to ask makes it.
CREATE TABLE IF NOT EXISTS page_token_key (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    key      BYTEA NOT NULL
);

-- name: insert_page_token_key
INSERT INTO page_token_key (only_row, key) VALUES (TRUE, %(key)s) ON CONFLICT DO NOTHING;

-- name: get_page_token_key
SELECT key FROM page_token_key;

-- name: record_usage
-- A job's first record (its start, or its end if it started before usage was recorded)
-- is inserted; its end updates the record, keeping the group fixed at the start.
INSERT INTO job_usage (
    request_id, job_index, owner, grp, worker_uuid, submitted_at, started_at, ended_at, state
) VALUES (
    %(request_id)s, %(job_index)s, %(owner)s, %(grp)s, %(worker_uuid)s, %(submitted_at)s,
    %(started_at)s, %(ended_at)s, %(state)s
) ON CONFLICT (request_id, job_index) DO UPDATE SET
    ended_at = excluded.ended_at,
    state = excluded.state;

-- name: usage_totals
-- Sums over [since, until) by owner or group (by), rows of owner only unless it is ''.
-- Board time is each job's time inside the period, a running job's up to now; jobs and
-- requests count those that started in it; waits are created to started (index 0: once
-- per request); unstarted requests count where they ended. Only rows that may touch the
-- period are read: those running or ended since it began (the index on ended_at). Keys
-- sort by code point (C collation), as the other stores sort them.
SELECT key,
    SUM(board) AS board_seconds,
    SUM(started_in) AS jobs,
    SUM(CASE WHEN job_index = 0 THEN started_in ELSE 0 END) AS requests,
    SUM(CASE WHEN job_index = 0 AND started_in = 1 THEN started_at - submitted_at ELSE 0.0 END)
        AS wait_seconds,
    MAX(CASE WHEN job_index = 0 AND started_in = 1 THEN started_at - submitted_at ELSE 0.0 END)
        AS max_wait_seconds,
    SUM(unstarted) AS unstarted,
    SUM(CASE WHEN unstarted = 1 THEN ended_at - submitted_at ELSE 0.0 END)
        AS unstarted_wait_seconds
FROM (
    SELECT
        CASE WHEN %(by)s = 'group' THEN grp ELSE owner END COLLATE "C" AS key,
        job_index, submitted_at, started_at, ended_at,
        CASE WHEN started_at IS NULL THEN 0.0
            ELSE GREATEST(
                0.0,
                LEAST(COALESCE(ended_at, %(now)s), %(until)s) - GREATEST(started_at, %(since)s)
            )
        END AS board,
        CASE WHEN started_at >= %(since)s AND started_at < %(until)s THEN 1 ELSE 0 END
            AS started_in,
        CASE WHEN started_at IS NULL AND ended_at >= %(since)s AND ended_at < %(until)s
            THEN 1 ELSE 0 END AS unstarted
    FROM job_usage
    WHERE (ended_at IS NULL OR ended_at >= %(since)s)
        AND COALESCE(started_at, ended_at) < %(until)s
        AND (%(owner)s = '' OR owner = %(owner)s)
) AS touching
GROUP BY key
ORDER BY key;

-- name: purge_usage
DELETE FROM job_usage WHERE (request_id, job_index) IN (
    SELECT request_id, job_index FROM job_usage WHERE ended_at < %(before)s LIMIT %(limit)s
);
