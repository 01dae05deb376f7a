-- The application's table before the migration: the account's locale lives in a JSON settings
-- blob, and an account without the key speaks English.
CREATE TABLE accounts (
    id       bigserial PRIMARY KEY,
    name     text NOT NULL,
    settings jsonb NOT NULL DEFAULT '{}'
);
