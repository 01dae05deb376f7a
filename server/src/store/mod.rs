//! The server's own store: migrations, the audit log, client instances and API tokens, in SQLite
//! (embedded default) or PostgreSQL, through sqlx.
//!
//! Only this module knows SQL. Both databases run the same statements through sqlx's `Any`
//! driver (`$n` placeholders work in both); the few differences are in [`Backend`].
//!
//! Every mutation runs in one transaction: lock the migration row, check the expected version,
//! take the next global snapshot version, let the domain decide, write the new state and its
//! audit record, and (Postgres) `pg_notify` the other replicas, all committed together. The
//! snapshot version row is updated inside that transaction, so on Postgres concurrent
//! mutations queue on its row lock and commit in version order: a reader that sees version N
//! has already seen every version below N.
//!
//! Every write, mutation or not, goes through `Store::write`, which owns that discipline:
//! SQLite's write mutex, one transaction, commit on success and an explicit rollback of a
//! refusal or error before the mutex is released.
//!
//! Layout, by table family: `migrations` (migrations and their audit log), `clients` (client
//! instances, their traffic, their report times and latest old-shape use, for the gate),
//! `checkpoints` (backfill positions), `tokens` (API tokens), `usage` (the usage observer's
//! leases, baselines and evidence), `mismatches` (entities whose shadow reads differed, as clients
//! sampled them);
//! `rows` and `state` hold the row types and the stored form of a migration.

mod approvals;
mod checkpoints;
mod clients;
mod migrations;
mod mismatches;
mod plans;
mod rows;
mod state;
mod tokens;
mod usage;
mod webhooks;

use futures::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use std::str::FromStr;
use std::time::Duration;
use switchyard_domain::rules::DomainError;
use switchyard_domain::{Migration, Version};
use tokio::sync::Mutex;

pub use approvals::{NewApproval, StoredApproval};
pub use checkpoints::{Checkpoint, StoredSettings};
pub use clients::{HeartbeatOutcome, InstanceOwner, Registrant};
pub use migrations::{Alongside, ApprovalUse, Mutated};
pub use mismatches::MismatchEntity;
pub use plans::{PlanStatus, StoredPlan, StoredTemplate};
pub use rows::{AuditRecord, ClientInstance, TokenRecord};
pub use usage::{PassOutcome, PassRead, Relevant, RetireRead, TargetStatus};
pub use webhooks::{Delivery, StoredWebhook};

/// The transaction every write and consistent read runs in.
type Tx<'t> = sqlx::Transaction<'t, sqlx::Any>;

/// Postgres channel on which every committed change announces its version.
const NOTIFY_CHANNEL: &str = "switchyard_changes";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("migration {0} does not exist")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The domain refused the change; `current` is the unchanged state.
    #[error("{error}")]
    Refused {
        error: DomainError,
        current: Box<Migration>,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Row lock for the read-check-write of a mutation. SQLite has no row locks; there the
    /// store's write mutex serialises writers instead.
    fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }
}

pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: String,
    /// SQLite allows one writer; taking this before `BEGIN` avoids `SQLITE_BUSY` on lock
    /// upgrade and keeps the mutation path identical to Postgres' row-locked one.
    write_lock: Option<Mutex<()>>,
}

/// Hears the changes committed through any replica; see [`Store::change_listener`].
pub struct ChangeListener(sqlx::postgres::PgListener);

impl ChangeListener {
    /// Waits for the next committed change.
    pub async fn changed(&mut self) -> Result<(), StoreError> {
        self.0.recv().await?;
        Ok(())
    }
}

impl StoreError {
    /// The database did not answer in time (the pool had no connection to give): worth a retry,
    /// unlike the other errors.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::PoolTimedOut))
    }
}

impl Store {
    /// Connects, creating the SQLite file if needed, and applies the store's migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = match backend {
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL lets readers run beside the writer; synchronous=FULL makes
                            // every commit durable before it is acknowledged.
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                 PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?
            }
        };
        match backend {
            Backend::Sqlite => sqlx::migrate!("../migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("../migrations/postgres").run(&pool).await?,
        }
        Ok(Self {
            pool,
            backend,
            url,
            write_lock: (backend == Backend::Sqlite).then(|| Mutex::new(())),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Postgres: a connection that hears every change committed through any replica (each
    /// mutation, and each token revoke, sends `pg_notify` on [`NOTIFY_CHANNEL`] in its
    /// transaction).
    pub async fn change_listener(&self) -> Result<ChangeListener, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        Ok(ChangeListener(listener))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn snapshot_version(&self) -> Result<Version, StoreError> {
        let v: i64 = sqlx::query_scalar("SELECT version FROM snapshot_version WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(Version(v as u64))
    }

    /// Runs `body` as one write: takes SQLite's write mutex, begins, commits if `body` returns
    /// `Ok`, and otherwise rolls back explicitly before the mutex is released. (A dropped
    /// transaction only queues its rollback for the connection's next use, leaving SQLite's
    /// write lock held meanwhile, so the next writer would fail with `SQLITE_BUSY`.)
    ///
    /// A pooled transaction borrows nothing, so it can be typed as living for `'a`: that tells
    /// the compiler that what the caller lends the body for `'a` outlives the body's borrow of
    /// the transaction, so the body's future may hold both.
    async fn write<'a, T, F>(&'a self, body: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut Tx<'a>) -> BoxFuture<'c, Result<T, StoreError>>,
    {
        let started = std::time::Instant::now();
        let _guard = self.lock_writes().await;
        let _timed = crate::metrics::StoreWrite(started);
        let mut tx: Tx<'a> = self.pool.begin().await?;
        match body(&mut tx).await {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(error = %rollback, "rolling back a refused or failed write failed");
                }
                Err(e)
            }
        }
    }

    /// A read transaction whose statements all see one snapshot. SQLite's read transactions
    /// already do; Postgres' default (read committed) would let a commit land between reading
    /// the version and reading the rows, so ask for repeatable read.
    async fn begin_consistent_read(&self) -> Result<Tx<'static>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    async fn lock_writes(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }

    async fn notify(&self, tx: &mut Tx<'_>, version: Version) -> Result<(), StoreError> {
        self.announce(tx, &version.0.to_string()).await
    }

    /// Sends `payload` on [`NOTIFY_CHANNEL`] when `tx` commits (Postgres). Listeners only wake
    /// on it and then read what changed, so the payload is informational.
    async fn announce(&self, tx: &mut Tx<'_>, payload: &str) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            // Delivered to listeners only when the transaction commits.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(payload)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

async fn read_snapshot_version(tx: &mut Tx<'_>) -> Result<Version, StoreError> {
    let v: i64 = sqlx::query_scalar("SELECT version FROM snapshot_version WHERE id = 1")
        .fetch_one(&mut **tx)
        .await?;
    Ok(Version(v as u64))
}

async fn next_version(tx: &mut Tx<'_>) -> Result<Version, StoreError> {
    let v: i64 = sqlx::query_scalar(
        "UPDATE snapshot_version SET version = version + 1 WHERE id = 1 RETURNING version",
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(Version(v as u64))
}

/// The leases replicas take so that one of them does a job: the usage observer's, one per
/// target database, and the plan driver's.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lease {
    ObserverTarget,
    PlanDriver,
    /// The webhook sender's: one replica sends, so deliveries keep their order.
    WebhookSender,
}

impl Lease {
    /// The table and its name column (tables and columns cannot be bound parameters).
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Lease::ObserverTarget => ("observer_targets", "target"),
            // Named leases of the replicas' single drivers share the plan driver's table.
            Lease::PlanDriver | Lease::WebhookSender => ("plan_driver", "name"),
        }
    }
}

impl Store {
    /// Takes or renews lease `name` for `holder` until `until_ms`; `false` while another
    /// holder's lease has not run out at `now_ms`.
    pub(crate) async fn lease(
        &self,
        lease: Lease,
        name: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let (table, column) = lease.table();
        self.write(|tx| {
            Box::pin(async move {
                sqlx::query(&format!(
                    "INSERT INTO {table} ({column}, holder, lease_until_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT ({column}) DO NOTHING"
                ))
                .bind(name)
                .bind(holder)
                .bind(until_ms)
                .execute(&mut **tx)
                .await?;
                let taken = sqlx::query(&format!(
                    "UPDATE {table} SET holder = $2, lease_until_ms = $3 \
                     WHERE {column} = $1 AND (holder = $2 OR lease_until_ms < $4)"
                ))
                .bind(name)
                .bind(holder)
                .bind(until_ms)
                .bind(now_ms)
                .execute(&mut **tx)
                .await?;
                Ok(taken.rows_affected() == 1)
            })
        })
        .await
    }
}
