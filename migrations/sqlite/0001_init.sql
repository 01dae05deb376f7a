-- Switchyard's own store, SQLite flavour. Times are Unix milliseconds; a migration's full state
-- is its canonical JSON document in `state`, with the columns that queries filter on beside it.

CREATE TABLE snapshot_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT  NOT NULL
);
INSERT INTO snapshot_version (id, version) VALUES (1, 0);

CREATE TABLE migrations (
    key           TEXT   PRIMARY KEY,
    version       BIGINT NOT NULL,
    stage         TEXT   NOT NULL,
    rollout_bp    BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    state         TEXT   NOT NULL
);
CREATE UNIQUE INDEX migrations_version ON migrations (version);

CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    migration_key TEXT   NOT NULL REFERENCES migrations (key),
    version       BIGINT NOT NULL,
    actor         TEXT   NOT NULL,
    at_ms         BIGINT NOT NULL,
    action        TEXT   NOT NULL,
    reason        TEXT   NOT NULL,
    before_json   TEXT   NOT NULL,
    after_json    TEXT   NOT NULL
);
CREATE INDEX audit_log_by_migration ON audit_log (migration_key, id);

CREATE TABLE client_instances (
    service         TEXT   NOT NULL,
    instance_id     TEXT   NOT NULL,
    applied_version BIGINT NOT NULL,
    first_seen_ms   BIGINT NOT NULL,
    last_seen_ms    BIGINT NOT NULL,
    PRIMARY KEY (service, instance_id)
);
CREATE INDEX client_instances_last_seen ON client_instances (last_seen_ms);

CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT   NOT NULL UNIQUE,
    role          TEXT   NOT NULL,
    token_hash    TEXT   NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
