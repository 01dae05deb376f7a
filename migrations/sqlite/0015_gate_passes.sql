-- The migrations whose contract gate a webhook has announced as passing, and at which version:
-- the sender announces a gate once as it starts to pass, not on every look, and again only
-- after it has stopped passing (the row is removed then).
CREATE TABLE gate_passes (
    migration_key  TEXT   PRIMARY KEY,
    version        BIGINT NOT NULL,
    passed_at_ms   BIGINT NOT NULL
);
