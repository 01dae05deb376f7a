-- Contract: drop the old shape. Applied only once `switchyard gate` passes for the migration.
-- switchyard: contract users.username-to-handle
SET lock_timeout = '5s';
ALTER TABLE users DROP COLUMN username;
