SET lock_timeout = '5s';
ALTER TABLE users RENAME COLUMN username TO handle; -- expect: SY008
ALTER TABLE users RENAME TO accounts; -- expect: SY008
