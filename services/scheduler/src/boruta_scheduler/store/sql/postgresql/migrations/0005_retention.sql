-- Finished requests by when they last changed, for the purge of those older than the
-- retention (terminal states are 3 and up, and never change again).
CREATE INDEX IF NOT EXISTS requests_finished ON requests (updated_at) WHERE state > 2;
