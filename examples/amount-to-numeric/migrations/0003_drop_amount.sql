-- switchyard: contract orders.amount-to-numeric
ALTER TABLE orders DROP COLUMN amount;
ALTER TABLE orders ALTER COLUMN amount_exact SET NOT NULL;
