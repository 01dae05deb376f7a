SET lock_timeout = '5s';
-- switchyard: allow SY000 because REINDEX CONCURRENTLY takes no blocking lock
REINDEX INDEX CONCURRENTLY users_email;
