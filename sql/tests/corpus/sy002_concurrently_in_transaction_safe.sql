-- Concurrent builds run outside any transaction block, one per file.
SET lock_timeout = '5s';
CREATE INDEX CONCURRENTLY users_email ON users (email);
