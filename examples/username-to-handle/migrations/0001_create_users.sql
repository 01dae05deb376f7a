-- The application's table before the migration.
CREATE TABLE users (
    id         bigserial PRIMARY KEY,
    username   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
