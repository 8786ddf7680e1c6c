-- Requests of several boards: every profile as a JSON list of [name, caps] (NULL: one
-- unnamed profile, its caps in the caps column), and the jobs of the profiles after the
-- first as a JSON list of objects (NULL: none; the first job stays in the job_* columns).
ALTER TABLE requests ADD COLUMN profiles TEXT;
ALTER TABLE requests ADD COLUMN more_jobs TEXT;
