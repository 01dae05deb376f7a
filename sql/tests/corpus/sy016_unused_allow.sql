SET lock_timeout = '5s';
-- switchyard: allow SY001 because the index was made concurrent since -- expect: SY016
CREATE INDEX CONCURRENTLY users_email ON users (email);
-- switchyard: allow SY001, SY008 because a tiny lookup table -- expect: SY016
CREATE INDEX countries_code ON countries (code);
