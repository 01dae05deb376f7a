SET lock_timeout = '5s';
-- switchyard: allow SY001 because countries has 250 rows and no concurrent writers
CREATE INDEX small_lookup ON countries (code);
RESET lock_timeout;
CREATE TABLE audit_log (id bigint PRIMARY KEY, at timestamptz NOT NULL);
-- The table was created just above, empty and unused:
-- switchyard: allow SY001, SY011 because audit_log is new and empty
CREATE INDEX audit_log_at ON audit_log (at);
