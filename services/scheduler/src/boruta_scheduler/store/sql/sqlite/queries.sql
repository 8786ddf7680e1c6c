-- Named queries of the SQLite store; each starts with a "-- name:" line.

-- name: upsert_request
-- An update in place, not REPLACE's delete and insert: indexes on columns that did not
-- change (the owner's, the id's) are left alone, and a clash on another unique index (one
-- request per owner and idempotency key) fails the commit instead of deleting the other row.
INSERT INTO requests (
    id, owner, owner_groups, caps, priority, valid_after, deadline, state, reason,
    created_at, updated_at, job_worker_uuid, job_started_at, job_timeout_at,
    job_max_timeout_at, job_prolong_count, job_ssh_address, access_username, access_key,
    access_host_keys, job_tunnel_port, job_timeout, idempotency_key, arguments_hash,
    profiles, more_jobs, together
) VALUES (
    :id, :owner, :owner_groups, :caps, :priority, :valid_after, :deadline, :state, :reason,
    :created_at, :updated_at, :job_worker_uuid, :job_started_at, :job_timeout_at,
    :job_max_timeout_at, :job_prolong_count, :job_ssh_address, :access_username, :access_key,
    :access_host_keys, :job_tunnel_port, :job_timeout, :idempotency_key, :arguments_hash,
    :profiles, :more_jobs, :together
) ON CONFLICT (id) DO UPDATE SET
    owner = excluded.owner,
    owner_groups = excluded.owner_groups,
    caps = excluded.caps,
    priority = excluded.priority,
    valid_after = excluded.valid_after,
    deadline = excluded.deadline,
    state = excluded.state,
    reason = excluded.reason,
    created_at = excluded.created_at,
    updated_at = excluded.updated_at,
    job_worker_uuid = excluded.job_worker_uuid,
    job_started_at = excluded.job_started_at,
    job_timeout_at = excluded.job_timeout_at,
    job_max_timeout_at = excluded.job_max_timeout_at,
    job_prolong_count = excluded.job_prolong_count,
    job_ssh_address = excluded.job_ssh_address,
    access_username = excluded.access_username,
    access_key = excluded.access_key,
    access_host_keys = excluded.access_host_keys,
    job_tunnel_port = excluded.job_tunnel_port,
    job_timeout = excluded.job_timeout,
    idempotency_key = excluded.idempotency_key,
    arguments_hash = excluded.arguments_hash,
    profiles = excluded.profiles,
    more_jobs = excluded.more_jobs,
    together = excluded.together;

-- name: upsert_worker
INSERT INTO workers (
    uuid, state, groups_json, caps, dryad_address, ssh_address, instance_id, dryad_version,
    reason, request_id, registered_at, last_seen, jobs_done, failures, prepared_username,
    prepared_key, prepared_host_keys, health, drain_reason
) VALUES (
    :uuid, :state, :groups_json, :caps, :dryad_address, :ssh_address, :instance_id,
    :dryad_version, :reason, :request_id, :registered_at, :last_seen, :jobs_done, :failures,
    :prepared_username, :prepared_key, :prepared_host_keys, :health, :drain_reason
) ON CONFLICT (uuid) DO UPDATE SET
    state = excluded.state,
    groups_json = excluded.groups_json,
    caps = excluded.caps,
    dryad_address = excluded.dryad_address,
    ssh_address = excluded.ssh_address,
    instance_id = excluded.instance_id,
    dryad_version = excluded.dryad_version,
    reason = excluded.reason,
    request_id = excluded.request_id,
    registered_at = excluded.registered_at,
    last_seen = excluded.last_seen,
    jobs_done = excluded.jobs_done,
    failures = excluded.failures,
    prepared_username = excluded.prepared_username,
    prepared_key = excluded.prepared_key,
    prepared_host_keys = excluded.prepared_host_keys,
    health = excluded.health,
    drain_reason = excluded.drain_reason;

-- name: touch_worker
UPDATE workers SET last_seen = :last_seen WHERE uuid = :uuid;

-- name: delete_worker
DELETE FROM workers WHERE uuid = :uuid;

-- name: delete_worker_history
DELETE FROM worker_history WHERE worker_uuid = :uuid;

-- name: insert_history
INSERT INTO worker_history (worker_uuid, time, from_state, to_state, reason)
VALUES (:worker_uuid, :time, :from_state, :to_state, :reason);

-- name: set_last_request_id
UPDATE counters SET value = MAX(value, :value) WHERE name = 'last_request_id';

-- name: get_last_request_id
SELECT value FROM counters WHERE name = 'last_request_id';

-- name: live_requests
-- The partial index holds exactly the live rows, in id order: no sort.
SELECT * FROM requests INDEXED BY requests_live WHERE state IN (1, 2) ORDER BY id;

-- name: all_workers
SELECT * FROM workers ORDER BY uuid;

-- name: get_request
SELECT * FROM requests WHERE id = :id;

-- name: find_request
SELECT * FROM requests WHERE owner = :owner AND idempotency_key = :key;

-- name: worker_history
SELECT * FROM worker_history
WHERE worker_uuid = :uuid AND seq < :before
ORDER BY seq DESC
LIMIT :limit;

-- name: upsert_token
-- A token's only changes after it is issued are its revocation and its sealed secret's
-- clearing.
INSERT INTO tokens (
    id, user, groups_json, admin, secret_hash, created_at, expires_at, revoked_at, issued_by,
    description, idempotency_key_hash, arguments_hash, sealed_secret
) VALUES (
    :id, :user, :groups_json, :admin, :secret_hash, :created_at, :expires_at, :revoked_at,
    :issued_by, :description, :idempotency_key_hash, :arguments_hash, :sealed_secret
)
ON CONFLICT (id) DO UPDATE SET
    revoked_at = excluded.revoked_at, sealed_secret = excluded.sealed_secret;

-- name: delete_token
DELETE FROM tokens WHERE id = :id;

-- name: set_last_token_id
UPDATE counters SET value = MAX(value, :value) WHERE name = 'last_token_id';

-- name: get_last_token_id
SELECT value FROM counters WHERE name = 'last_token_id';

-- name: select_tokens
SELECT * FROM tokens ORDER BY id;

-- name: upsert_stack
INSERT INTO stacks (name, workers_json, created_at) VALUES (:name, :workers_json, :created_at)
ON CONFLICT (name) DO UPDATE SET workers_json = excluded.workers_json,
    created_at = excluded.created_at;

-- name: delete_stack
DELETE FROM stacks WHERE name = :name;

-- name: select_stacks
SELECT * FROM stacks ORDER BY name;

-- name: insert_audit
INSERT INTO audit (time, actor, role, action, target, detail)
VALUES (:time, :actor, :role, :action, :target, :detail);

-- name: select_audit
SELECT * FROM audit WHERE id < :before ORDER BY id DESC LIMIT :limit;

-- name: purge_requests
DELETE FROM requests WHERE id IN (
    SELECT id FROM requests WHERE state > 2 AND updated_at < :before LIMIT :limit
);

-- name: purge_history
-- Entries are added in time order, so the oldest are the first by seq (and by id): only
-- the first :limit rows are looked at, however long the table.
DELETE FROM worker_history WHERE seq IN (
    SELECT seq FROM (SELECT seq, time FROM worker_history ORDER BY seq LIMIT :limit)
    WHERE time < :before
);

-- name: purge_audit
DELETE FROM audit WHERE id IN (
    SELECT id FROM (SELECT id, time FROM audit ORDER BY id LIMIT :limit)
    WHERE time < :before
);

-- name: record_usage
-- A job's first record (its start, or its end if it started before usage was recorded)
-- is inserted; its end updates the record, keeping the group fixed at the start.
INSERT INTO job_usage (
    request_id, job_index, owner, grp, worker_uuid, submitted_at, started_at, ended_at, state
) VALUES (
    :request_id, :job_index, :owner, :grp, :worker_uuid, :submitted_at, :started_at,
    :ended_at, :state
) ON CONFLICT (request_id, job_index) DO UPDATE SET
    ended_at = excluded.ended_at,
    state = excluded.state;

-- name: usage_totals
-- Sums over [:since, :until) by owner or group (:by), rows of :owner only unless it is ''.
-- Board time is each job's time inside the period, a running job's up to :now; jobs and
-- requests count those that started in it; waits are created to started (index 0: once
-- per request); unstarted requests count where they ended. Only rows that may touch the
-- period are read: those running or ended since it began (the index on ended_at).
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
        CASE WHEN :by = 'group' THEN grp ELSE owner END AS key,
        job_index, submitted_at, started_at, ended_at,
        CASE WHEN started_at IS NULL THEN 0.0
            ELSE MAX(0.0, MIN(COALESCE(ended_at, :now), :until) - MAX(started_at, :since))
        END AS board,
        CASE WHEN started_at >= :since AND started_at < :until THEN 1 ELSE 0 END AS started_in,
        CASE WHEN started_at IS NULL AND ended_at >= :since AND ended_at < :until THEN 1 ELSE 0
        END AS unstarted
    FROM job_usage
    WHERE (ended_at IS NULL OR ended_at >= :since)
        AND COALESCE(started_at, ended_at) < :until
        AND (:owner = '' OR owner = :owner)
)
GROUP BY key
ORDER BY key;

-- name: purge_usage
DELETE FROM job_usage WHERE rowid IN (
    SELECT rowid FROM job_usage WHERE ended_at < :before LIMIT :limit
);
