-- switchyard: expand users.username-to-handle
-- The textbook expand: lock_timeout first, a nullable column, a constraint added NOT VALID and
-- validated separately, the index built concurrently outside a transaction.
SET lock_timeout = '5s';
ALTER TABLE users ADD COLUMN handle text;
ALTER TABLE users ADD CONSTRAINT users_handle_len CHECK (char_length(handle) <= 64) NOT VALID;
ALTER TABLE users VALIDATE CONSTRAINT users_handle_len;
CREATE INDEX CONCURRENTLY users_handle ON users (handle);
CREATE FUNCTION set_handle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.handle := coalesce(NEW.handle, NEW.username);
  RETURN NEW;
END;
$$;
