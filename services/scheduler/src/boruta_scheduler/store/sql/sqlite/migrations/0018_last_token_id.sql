-- The highest token id handed out, kept apart from the tokens: the token retention purges
-- tokens that stopped working long ago, the newest one too, and an id must never be
-- handed out twice (a token id names its token in the audit log and in bearer secrets).
-- Run again on a store that has the row (a test undoing later migrations), it keeps the
-- higher value.
INSERT INTO counters (name, value) SELECT 'last_token_id', COALESCE(MAX(id), 0) FROM tokens WHERE true
ON CONFLICT (name) DO UPDATE SET value = MAX(counters.value, excluded.value);
