-- The API token that registered each client instance: only that token may heartbeat for it or
-- send its goodbye (an admin token may remove any instance), so one service's token cannot
-- delete or overwrite another's instances and change the fleet the safety rules count.
-- Rows from before this migration have no owner (NULL): the next token that heartbeats one
-- claims it. So does the next token after the owning token is revoked (a rotated token).
ALTER TABLE client_instances ADD COLUMN token_id BIGINT;
CREATE INDEX client_instances_by_token ON client_instances (token_id);
