BEGIN;
SET LOCAL lock_timeout = '5s';
ALTER TABLE users ADD COLUMN handle text, ADD COLUMN nickname text;
COMMIT;
BEGIN;
SET LOCAL lock_timeout = '5s';
ALTER TABLE orders ADD COLUMN note text;
COMMIT;
