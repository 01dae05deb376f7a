-- switchyard: expand orders.amount-to-numeric
-- Expand: an exact column beside the float one (a type change in place would rewrite the table
-- under an exclusive lock and break every reader of the old type at once).
SET lock_timeout = '5s';
ALTER TABLE orders ADD COLUMN amount_exact numeric(10,2);
ALTER TABLE orders ALTER COLUMN amount DROP NOT NULL;
