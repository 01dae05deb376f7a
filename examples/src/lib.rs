//! Example applications for migrations of the common patterns, on PostgreSQL through Switchyard:
//! a column rename (`users.username` → `handle`), a type change (`orders.amount`, a float, →
//! `amount_exact numeric(10,2)`), a required column (`accounts.settings->>'locale'` →
//! `accounts.locale text NOT NULL`) and a table split (`orders.ship_address` → a `shipments`
//! table linked both ways), the last two writing both shapes in one transaction. Each is a small service whose data access goes through the
//! client's [`Migrator`](switchyard_client::Migrator), a backfill on
//! [`PgBackfill`](switchyard_client::postgres::PgBackfill), SQL migration files headed for the
//! gate (`examples/*/migrations`), and a load generator that keeps reading, inserting and
//! updating while a release manager moves the migration along.
//!
//! The end-to-end drill (`tests/tests/drill.rs`) runs the users service exactly as written here;
//! `tests/tests/patterns.rs` runs the accounts and shipping services through their whole
//! migrations under load.

pub mod accounts;
pub mod load;
pub mod orders;
pub mod shipments;
pub mod users;

use std::future::Future;

/// A table the load generator works on: one value per row, read, updated and inserted through
/// the migrator.
pub trait Entities: Send + Sync + 'static {
    /// What a row holds, as the application sees it.
    type Value: PartialEq + Clone + std::fmt::Debug + Send + Sync + 'static;

    /// The value the seed gave row `id`.
    fn seeded(&self, id: i64) -> Self::Value;
    /// A fresh value for a write: worker `worker`'s `n`th.
    fn fresh(&self, worker: usize, n: u64) -> Self::Value;
    /// The row's value, in the shape the migration's stage says (`None`: no such row).
    fn read(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<Option<Self::Value>, sqlx::Error>> + Send;
    fn update(
        &self,
        id: i64,
        value: &Self::Value,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    /// Inserts a row; returns its id.
    fn insert(&self, value: &Self::Value) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;
}

/// One row's text column by id (`None`: no such row, or the column is NULL): the read every
/// example's shapes make.
pub(crate) async fn text_by_id(
    pool: &sqlx::PgPool,
    sql: &str,
    id: i64,
) -> Result<Option<String>, sqlx::Error> {
    let value: Option<Option<String>> = sqlx::query_scalar(sql)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(value.flatten())
}

/// After a seed filled `table` with ids 1..=rows: moves its id sequence past them (so inserts
/// get fresh ids) and analyzes it (so the planner and the backfill's estimate know its size).
pub(crate) async fn seeded(pool: &sqlx::PgPool, table: &str, rows: i64) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT setval(pg_get_serial_sequence($1, 'id'), $2)")
        .bind(table)
        .bind(rows)
        .execute(pool)
        .await?;
    // An identifier, from the examples' own constants: never input.
    sqlx::query(&format!("ANALYZE {table}"))
        .execute(pool)
        .await?;
    Ok(())
}
