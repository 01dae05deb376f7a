-- switchyard: expand accounts.locale-required
-- Expand: the column, nullable and without a default, so adding it only changes the catalog
-- (no rewrite, no scan); writers that do not know it keep working. It becomes required at the
-- contract, once every row has a value and every writer writes it.
SET lock_timeout = '5s';
ALTER TABLE accounts ADD COLUMN locale text;
