-- Mismatch samples: entities whose shadow reads differed, as clients report them with their
-- telemetry (the first few per report), so an operator can find and repair them. One row per
-- entity and migration, the newest 1,000 entities kept per migration.
CREATE TABLE mismatch_samples (
    migration_key  TEXT   NOT NULL,
    entity_key     TEXT   NOT NULL,
    description    TEXT   NOT NULL,
    seen           BIGINT NOT NULL,
    first_seen_ms  BIGINT NOT NULL,
    last_seen_ms   BIGINT NOT NULL,
    service        TEXT   NOT NULL,
    instance_id    TEXT   NOT NULL,
    PRIMARY KEY (migration_key, entity_key)
);
CREATE INDEX mismatch_samples_recent ON mismatch_samples (migration_key, last_seen_ms);
