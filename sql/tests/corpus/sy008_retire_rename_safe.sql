-- switchyard: retire users.username-to-handle
-- makes the old shape unusable under its names, keeping its data: a caller still using it fails, and `restore` brings it back at once.
-- A rename takes a brief ACCESS EXCLUSIVE lock: wait at most 2 s for it rather than queue the application behind it.
SET lock_timeout = '2s';
BEGIN;
ALTER TABLE users RENAME COLUMN username TO username__retired;
COMMIT;
