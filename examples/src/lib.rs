//! Example applications for the two migrations of the seeds, on PostgreSQL through Switchyard:
//! a column rename (`users.username` → `handle`) and a type change (`orders.amount`, a float, →
//! `amount_exact numeric(10,2)`). Each is a small service whose data access goes through the
//! client's [`Migrator`](switchyard_client::Migrator), a backfill on
//! [`PgBackfill`](switchyard_client::postgres::PgBackfill), SQL migration files headed for the
//! gate (`examples/*/migrations`), and a load generator that keeps reading, inserting and
//! updating while a release manager moves the migration along.
//!
//! The end-to-end drill (`tests/tests/drill.rs`) runs the users service exactly as written here.

pub mod load;
pub mod orders;
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
