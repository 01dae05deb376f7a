-- Webhook subscriptions: where to send which events (of which migrations), signed with the
-- secret shown once at creation. A removed subscription is kept (its delivery log stays
-- readable) but receives nothing more.
CREATE TABLE webhooks (
    id             BIGSERIAL PRIMARY KEY,
    url            TEXT   NOT NULL,
    migrations     TEXT   NOT NULL,
    events         TEXT   NOT NULL,
    format         TEXT   NOT NULL,
    secret         TEXT   NOT NULL,
    created_by     TEXT   NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    removed_at_ms  BIGINT
);

-- The outbox: one row per event and subscription, written in the transaction of what it
-- reports (a change and its notification commit together), delivered at least once, in id
-- order per subscription, by the replica holding the sender's lease; the row is the delivery
-- log (attempts, last status, last error).
CREATE TABLE webhook_outbox (
    id              BIGSERIAL PRIMARY KEY,
    webhook_id      BIGINT NOT NULL REFERENCES webhooks (id),
    event_type      TEXT   NOT NULL,
    migration_key   TEXT   NOT NULL,
    payload         TEXT   NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    status          TEXT   NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    last_status     BIGINT NOT NULL,
    last_error      TEXT   NOT NULL,
    delivered_at_ms BIGINT NOT NULL
);
CREATE INDEX webhook_outbox_pending ON webhook_outbox (status, webhook_id, id);
CREATE INDEX webhook_outbox_by_webhook ON webhook_outbox (webhook_id, id);
