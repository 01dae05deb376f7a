SET lock_timeout = '5s';
ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid(); -- expect: SY004
ALTER TABLE users ADD COLUMN seen timestamptz NOT NULL DEFAULT clock_timestamp(); -- expect: SY004
ALTER TABLE users ADD COLUMN n bigserial; -- expect: SY004
ALTER TABLE users ADD COLUMN k int DEFAULT my_function(); -- expect: SY004
