-- Named plans to start migrations from ("standard column rename", "cautious table split"):
-- stages, steps, holds and window as JSON, like a plan's, without a schedule.
CREATE TABLE plan_templates (
    name           TEXT   NOT NULL PRIMARY KEY,
    plan           TEXT   NOT NULL,
    description    TEXT   NOT NULL,
    updated_by     TEXT   NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
