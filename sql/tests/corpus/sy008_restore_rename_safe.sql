-- switchyard: restore users.username-to-handle
-- gives the retired old shape its names back.
-- A rename takes a brief ACCESS EXCLUSIVE lock: wait at most 2 s for it rather than queue the application behind it.
SET lock_timeout = '2s';
BEGIN;
ALTER TABLE users RENAME COLUMN username__retired TO username;
COMMIT;
