-- Usage records (docs/api.md, "Usage"): one row per job, written in the commit that starts
-- it and again in the one that ends it, and one row (index 0, no worker, no start) per
-- request that ended without starting. Kept apart from requests, which the retention
-- purges, under a retention of their own (usage_retention). grp is the group that granted
-- the board, fixed when the job starts; ended_at is NULL while the job runs. Not part of
-- the live state, so standbys do not follow it (no change numbers).
CREATE TABLE job_usage (
    request_id BIGINT NOT NULL,
    job_index INTEGER NOT NULL,
    owner TEXT NOT NULL,
    grp TEXT NOT NULL,
    worker_uuid TEXT NOT NULL,
    submitted_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    ended_at DOUBLE PRECISION,
    state INTEGER NOT NULL,
    PRIMARY KEY (request_id, job_index)
);
-- A period's rows are those running (NULL) or ended after its start; the purge takes the
-- oldest ends.
CREATE INDEX job_usage_by_end ON job_usage (ended_at);
-- The requests kept from before this version give their records once: jobs of the first
-- profile (job_* columns) and of the others (more_jobs), and requests that ended unstarted.
-- Their group is worked out from the board's groups as they are now.
INSERT INTO job_usage
WITH jobs (id, idx, owner, owner_groups, uuid, submitted, started, ended, state) AS (
    SELECT id, 0, owner, owner_groups, job_worker_uuid, created_at, job_started_at,
        CASE WHEN state > 2 THEN updated_at END, state
    FROM requests WHERE job_worker_uuid IS NOT NULL
    UNION ALL
    SELECT r.id, (j.ordinality)::integer, r.owner, r.owner_groups, j.value ->> 'worker_uuid',
        r.created_at, (j.value ->> 'started_at')::double precision,
        CASE WHEN r.state > 2 THEN r.updated_at END, r.state
    FROM requests AS r,
        json_array_elements(r.more_jobs::json) WITH ORDINALITY AS j (value, ordinality)
    WHERE r.job_worker_uuid IS NOT NULL AND r.more_jobs IS NOT NULL
    UNION ALL
    SELECT id, 0, owner, owner_groups, '', created_at, NULL, updated_at, state
    FROM requests WHERE job_worker_uuid IS NULL AND state > 2
)
SELECT jobs.id, jobs.idx, jobs.owner,
    CASE
        WHEN jobs.uuid = '' THEN '(none)'
        WHEN w.uuid IS NULL THEN '(none)'
        WHEN w.groups_json = '[]' THEN '(open)'
        ELSE COALESCE((
            SELECT MIN(g COLLATE "C") FROM json_array_elements_text(w.groups_json::json) AS g
            WHERE g IN (SELECT o FROM json_array_elements_text(jobs.owner_groups::json) AS o)
        ), '(none)')
    END,
    jobs.uuid, jobs.submitted, jobs.started, jobs.ended, jobs.state
FROM jobs LEFT JOIN workers AS w ON w.uuid = jobs.uuid;
