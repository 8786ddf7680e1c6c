-- The host keys of a board's sshd travel with its prepared access and the job's access, so
-- that AccessInfo handed out after a restart still lets clients check the board (JSON
-- arrays of OpenSSH public key lines; NULL in rows from before, read as none).
ALTER TABLE workers ADD COLUMN prepared_host_keys TEXT;
ALTER TABLE requests ADD COLUMN access_host_keys TEXT;
-- The job timeout a request asked for (seconds; 0: the policy's job_timeout and prolong_step).
ALTER TABLE requests ADD COLUMN job_timeout DOUBLE PRECISION NOT NULL DEFAULT 0;
