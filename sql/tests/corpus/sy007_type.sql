SET lock_timeout = '5s';
ALTER TABLE orders ALTER COLUMN amount TYPE numeric(10, 2); -- expect: SY007
ALTER TABLE orders ALTER COLUMN id TYPE bigint USING id::bigint; -- expect: SY007
