//! What the migrator needs of a database to run both sides of a write in one transaction:
//! begin, savepoints, commit, rollback. The `postgres` feature implements it for sqlx
//! (`PgPool` begins, `sqlx::Transaction<'static, Postgres>` is the transaction); another driver
//! plugs in by implementing these two traits.
//!
//! Savepoints are what let the authoritative write commit when the other side fails: in
//! PostgreSQL a failed statement aborts its transaction, so without one the whole write would
//! have to be rolled back. The migrator names its savepoint [`SAVEPOINT`]; the application's own
//! savepoints inside a side should use other names.

use std::fmt::Display;
use std::future::Future;
use std::ops::DerefMut;
use std::sync::Arc;

/// The name of the savepoint around the non-authoritative side.
pub const SAVEPOINT: &str = "switchyard_other_side";

/// An open transaction. The migrator uses one savepoint, named [`SAVEPOINT`].
pub trait WriteTransaction: Send {
    /// The driver's error. The application's error type converts from it
    /// (`E: From<Self::Error>`), so a failed `COMMIT` reaches the caller as its own error.
    type Error: Display + Send;

    /// `SAVEPOINT switchyard_other_side`.
    fn savepoint(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// `RELEASE SAVEPOINT switchyard_other_side`: the side succeeded, its work stays in the
    /// transaction.
    fn release_savepoint(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// `ROLLBACK TO SAVEPOINT switchyard_other_side`: undoes the side's work and clears the
    /// transaction's aborted state, keeping what ran before the savepoint.
    fn rollback_to_savepoint(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    fn commit(self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    fn rollback(self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Where transactions come from: a connection pool, usually.
pub trait BeginTransaction: Sync {
    type Transaction: WriteTransaction;

    fn begin(
        &self,
    ) -> impl Future<
        Output = Result<Self::Transaction, <Self::Transaction as WriteTransaction>::Error>,
    > + Send;
}

/// The error a transaction's source gives.
pub type TxError<S> = <<S as BeginTransaction>::Transaction as WriteTransaction>::Error;

/// The transaction as the sides of a write see it: a shared handle each side gets by value,
/// and locks for as long as it uses the transaction.
///
/// Why not `&mut` the transaction: a side is an async closure borrowing it, and today's compiler
/// cannot prove such a future `Send` (it asks for the borrow to be valid for every lifetime),
/// so a write taking one could not run on a spawned task: every request handler of a
/// multi-threaded server. An owned handle has no such borrow, and the sides can still capture
/// the application's references freely.
pub struct TxHandle<X> {
    // A futures-aware mutex, since a side holds it across its statements' awaits. Never
    // contended (the sides run one after the other), so the cheapest one: `futures`' takes one
    // atomic operation each way where tokio's also takes its waiter list's lock to release.
    inner: Arc<futures::lock::Mutex<Option<X>>>,
}

impl<X> Clone for TxHandle<X> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<X: Send> TxHandle<X> {
    /// Wraps an open transaction (for [`crate::Migrator::write_in`]: the application's own).
    pub fn new(tx: X) -> Self {
        Self {
            inner: Arc::new(futures::lock::Mutex::new(Some(tx))),
        }
    }

    /// The transaction, for as long as the guard lives (`&mut **guard` is the connection for
    /// sqlx). Panics if the write it belonged to has ended: a side must not keep its handle
    /// past its own future.
    pub async fn lock(&self) -> impl DerefMut<Target = X> + Send + '_ {
        futures::lock::MutexGuard::map(self.inner.lock().await, |tx| {
            tx.as_mut()
                .expect("a transaction handle was used after its write ended")
        })
    }

    /// The transaction back, once no side holds it.
    pub async fn into_inner(self) -> X {
        self.inner
            .lock()
            .await
            .take()
            .expect("a transaction handle was taken twice")
    }
}

#[cfg(feature = "postgres")]
mod sqlx_postgres {
    use super::{BeginTransaction, WriteTransaction};
    use sqlx::{PgPool, Postgres, Transaction};
    use std::future::Future;

    // Raw SQL rather than sqlx's nested `begin()`, whose guard would borrow the transaction
    // while the application's side needs it.
    const SAVEPOINT: &str = "SAVEPOINT switchyard_other_side";
    const RELEASE: &str = "RELEASE SAVEPOINT switchyard_other_side";
    const ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT switchyard_other_side";

    impl WriteTransaction for Transaction<'static, Postgres> {
        type Error = sqlx::Error;

        fn savepoint(&mut self) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
            execute(self, SAVEPOINT)
        }

        fn release_savepoint(&mut self) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
            execute(self, RELEASE)
        }

        fn rollback_to_savepoint(
            &mut self,
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
            execute(self, ROLLBACK_TO)
        }

        fn commit(self) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
            Transaction::commit(self)
        }

        fn rollback(self) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
            Transaction::rollback(self)
        }
    }

    impl BeginTransaction for PgPool {
        type Transaction = Transaction<'static, Postgres>;

        fn begin(&self) -> impl Future<Output = Result<Self::Transaction, sqlx::Error>> + Send {
            sqlx::Pool::begin(self)
        }
    }

    fn execute<'a>(
        tx: &'a mut Transaction<'static, Postgres>,
        sql: &'static str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
        // The executor's boxed future, made here: awaiting sqlx's generic `execute` inside the
        // async block would ask the compiler for a `Send` proof over every lifetime, which it
        // cannot give.
        let conn: &'a mut sqlx::PgConnection = tx;
        let run = sqlx::Executor::execute(conn, sql);
        async move { run.await.map(drop) }
    }

    #[test]
    fn the_statements_name_the_migrators_savepoint() {
        for sql in [SAVEPOINT, RELEASE, ROLLBACK_TO] {
            assert!(sql.ends_with(&format!(" {}", super::SAVEPOINT)), "{sql}");
        }
    }
}
