ALTER TABLE users ADD COLUMN handle text; -- expect: SY011
SET lock_timeout = '5s';
ALTER TABLE users ADD COLUMN nickname text;
SET lock_timeout = 0;
ALTER TABLE users ADD COLUMN bio text; -- expect: SY011
