BEGIN;
SET LOCAL lock_timeout = '5s';
ALTER TABLE users ADD COLUMN handle text;
ALTER TABLE orders ADD COLUMN note text; -- expect: SY013
COMMIT;
