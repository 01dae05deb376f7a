-- switchyard: contract users.username-to-handle
SET lock_timeout = '5s';
DROP VIEW users_with_username;
DROP TABLE old_users;
