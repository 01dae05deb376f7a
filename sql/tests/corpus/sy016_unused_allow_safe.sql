SET lock_timeout = '5s';
-- switchyard: allow SY001 because countries has 250 rows and no concurrent writers
CREATE INDEX countries_code ON countries (code);
