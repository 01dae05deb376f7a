SET lock_timeout = '5s';
ALTER TABLE users ADD CONSTRAINT users_handle_key UNIQUE (handle); -- expect: SY014
ALTER TABLE t ADD CONSTRAINT x EXCLUDE USING gist (r WITH &&); -- expect: SY014
