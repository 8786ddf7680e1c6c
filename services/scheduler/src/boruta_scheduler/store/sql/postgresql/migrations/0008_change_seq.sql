-- A change sequence that standby schedulers follow to keep a warm copy of the live state
-- (app/warm.py): every row of requests, workers and tokens carries the number of its last
-- change, and deletions leave a tombstone, so that "what changed after N" is an indexed read.
--
-- The numbers come from triggers, not from the statements a commit runs: any writer stamps
-- its rows, whatever its version (a leader not yet upgraded while a standby is) and
-- whatever statement a later change adds. Only one writer commits at a time (the leader's
-- transactions hold the lease row FOR SHARE and a takeover's UPDATE of it waits for them;
-- one process writes on one connection), so numbers grow in commit order: once a reader
-- sees a change numbered N, every change numbered below N is committed and visible too.
CREATE SEQUENCE boruta_change_seq AS BIGINT;

ALTER TABLE requests ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX requests_by_change ON requests (change_seq);
CREATE INDEX tokens_by_change ON tokens (change_seq);
-- No index on workers: one row per board, read whole in an instant, and heartbeats (which
-- change only last_seen) stay HOT updates without one.

CREATE FUNCTION boruta_stamp_change() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_seq := nextval('boruta_change_seq');
    RETURN NEW;
END $$;
CREATE TRIGGER requests_change BEFORE INSERT OR UPDATE ON requests
    FOR EACH ROW EXECUTE FUNCTION boruta_stamp_change();
CREATE TRIGGER workers_change BEFORE INSERT OR UPDATE ON workers
    FOR EACH ROW EXECUTE FUNCTION boruta_stamp_change();
CREATE TRIGGER tokens_change BEFORE INSERT OR UPDATE ON tokens
    FOR EACH ROW EXECUTE FUNCTION boruta_stamp_change();

-- A deleted worker (deregistered) or token: its key and when. One row per key, kept; a key
-- made again later has a row of a later number, which is what a reader goes by.
CREATE TABLE change_tombstones (
    kind       TEXT   NOT NULL,  -- 'worker' or 'token'
    key        TEXT   NOT NULL,  -- the worker's uuid, the token's id
    change_seq BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX change_tombstones_by_change ON change_tombstones (change_seq);

CREATE FUNCTION boruta_tombstone() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_tombstones (kind, key, change_seq)
    VALUES (TG_ARGV[0], to_jsonb(OLD) ->> TG_ARGV[1], nextval('boruta_change_seq'))
    ON CONFLICT (kind, key) DO UPDATE SET change_seq = EXCLUDED.change_seq;
    RETURN OLD;
END $$;
CREATE TRIGGER workers_tombstone AFTER DELETE ON workers
    FOR EACH ROW EXECUTE FUNCTION boruta_tombstone('worker', 'uuid');
CREATE TRIGGER tokens_tombstone AFTER DELETE ON tokens
    FOR EACH ROW EXECUTE FUNCTION boruta_tombstone('token', 'id');

-- Requests are deleted only by the purge, and only once finished, so they have left the live
-- state already; but a reader that had not yet seen one finish would keep it live. The
-- purge therefore records the highest change number among the requests it deleted: a
-- reader that has not read that far cannot tell what it missed, and loads again.
INSERT INTO counters (name, value) VALUES ('purged_change_seq', 0);
CREATE FUNCTION boruta_note_purge() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    UPDATE counters SET value = GREATEST(value, (SELECT max(change_seq) FROM purged))
    WHERE name = 'purged_change_seq' AND EXISTS (SELECT 1 FROM purged);
    RETURN NULL;
END $$;
CREATE TRIGGER requests_purged AFTER DELETE ON requests
    REFERENCING OLD TABLE AS purged FOR EACH STATEMENT EXECUTE FUNCTION boruta_note_purge();
