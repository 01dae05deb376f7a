-- switchyard: retire users.username-to-handle
-- A retire file renames the old shape to its retired name and nothing else: a rename to any
-- other name breaks running code like anywhere else.
SET lock_timeout = '2s';
BEGIN;
ALTER TABLE users RENAME COLUMN username TO handle; -- expect: SY008
COMMIT;
