-- switchyard: expand users.username-to-handle
-- Expand: the new column, nullable until every row has it. The old column stops being required,
-- because from `complete` on new rows are written in the new shape only. Both changes are
-- catalog-only, but each waits for an ACCESS EXCLUSIVE lock: give up rather than queue the
-- application behind a long transaction.
SET lock_timeout = '5s';
ALTER TABLE users ADD COLUMN handle text;
ALTER TABLE users ALTER COLUMN username DROP NOT NULL;
