-- Which migrations each client instance evaluates (from its heartbeats).
CREATE TABLE client_instance_migrations (
    service       TEXT   NOT NULL,
    instance_id   TEXT   NOT NULL,
    migration_key TEXT   NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    PRIMARY KEY (migration_key, service, instance_id)
);

-- Client telemetry rolled up per minute and service; `counts` is the JSON of the domain's
-- TrafficCounts (per side reads, writes, errors, latency histogram; comparisons, mismatches...).
CREATE TABLE traffic_minutes (
    migration_key TEXT   NOT NULL,
    minute_ms     BIGINT NOT NULL,
    service       TEXT   NOT NULL,
    counts        TEXT   NOT NULL,
    PRIMARY KEY (migration_key, minute_ms, service)
);
CREATE INDEX traffic_minutes_by_minute ON traffic_minutes (minute_ms);
