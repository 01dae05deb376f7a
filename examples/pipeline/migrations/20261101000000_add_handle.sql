-- Expand: add the new shape beside the old one. Nullable, no default rewrite, no lock wait.
-- switchyard: expand users.username-to-handle
SET lock_timeout = '5s';
ALTER TABLE users ADD COLUMN handle TEXT;
