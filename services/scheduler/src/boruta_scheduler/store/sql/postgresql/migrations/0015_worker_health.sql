-- Board health (core/health.py): each worker's latest failures and what they led to, as a
-- JSON object {"failures": [[time, kind, reason], ...oldest first], "quarantined": bool,
-- "recoverable": bool}; '{}' in rows from before, read as no failures kept.
ALTER TABLE workers ADD COLUMN health TEXT NOT NULL DEFAULT '{}';
