-- The migrations a token may see and act on: one row per pattern, a migration key
-- (orders.split-shipments) or a key prefix and '*' (orders.*). A token with no rows sees every
-- migration. The rules count an instance for a migration only if its token's scope covers it.
CREATE TABLE token_scopes (
    token_id BIGINT NOT NULL REFERENCES api_tokens (id),
    pattern  TEXT   NOT NULL,
    PRIMARY KEY (token_id, pattern)
);
