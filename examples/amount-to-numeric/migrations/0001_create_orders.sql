-- The application's table before the migration: amounts in floating-point currency units.
CREATE TABLE orders (
    id         bigserial PRIMARY KEY,
    customer   text NOT NULL,
    amount     double precision NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
