SET lock_timeout = '5s';
ALTER TABLE users ADD COLUMN handle text;
REINDEX INDEX CONCURRENTLY users_email; -- expect: SY000
ALTER TABLE users FROBNICATE handle; -- expect: SY000
ALTER TABLE users ADD COLUMN nickname text;
