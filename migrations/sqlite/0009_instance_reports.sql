-- When each instance's telemetry reports arrived (server clock), the latest and the one before:
-- a report covers the operations since the previous one, so the gate knows whether an
-- instance has reported everything it did since `complete` reached 100%.
ALTER TABLE client_instances ADD COLUMN reported_ms BIGINT;
ALTER TABLE client_instances ADD COLUMN previous_reported_ms BIGINT;

-- Each instance's latest report of old-shape operations per migration, with the interval they
-- happened in: the old-shape traffic check judges exact times, not whole minutes.
CREATE TABLE instance_old_use (
    migration_key  TEXT   NOT NULL,
    service        TEXT   NOT NULL,
    instance_id    TEXT   NOT NULL,
    since_ms       BIGINT NOT NULL,
    until_ms       BIGINT NOT NULL,
    reads          BIGINT NOT NULL,
    writes         BIGINT NOT NULL,
    PRIMARY KEY (migration_key, service, instance_id)
);
