-- Stacks: named sets of workers wired together, made by admins (docs/admin-guide.md). The
-- members are a JSON list of worker UUIDs; collateral is not stored, it follows from the
-- running jobs. Standbys follow them by change number and tombstone, as tokens (0008).
CREATE TABLE stacks (
    name TEXT PRIMARY KEY,
    workers_json TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    change_seq BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX stacks_by_change ON stacks (change_seq);
CREATE TRIGGER stacks_change BEFORE INSERT OR UPDATE ON stacks
    FOR EACH ROW EXECUTE FUNCTION boruta_stamp_change();
CREATE TRIGGER stacks_tombstone AFTER DELETE ON stacks
    FOR EACH ROW EXECUTE FUNCTION boruta_tombstone('stack', 'name');
