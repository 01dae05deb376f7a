//! The orders service of the type change `orders.amount` (double precision, in currency units)
//! → `orders.amount_exact` (`numeric(10,2)`).
//!
//! The application handles amounts as integer cents. The old shape converts at the edge
//! (`round(amount * 100)`), the new one is exact; shadow reads compare cents, so a float that
//! rounds to the same cent is not a mismatch while a wrong conversion is.

use crate::Entities;
use sqlx::PgPool;
use switchyard_client::Migrator;
use switchyard_client::postgres::PgBackfill;

pub const MIGRATION: &str = "orders.amount-to-numeric";

pub const MIGRATION_FILES: [&str; 3] = [
    "0001_create_orders.sql",
    "0002_add_amount_exact.sql",
    "0003_drop_amount.sql",
];

pub struct Orders {
    pool: PgPool,
    migrator: Migrator,
}

impl Orders {
    pub fn new(pool: PgPool, migrator: Migrator) -> Orders {
        Orders { pool, migrator }
    }

    /// The order's amount in cents.
    pub async fn amount_cents(&self, id: i64) -> Result<Option<i64>, sqlx::Error> {
        let entity = id.to_string();
        self.migrator
            .read(
                &entity,
                || {
                    self.cents(
                        id,
                        "SELECT round(amount * 100)::int8 FROM orders WHERE id = $1",
                    )
                },
                || {
                    self.cents(
                        id,
                        "SELECT (amount_exact * 100)::int8 FROM orders WHERE id = $1",
                    )
                },
            )
            .await
    }

    /// Corrects an order's amount.
    pub async fn set_amount(&self, id: i64, cents: i64) -> Result<(), sqlx::Error> {
        let entity = id.to_string();
        self.migrator
            .write(
                &entity,
                || {
                    self.set(
                        id,
                        cents,
                        "UPDATE orders SET amount = $2::int8::float8 / 100 WHERE id = $1",
                    )
                },
                || {
                    self.set(
                        id,
                        cents,
                        "UPDATE orders SET amount_exact = $2::int8::numeric / 100 WHERE id = $1",
                    )
                },
            )
            .await
    }

    /// Places an order; returns its id.
    pub async fn place(&self, cents: i64) -> Result<i64, sqlx::Error> {
        let id: i64 = sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('orders', 'id'))")
            .fetch_one(&self.pool)
            .await?;
        let entity = id.to_string();
        self.migrator
            .write(
                &entity,
                || {
                    self.set(
                        id,
                        cents,
                        "INSERT INTO orders (id, customer, amount) \
                         VALUES ($1, 'example', $2::int8::float8 / 100) \
                         ON CONFLICT (id) DO UPDATE SET amount = EXCLUDED.amount",
                    )
                },
                || {
                    self.set(
                        id,
                        cents,
                        "INSERT INTO orders (id, customer, amount_exact) \
                         VALUES ($1, 'example', $2::int8::numeric / 100) \
                         ON CONFLICT (id) DO UPDATE SET amount_exact = EXCLUDED.amount_exact",
                    )
                },
            )
            .await?;
        Ok(id)
    }

    async fn cents(&self, id: i64, sql: &str) -> Result<Option<i64>, sqlx::Error> {
        let value: Option<Option<i64>> = sqlx::query_scalar(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(value.flatten())
    }

    async fn set(&self, id: i64, cents: i64, sql: &str) -> Result<(), sqlx::Error> {
        sqlx::query(sql)
            .bind(id)
            .bind(cents)
            .execute(&self.pool)
            .await
            .map(drop)
    }
}

/// The amount in cents the seed gives order `id`.
pub fn seeded_cents(id: i64) -> i64 {
    (id * 137) % 100_000 + 99
}

/// Inserts orders 1..=rows (in the old shape) and moves the id sequence past them.
pub async fn seed(pool: &PgPool, rows: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO orders (id, customer, amount) \
         SELECT g, 'customer-' || (g % 1000), ((g * 137) % 100000 + 99)::float8 / 100 \
         FROM generate_series(1, $1) g",
    )
    .bind(rows)
    .execute(pool)
    .await?;
    crate::seeded(pool, "orders", rows).await
}

/// The backfill: the exact amount from the float one, rounded to the cent.
pub fn backfill(pool: PgPool) -> PgBackfill {
    PgBackfill::new(
        pool,
        "orders",
        "id",
        "amount_exact = round(amount::numeric, 2)",
    )
    .pending("amount_exact IS DISTINCT FROM round(amount::numeric, 2)")
}

impl Entities for Orders {
    type Value = i64;

    fn seeded(&self, id: i64) -> i64 {
        seeded_cents(id)
    }

    fn fresh(&self, worker: usize, n: u64) -> i64 {
        (worker as i64 * 7919 + n as i64 * 31) % 100_000 + 1
    }

    async fn read(&self, id: i64) -> Result<Option<i64>, sqlx::Error> {
        self.amount_cents(id).await
    }

    async fn update(&self, id: i64, value: &i64) -> Result<(), sqlx::Error> {
        self.set_amount(id, *value).await
    }

    async fn insert(&self, value: &i64) -> Result<i64, sqlx::Error> {
        self.place(*value).await
    }
}
