-- The application's table before the migration: the shipping address is a column of the order.
CREATE TABLE orders (
    id           bigserial PRIMARY KEY,
    customer     text NOT NULL,
    ship_address text NOT NULL
);
