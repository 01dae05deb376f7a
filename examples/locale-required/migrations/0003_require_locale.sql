-- switchyard: contract accounts.locale-required
-- Contract: the locale becomes required. A writer that still inserts accounts without it fails
-- from here on, which is why this waits behind the gate. SET NOT NULL alone would scan the
-- table under an ACCESS EXCLUSIVE lock; a CHECK added NOT VALID (a brief lock, no scan), then
-- validated (a scan under SHARE UPDATE EXCLUSIVE: reads and writes go on), lets SET NOT NULL
-- use the proven constraint instead of scanning. The old shape (settings->'locale') is left in
-- the JSON: removing it is a data change for a batch job, not for a migration's lock.
SET lock_timeout = '5s';
ALTER TABLE accounts ADD CONSTRAINT accounts_locale_not_null CHECK (locale IS NOT NULL) NOT VALID;
ALTER TABLE accounts VALIDATE CONSTRAINT accounts_locale_not_null;
ALTER TABLE accounts ALTER COLUMN locale SET NOT NULL;
ALTER TABLE accounts DROP CONSTRAINT accounts_locale_not_null;
