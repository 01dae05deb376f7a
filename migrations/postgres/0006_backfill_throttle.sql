-- Backfill throttling: what the runner reports with each checkpoint (whether it holds between
-- batches for the database's health, why, since when, and for how long in all), and the
-- settings release managers change while a backfill runs (`switchyard backfill set`).
ALTER TABLE backfill_checkpoints ADD COLUMN throttle_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE backfill_checkpoints ADD COLUMN throttled_since_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE backfill_checkpoints ADD COLUMN throttled_ms BIGINT NOT NULL DEFAULT 0;

-- Kept apart from the checkpoint: settings outlive a cancel (which forgets the position) and
-- may be set before the backfill starts. JSON, so a new setting needs no migration.
CREATE TABLE backfill_settings (
    migration_key  TEXT   PRIMARY KEY,
    settings       TEXT   NOT NULL,
    updated_by     TEXT   NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    -- Why they were last changed (a change of pace is a decision like a pause).
    reason         TEXT   NOT NULL DEFAULT ''
);
