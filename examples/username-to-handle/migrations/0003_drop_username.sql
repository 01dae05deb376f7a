-- switchyard: contract users.username-to-handle
-- Contract: only once the gate passes (`switchyard gate --migrations-dir …`). Every row has a
-- handle by now (backfilled, then written by every writer), so it can become required.
ALTER TABLE users DROP COLUMN username;
ALTER TABLE users ALTER COLUMN handle SET NOT NULL;
