-- Named queries of a standby following the leader's commits by their change numbers
-- (migration 0008, store/pgfollow.py). Each set runs in one repeatable-read snapshot.

-- name: high_water
-- The change number a snapshot is as of: the highest any committed change carries (the
-- purge's mark included, so that a purge already in the snapshot is not a gap later).
SELECT GREATEST(
    (SELECT COALESCE(max(change_seq), 0) FROM requests),
    (SELECT COALESCE(max(change_seq), 0) FROM workers),
    (SELECT COALESCE(max(change_seq), 0) FROM tokens),
    (SELECT COALESCE(max(change_seq), 0) FROM stacks),
    (SELECT COALESCE(max(change_seq), 0) FROM change_tombstones),
    (SELECT value FROM counters WHERE name = 'purged_change_seq')
) AS seq;

-- name: changed_requests
-- Up to the last number handed out, which bounds every committed one: a range, which the
-- planner reads through the index on change_seq even before it has statistics on the
-- column (a table just migrated), where "> since" alone would read the whole table.
SELECT * FROM requests
WHERE change_seq > %(since)s AND change_seq <= (SELECT last_value FROM boruta_change_seq)
ORDER BY change_seq;

-- name: changed_workers
SELECT * FROM workers WHERE change_seq > %(since)s;

-- name: changed_tokens
SELECT * FROM tokens
WHERE change_seq > %(since)s AND change_seq <= (SELECT last_value FROM boruta_change_seq);

-- name: changed_stacks
SELECT * FROM stacks
WHERE change_seq > %(since)s AND change_seq <= (SELECT last_value FROM boruta_change_seq);

-- name: tombstones
SELECT kind, key, change_seq FROM change_tombstones
WHERE change_seq > %(since)s AND change_seq <= (SELECT last_value FROM boruta_change_seq);

-- name: counters
-- With when the server started: a copy read from a server since restarted, or from another
-- one (a failover to a replica, which may lack the last commits), is loaded again.
SELECT
    (SELECT value FROM counters WHERE name = 'last_request_id') AS last_request_id,
    (SELECT value FROM counters WHERE name = 'last_token_id') AS last_token_id,
    (SELECT value FROM counters WHERE name = 'purged_change_seq') AS purged_change_seq,
    extract(epoch FROM pg_postmaster_start_time())::DOUBLE PRECISION AS origin;
