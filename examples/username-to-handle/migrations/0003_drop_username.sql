-- switchyard: contract users.username-to-handle
-- Contract: only once the gate passes (`switchyard gate --migrations-dir …`). Every row has a
-- handle by now (backfilled, then written by every writer), so it can become required. A bare
-- SET NOT NULL would scan the table under an ACCESS EXCLUSIVE lock; a validated CHECK proves it
-- first under a weaker lock, and PostgreSQL 12+ then skips the scan.
SET lock_timeout = '5s';
ALTER TABLE users DROP COLUMN username;
ALTER TABLE users ADD CONSTRAINT users_handle_not_null CHECK (handle IS NOT NULL) NOT VALID;
ALTER TABLE users VALIDATE CONSTRAINT users_handle_not_null;
ALTER TABLE users ALTER COLUMN handle SET NOT NULL;
ALTER TABLE users DROP CONSTRAINT users_handle_not_null;
