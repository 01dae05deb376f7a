-- switchyard: contract users.username-to-handle
SET lock_timeout = '5s';
DROP TABLE old_users CASCADE; -- expect: SY010
ALTER TABLE users DROP COLUMN username CASCADE; -- expect: SY010
