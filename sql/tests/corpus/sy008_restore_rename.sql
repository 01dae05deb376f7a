-- switchyard: expand users.username-to-handle
-- The retired name given back outside a restore file: ungated, so a rename like any other.
SET lock_timeout = '2s';
ALTER TABLE users RENAME COLUMN username__retired TO username; -- expect: SY008
