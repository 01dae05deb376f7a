SET statement_timeout = '1min';
SET lock_timeout TO '5s';
ALTER TABLE users ADD COLUMN handle text;
