-- expect-at: 4 SY015
-- expect-at: 7 SY015
SET lock_timeout = '5s';
-- switchyard: allow SY001
CREATE INDEX small_lookup ON countries (code); -- expect: SY001
-- A code that does not exist silences nothing.
-- switchyard: allow SY999 because it is small
CREATE INDEX other_lookup ON countries (name); -- expect: SY001
