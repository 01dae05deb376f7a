ALTER TABLE users ADD COLUMN handle text; -- expect: SY011
SET lock_timeout = '5s';
ALTER TABLE users ADD COLUMN nickname text;
SET lock_timeout = 0;
ALTER TABLE users ADD COLUMN bio text; -- expect: SY011
RESET lock_timeout;
LOCK TABLE users IN ACCESS EXCLUSIVE MODE; -- expect: SY011
CREATE TRIGGER users_sync BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION users_sync(); -- expect: SY011
LOCK TABLE users IN ACCESS EXCLUSIVE MODE NOWAIT;
