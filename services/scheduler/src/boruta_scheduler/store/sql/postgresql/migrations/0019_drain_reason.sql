-- Maintenance after the current job (a drain): the reason a RUNNING worker goes into
-- MAINTENANCE with when its job ends; '' for none (then it is prepared again).
ALTER TABLE workers ADD COLUMN drain_reason TEXT NOT NULL DEFAULT '';
