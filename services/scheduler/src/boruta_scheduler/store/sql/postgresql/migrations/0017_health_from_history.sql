-- Board health rebuilt from the worker history for boards whose record migration 0015 left
-- empty ('{}'): their latest 64 entries into FAILED (to_state 4), oldest first, each kind
-- told by its reason as the scheduler words it ("heartbeat lost: ...", "<call> failed:
-- ...", "Prepare returned no access"; anything else came from the dryad's SetFail). Records
-- written since 0015 are left alone; every failure of their board is already in them.
-- The partial index, made for this update alone, lets it read only the failures: walking
-- each board's whole history would read every row of a long-lived farm's history once,
-- in index order.
CREATE INDEX worker_history_failed ON worker_history (worker_uuid, seq) WHERE to_state = 4;
UPDATE workers SET health = json_build_object(
    'failures', (
        SELECT json_agg(json_build_array(latest.time, latest.kind, latest.reason)
                        ORDER BY latest.seq)
        FROM (
            SELECT seq, time, reason,
                CASE
                    WHEN reason LIKE 'heartbeat lost%' THEN 'heartbeat'
                    WHEN reason LIKE 'Prepare failed: %'
                        OR reason LIKE 'Healthcheck failed: %'
                        OR reason LIKE 'PutInMaintenance failed: %' THEN 'dryad_call'
                    WHEN reason = 'Prepare returned no access' THEN 'other'
                    ELSE 'reported'
                END AS kind
            FROM worker_history
            WHERE worker_uuid = workers.uuid AND to_state = 4
            ORDER BY seq DESC LIMIT 64
        ) AS latest
    ),
    'quarantined', false,
    'recoverable', false
)::text
WHERE health = '{}'
    AND EXISTS (SELECT 1 FROM worker_history WHERE worker_uuid = workers.uuid AND to_state = 4);
DROP INDEX worker_history_failed;
