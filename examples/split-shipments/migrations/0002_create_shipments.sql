-- switchyard: expand orders.split-shipments
-- Expand: shipments get a table of their own, linked both ways. `shipments.order_id` links back
-- to the order (unique: one shipment per order). Its foreign key is checked at commit
-- (DEFERRABLE INITIALLY DEFERRED) so that, once `orders.shipment_id` is required, an order and
-- its shipment can be created in one transaction, shipment first. `orders.shipment_id` is the
-- order's link, nullable until the backfill has given every existing order its shipment; its
-- foreign key is added NOT VALID (no scan under the lock) and validated separately.
-- ship_address loses NOT NULL: from `live` on, an order may be created through the new shape
-- first, in the same transaction that then fills the old column.
SET lock_timeout = '5s';
CREATE TABLE shipments (
    id       bigserial PRIMARY KEY,
    order_id bigint NOT NULL UNIQUE REFERENCES orders (id) DEFERRABLE INITIALLY DEFERRED,
    address  text NOT NULL
);
ALTER TABLE orders ADD COLUMN shipment_id bigint;
ALTER TABLE orders ADD CONSTRAINT orders_shipment_id_fkey
    FOREIGN KEY (shipment_id) REFERENCES shipments (id) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT orders_shipment_id_fkey;
ALTER TABLE orders ALTER COLUMN ship_address DROP NOT NULL;
