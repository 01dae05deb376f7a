-- switchyard: contract orders.amount-to-numeric
-- Contract: the float column goes; the exact one becomes required, proven by a validated CHECK
-- first so that SET NOT NULL does not scan the table under an ACCESS EXCLUSIVE lock.
SET lock_timeout = '5s';
ALTER TABLE orders DROP COLUMN amount;
ALTER TABLE orders ADD CONSTRAINT orders_amount_exact_not_null CHECK (amount_exact IS NOT NULL) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT orders_amount_exact_not_null;
ALTER TABLE orders ALTER COLUMN amount_exact SET NOT NULL;
ALTER TABLE orders DROP CONSTRAINT orders_amount_exact_not_null;
