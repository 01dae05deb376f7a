-- The table as it was before the rename.
CREATE TABLE users (
    id       BIGSERIAL PRIMARY KEY,
    username TEXT NOT NULL
);
