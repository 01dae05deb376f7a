BEGIN;
SET LOCAL lock_timeout = '5s';
CREATE INDEX CONCURRENTLY users_email ON users (email); -- expect: SY002
COMMIT;
-- switchyard: contract users.email-lookup
START TRANSACTION;
DROP INDEX CONCURRENTLY users_old_email; -- expect: SY002 SY009
END;
