-- switchyard: contract users.username-to-handle
SET lock_timeout = '5s';
ALTER TABLE users DROP COLUMN username;
DROP TABLE old_users;
DROP INDEX CONCURRENTLY users_username;
