-- switchyard: expand users.username-to-handle
SET lock_timeout = '5s';
ALTER TABLE users DROP COLUMN username; -- expect: SY009
DROP TABLE old_users; -- expect: SY009
DROP INDEX CONCURRENTLY users_username; -- expect: SY009
