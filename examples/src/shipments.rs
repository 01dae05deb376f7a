//! The shipping service of `orders.split-shipments`, a table split: the shipping address moves
//! from a column of `orders` to a table of its own, `shipments`, one row per order, linked both
//! ways (`shipments.order_id` back to the order, `orders.shipment_id` to the shipment, nullable
//! until every order has its shipment and required at the contract).
//!
//! # Writes
//! Both shapes are in one database, so every write runs both sides in one transaction
//! ([`Migrator::write_atomic`]): a crash between them leaves neither.
//!
//! Each side creates what it needs if the other has not: until `live` the old side runs first
//! and inserts the order; from `live` on the new side runs first and inserts the shipment and
//! the order with its link, and the old side then fills in the old column of that order. So
//! creating an order writes both shapes whichever side leads.
//!
//! # Lock order
//! Every path locks the order's row before the shipment's: the old side by updating the order;
//! the new side by locking the order (`FOR NO KEY UPDATE`) before it touches the shipment; the
//! backfill by taking its batch of orders `FOR NO KEY UPDATE` before inserting their shipments.
//! One order for everyone means a dual write and the backfill wait for each other but never
//! deadlock. (A new order is the exception: the new side inserts its shipment first, which only
//! this transaction can see until it commits.)

use crate::Entities;
use sqlx::{PgPool, Postgres, Transaction};
use switchyard_client::Migrator;
use switchyard_client::atomic::TxHandle;
use switchyard_client::postgres::PgBackfill;

pub const MIGRATION: &str = "orders.split-shipments";

/// The schema files, in order: create, expand, contract.
pub const MIGRATION_FILES: [&str; 3] = [
    "0001_create_orders.sql",
    "0002_create_shipments.sql",
    "0003_drop_ship_address.sql",
];

/// The folder of the files, under `examples/`.
pub const MIGRATIONS_DIR: &str = "split-shipments/migrations";

type Tx = TxHandle<Transaction<'static, Postgres>>;

pub struct Shipping {
    pool: PgPool,
    migrator: Migrator,
}

impl Shipping {
    pub fn new(pool: PgPool, migrator: Migrator) -> Shipping {
        Shipping { pool, migrator }
    }

    /// Where order `id` ships to.
    pub async fn address(&self, id: i64) -> Result<Option<String>, sqlx::Error> {
        let entity = id.to_string();
        self.migrator
            .read(
                &entity,
                || self.text(id, "SELECT ship_address FROM orders WHERE id = $1"),
                || {
                    self.text(
                        id,
                        "SELECT s.address FROM orders o JOIN shipments s ON s.id = o.shipment_id \
                         WHERE o.id = $1",
                    )
                },
            )
            .await
    }

    /// Changes where an order ships to.
    pub async fn readdress(&self, id: i64, address: &str) -> Result<(), sqlx::Error> {
        self.migrator
            .write_atomic(
                &self.pool,
                &id.to_string(),
                |tx| old_address(tx, id, address, false),
                |tx| new_shipment(tx, id, address, false),
            )
            .await
            .map(drop)
    }

    /// Places an order; returns its id.
    pub async fn place(&self, address: &str) -> Result<i64, sqlx::Error> {
        let id: i64 = sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('orders', 'id'))")
            .fetch_one(&self.pool)
            .await?;
        self.migrator
            .write_atomic(
                &self.pool,
                &id.to_string(),
                |tx| old_address(tx, id, address, true),
                |tx| new_shipment(tx, id, address, true),
            )
            .await?;
        Ok(id)
    }

    async fn text(&self, id: i64, sql: &str) -> Result<Option<String>, sqlx::Error> {
        crate::text_by_id(&self.pool, sql, id).await
    }
}

/// The old side: the order's address column (creating the order if the new side has not).
async fn old_address(tx: Tx, id: i64, address: &str, create: bool) -> Result<(), sqlx::Error> {
    let sql = if create {
        "INSERT INTO orders (id, customer, ship_address) VALUES ($1, 'example', $2) \
         ON CONFLICT (id) DO UPDATE SET ship_address = EXCLUDED.ship_address"
    } else {
        "UPDATE orders SET ship_address = $2 WHERE id = $1"
    };
    sqlx::query(sql)
        .bind(id)
        .bind(address)
        .execute(&mut **tx.lock().await)
        .await
        .map(drop)
}

/// The new side: the order's shipment, and the order's link to it (creating the order if the
/// old side has not).
async fn new_shipment(tx: Tx, id: i64, address: &str, create: bool) -> Result<(), sqlx::Error> {
    let mut tx = tx.lock().await;
    if !create {
        // The order's row before the shipment's: the lock order every writer keeps.
        sqlx::query("SELECT 1 FROM orders WHERE id = $1 FOR NO KEY UPDATE")
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    let shipment: i64 = sqlx::query_scalar(
        "INSERT INTO shipments (order_id, address) VALUES ($1, $2) \
         ON CONFLICT (order_id) DO UPDATE SET address = EXCLUDED.address RETURNING id",
    )
    .bind(id)
    .bind(address)
    .fetch_one(&mut **tx)
    .await?;
    let link = if create {
        "INSERT INTO orders (id, customer, shipment_id) VALUES ($1, 'example', $2) \
         ON CONFLICT (id) DO UPDATE SET shipment_id = EXCLUDED.shipment_id"
    } else {
        "UPDATE orders SET shipment_id = $2 WHERE id = $1 AND shipment_id IS DISTINCT FROM $2"
    };
    sqlx::query(link)
        .bind(id)
        .bind(shipment)
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// The address the seed gives order `id`.
pub fn seeded_address(id: i64) -> String {
    format!("{} Harbour Street", id % 997 + 1)
}

/// Inserts orders 1..=rows (in the old shape) and moves the id sequence past them.
pub async fn seed(pool: &PgPool, rows: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO orders (id, customer, ship_address) \
         SELECT g, 'customer-' || (g % 1000), (g % 997 + 1) || ' Harbour Street' \
         FROM generate_series(1, $1) g",
    )
    .bind(rows)
    .execute(pool)
    .await?;
    crate::seeded(pool, "orders", rows).await
}

/// Every order's address in the new shape (its shipment's), by order id.
pub async fn new_shape(pool: &PgPool) -> Result<Vec<(i64, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.id, s.address FROM orders o LEFT JOIN shipments s ON s.id = o.shipment_id \
         ORDER BY o.id",
    )
    .fetch_all(pool)
    .await
}

impl Entities for Shipping {
    type Value = String;

    fn seeded(&self, id: i64) -> String {
        seeded_address(id)
    }

    fn fresh(&self, worker: usize, n: u64) -> String {
        format!("{} Quay {worker}", n % 10_000)
    }

    async fn read(&self, id: i64) -> Result<Option<String>, sqlx::Error> {
        self.address(id).await
    }

    async fn update(&self, id: i64, value: &String) -> Result<(), sqlx::Error> {
        self.readdress(id, value).await
    }

    async fn insert(&self, value: &String) -> Result<i64, sqlx::Error> {
        self.place(value).await
    }
}

/// The backfill: each order of a batch gets its shipment (inserted, linking back) and its link
/// to it, in one statement over the batch (which has locked those orders first, as every writer
/// does). Orders still to do: no link yet, or a shipment whose address is not the order's.
pub fn backfill(pool: PgPool) -> PgBackfill {
    PgBackfill::statement(
        pool,
        "orders",
        "id",
        "WITH moved AS ( \
             INSERT INTO shipments (order_id, address) \
             SELECT o.id, o.ship_address FROM orders o \
             JOIN switchyard_batch b ON b.switchyard_key = o.id \
             ON CONFLICT (order_id) DO UPDATE SET address = EXCLUDED.address \
             RETURNING id, order_id \
         ) \
         UPDATE orders SET shipment_id = moved.id FROM moved WHERE orders.id = moved.order_id",
    )
    .pending(
        "shipment_id IS NULL OR NOT EXISTS (SELECT 1 FROM shipments s \
         WHERE s.id = orders.shipment_id AND s.address IS NOT DISTINCT FROM orders.ship_address)",
    )
}
