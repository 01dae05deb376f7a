SET lock_timeout = '5s';
ALTER TABLE users ADD CONSTRAINT handle_not_null CHECK (handle IS NOT NULL) NOT VALID;
-- Not validated yet: SET NOT NULL still scans.
ALTER TABLE users ALTER COLUMN handle SET NOT NULL; -- expect: SY006
