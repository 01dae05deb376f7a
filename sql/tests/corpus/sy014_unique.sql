SET lock_timeout = '5s';
ALTER TABLE users ADD CONSTRAINT users_handle_key UNIQUE (handle); -- expect: SY014
