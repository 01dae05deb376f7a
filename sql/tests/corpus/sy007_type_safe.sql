-- Longer varchar and text are binary-compatible with a shorter varchar: no rewrite.
SET lock_timeout = '5s';
ALTER TABLE users ALTER COLUMN handle TYPE varchar(200);
ALTER TABLE users ALTER COLUMN bio SET DATA TYPE text;
