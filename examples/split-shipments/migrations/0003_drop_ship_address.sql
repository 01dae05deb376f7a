-- switchyard: contract orders.split-shipments
-- Contract: the address column goes, and the link becomes required: every order has its
-- shipment. As for any new NOT NULL on a large table, a CHECK added NOT VALID and validated
-- (writes go on) lets SET NOT NULL skip its scan under the exclusive lock.
SET lock_timeout = '5s';
ALTER TABLE orders DROP COLUMN ship_address;
ALTER TABLE orders ADD CONSTRAINT orders_shipment_id_not_null CHECK (shipment_id IS NOT NULL) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT orders_shipment_id_not_null;
ALTER TABLE orders ALTER COLUMN shipment_id SET NOT NULL;
ALTER TABLE orders DROP CONSTRAINT orders_shipment_id_not_null;
