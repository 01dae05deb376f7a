-- switchyard: expand users.username-to-handle
-- Expand: the new column, nullable until every row has it. The old column stops being required,
-- because from `complete` on new rows are written in the new shape only.
ALTER TABLE users ADD COLUMN handle text;
ALTER TABLE users ALTER COLUMN username DROP NOT NULL;
