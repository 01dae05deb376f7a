-- Where each running backfill is: written by its runner after every batch (not audited: a
-- position, not a decision), read to resume after a crash and to show progress.
CREATE TABLE backfill_checkpoints (
    migration_key  TEXT   PRIMARY KEY,
    cursor         TEXT   NOT NULL,
    rows_done      BIGINT NOT NULL,
    rows_total     BIGINT NOT NULL,
    -- Rows per second, smoothed, in thousandths.
    rate_milli     BIGINT NOT NULL,
    runner         TEXT   NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
