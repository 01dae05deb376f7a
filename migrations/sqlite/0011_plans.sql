-- Migration plans: the steps a migration takes by itself (JSON: stages, steps, holds), who set
-- the plan (its steps are made in that token's name, within its scope), and whether it runs.
-- Its position is not stored: the driver reads the migration's front.
CREATE TABLE plans (
    migration_key  TEXT   NOT NULL PRIMARY KEY,
    plan           TEXT   NOT NULL,
    set_by_token   BIGINT NOT NULL,
    set_by_name    TEXT   NOT NULL,
    set_at_ms      BIGINT NOT NULL,
    status         TEXT   NOT NULL,
    status_reason  TEXT   NOT NULL,
    status_at_ms   BIGINT NOT NULL,
    waiting        TEXT   NOT NULL
);

-- Which replica drives the plans: one at a time, by a lease renewed while it lives (one row,
-- named like the observer's per-target leases so one piece of code takes both).
CREATE TABLE plan_driver (
    name           TEXT   NOT NULL PRIMARY KEY,
    holder         TEXT   NOT NULL,
    lease_until_ms BIGINT NOT NULL
);
