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

mod rows;

use rows::{AuditRow, InstanceRow, MigrationRow, TokenRow};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use std::str::FromStr;
use std::time::Duration;
use switchyard_domain::Role;
use switchyard_domain::rules::DomainError;
use switchyard_domain::traffic::TrafficCounts;
use switchyard_domain::{Fleet, LiveInstance, Migration, NewMigration, Reason, Version};
use tokio::sync::Mutex;

pub use rows::{AuditRecord, ClientInstance, TokenRecord};

/// A backfill runner's saved position.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub cursor: String,
    pub rows_done: u64,
    pub rows_total_estimate: u64,
    pub rate_rows_per_second: f64,
    pub runner: String,
    pub updated_at_ms: i64,
}

/// Postgres channel on which every committed change announces its version.
pub const NOTIFY_CHANNEL: &str = "switchyard_changes";

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

/// The outcome of a successful mutation.
pub struct Mutated {
    pub migration: Migration,
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

    /// The connection URL, for the Postgres change listener.
    pub fn url(&self) -> &str {
        &self.url
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

    pub async fn create_migration(
        &self,
        new: NewMigration,
        salt: u64,
        actor: &str,
        reason: &Reason,
        now_ms: i64,
    ) -> Result<Migration, StoreError> {
        let _guard = self.lock_writes().await;
        let mut tx = self.pool.begin().await?;
        let created = self
            .create_in(&mut tx, new, salt, actor, reason, now_ms)
            .await;
        finish(tx, created).await
    }

    async fn create_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        new: NewMigration,
        salt: u64,
        actor: &str,
        reason: &Reason,
        now_ms: i64,
    ) -> Result<Migration, StoreError> {
        // Taking the version first queues concurrent creates on its row lock (Postgres), so the
        // existence check below sees a create that committed meanwhile.
        let version = next_version(tx).await?;
        let key = new.key.clone();
        let already = move || StoreError::AlreadyExists(format!("migration {key}"));
        let exists: Option<String> =
            sqlx::query_scalar("SELECT key FROM migrations WHERE key = $1")
                .bind(new.key.as_str())
                .fetch_optional(&mut **tx)
                .await?;
        if exists.is_some() {
            return Err(already());
        }
        let migration = Migration::create(new, salt, version, now_ms);
        let row = MigrationRow::from_domain(&migration)?;
        sqlx::query(
            "INSERT INTO migrations (key, version, stage, rollout_bp, created_at_ms, \
             updated_at_ms, state) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&row.key)
        .bind(row.version)
        .bind(&row.stage)
        .bind(row.rollout_bp)
        .bind(row.created_at_ms)
        .bind(row.updated_at_ms)
        .bind(&row.state)
        .execute(&mut **tx)
        .await
        .map_err(|e| match e {
            // Backstop: a create that raced past the check above.
            sqlx::Error::Database(db) if db.is_unique_violation() => already(),
            other => other.into(),
        })?;
        insert_audit(
            tx, &migration, actor, now_ms, "create", reason, "", &row.state,
        )
        .await?;
        self.notify(tx, version).await?;
        Ok(migration)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Migration>, StoreError> {
        let row: Option<MigrationRow> = sqlx::query_as(&format!(
            "SELECT {} FROM migrations WHERE key = $1",
            MigrationRow::COLUMNS
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(MigrationRow::into_domain).transpose()
    }

    /// The current state of every migration changed after `version` (each once, oldest
    /// first), and the snapshot version they bring the caller to.
    pub async fn changed_since(
        &self,
        version: Version,
    ) -> Result<(Vec<Migration>, Version), StoreError> {
        let mut tx = self.begin_consistent_read().await?;
        let current = read_snapshot_version(&mut tx).await?;
        let rows: Vec<MigrationRow> = sqlx::query_as(&format!(
            "SELECT {} FROM migrations WHERE version > $1 AND version <= $2 ORDER BY version",
            MigrationRow::COLUMNS
        ))
        .bind(version.0 as i64)
        .bind(current.0 as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let migrations = rows
            .into_iter()
            .map(MigrationRow::into_domain)
            .collect::<Result<_, _>>()?;
        Ok((migrations, current))
    }

    /// Every change committed after `version`, one state per version in version order (read
    /// from the audit log, which holds the state after each change), and the snapshot version
    /// they bring the caller to. Unlike [`Store::changed_since`], two changes to one migration
    /// come back as two states.
    pub async fn changes_since(
        &self,
        version: Version,
    ) -> Result<(Vec<Migration>, Version), StoreError> {
        let mut tx = self.begin_consistent_read().await?;
        let current = read_snapshot_version(&mut tx).await?;
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT migration_key, version, after_json FROM audit_log \
             WHERE version > $1 AND version <= $2 ORDER BY version",
        )
        .bind(version.0 as i64)
        .bind(current.0 as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let changes = rows
            .into_iter()
            .map(|(key, v, state)| {
                serde_json::from_str::<Migration>(&state)
                    .map_err(|e| StoreError::Corrupt(format!("audit of {key} at {v}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok((changes, current))
    }

    /// A read transaction whose statements all see one snapshot. SQLite's read transactions
    /// already do; Postgres' default (read committed) would let a commit land between reading
    /// the version and reading the rows, so ask for repeatable read.
    async fn begin_consistent_read(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// Applies a domain decision to one migration in one transaction (see the module docs).
    /// `decide` gets the current state, the live fleet and the version the change will take.
    pub async fn mutate<F>(
        &self,
        key: &str,
        actor: &str,
        now_ms: i64,
        client_ttl: Duration,
        decide: F,
    ) -> Result<Mutated, StoreError>
    where
        F: FnOnce(&Migration, &Fleet, Version) -> Result<(Migration, Reason, String), DomainError>,
    {
        self.mutate_with_traffic(key, actor, now_ms, client_ttl, None, |m, fleet, _, v| {
            decide(m, fleet, v)
        })
        .await
    }

    /// Like [`Store::mutate`], also reading the migration's traffic per minute since
    /// `traffic_since_ms` in the same transaction, so a decision on it (the contract gate) and
    /// its record are one atomic step.
    pub async fn mutate_with_traffic<F>(
        &self,
        key: &str,
        actor: &str,
        now_ms: i64,
        client_ttl: Duration,
        traffic_since_ms: Option<i64>,
        decide: F,
    ) -> Result<Mutated, StoreError>
    where
        F: FnOnce(
            &Migration,
            &Fleet,
            &[(i64, TrafficCounts)],
            Version,
        ) -> Result<(Migration, Reason, String), DomainError>,
    {
        let _guard = self.lock_writes().await;
        let mut tx = self.pool.begin().await?;
        let mutated = self
            .mutate_in(
                &mut tx,
                key,
                actor,
                now_ms,
                client_ttl,
                traffic_since_ms,
                decide,
            )
            .await;
        finish(tx, mutated).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn mutate_in<F>(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        key: &str,
        actor: &str,
        now_ms: i64,
        client_ttl: Duration,
        traffic_since_ms: Option<i64>,
        decide: F,
    ) -> Result<Mutated, StoreError>
    where
        F: FnOnce(
            &Migration,
            &Fleet,
            &[(i64, TrafficCounts)],
            Version,
        ) -> Result<(Migration, Reason, String), DomainError>,
    {
        let row: Option<MigrationRow> = sqlx::query_as(&format!(
            "SELECT {} FROM migrations WHERE key = $1{}",
            MigrationRow::COLUMNS,
            self.backend.for_update()
        ))
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
        let current = row
            .ok_or_else(|| StoreError::NotFound(key.to_owned()))?
            .into_domain()?;
        let fleet = load_fleet(tx, now_ms, client_ttl).await?;
        let traffic = match traffic_since_ms {
            Some(since) => traffic_minutes(&mut **tx, key, since).await?,
            None => Vec::new(),
        };
        let version = next_version(tx).await?;
        let (next, reason, action) = match decide(&current, &fleet, &traffic, version) {
            Ok(decided) => decided,
            Err(error) => {
                return Err(StoreError::Refused {
                    error,
                    current: Box::new(current),
                });
            }
        };
        let before = MigrationRow::from_domain(&current)?;
        let row = MigrationRow::from_domain(&next)?;
        let updated = sqlx::query(
            "UPDATE migrations SET version = $1, stage = $2, rollout_bp = $3, updated_at_ms = $4, \
             state = $5 WHERE key = $6 AND version = $7",
        )
        .bind(row.version)
        .bind(&row.stage)
        .bind(row.rollout_bp)
        .bind(row.updated_at_ms)
        .bind(&row.state)
        .bind(&row.key)
        .bind(before.version)
        .execute(&mut **tx)
        .await?;
        if updated.rows_affected() != 1 {
            // Unreachable while the row lock / write mutex is held; refuse rather than guess.
            return Err(StoreError::Refused {
                error: DomainError::Stale {
                    expected: current.version,
                    current: Version(0),
                },
                current: Box::new(current),
            });
        }
        insert_audit(
            tx,
            &next,
            actor,
            now_ms,
            &action,
            &reason,
            &before.state,
            &row.state,
        )
        .await?;
        self.notify(tx, version).await?;
        Ok(Mutated { migration: next })
    }

    /// One page of a migration's audit log, newest first.
    pub async fn audit(
        &self,
        key: &str,
        limit: u32,
        before_id: Option<u64>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, migration_key, version, actor, at_ms, action, reason, before_json, \
             after_json FROM audit_log WHERE migration_key = $1 AND id < $2 \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(key)
        .bind(before_id.map_or(i64::MAX, |id| id.min(i64::MAX as u64) as i64))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(AuditRow::into_record).collect())
    }

    /// Records that an instance is alive and which snapshot version it has applied.
    pub async fn heartbeat(
        &self,
        service: &str,
        instance_id: &str,
        applied: Version,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let _guard = self.lock_writes().await;
        sqlx::query(
            "INSERT INTO client_instances (service, instance_id, applied_version, first_seen_ms, \
             last_seen_ms) VALUES ($1, $2, $3, $4, $4) ON CONFLICT (service, instance_id) DO \
             UPDATE SET applied_version = excluded.applied_version, \
             last_seen_ms = excluded.last_seen_ms",
        )
        .bind(service)
        .bind(instance_id)
        .bind(applied.0 as i64)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets an instance that shut down cleanly (and which migrations it evaluated).
    pub async fn forget_instance(
        &self,
        service: &str,
        instance_id: &str,
    ) -> Result<(), StoreError> {
        let _guard = self.lock_writes().await;
        let mut tx = self.pool.begin().await?;
        let result = async {
            for table in ["client_instance_migrations", "client_instances"] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE service = $1 AND instance_id = $2"
                ))
                .bind(service)
                .bind(instance_id)
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        }
        .await;
        // Rolled back before the write lock is released, like every write here.
        finish(tx, result).await
    }

    /// Every instance seen within `window` (live ones are those within the client TTL).
    pub async fn instances(
        &self,
        now_ms: i64,
        window: Duration,
    ) -> Result<Vec<ClientInstance>, StoreError> {
        let rows: Vec<InstanceRow> = sqlx::query_as(
            "SELECT service, instance_id, applied_version, first_seen_ms, last_seen_ms \
             FROM client_instances WHERE last_seen_ms >= $1 ORDER BY service, instance_id",
        )
        .bind(now_ms - window.as_millis() as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(InstanceRow::into_record).collect())
    }

    /// Records which migrations an instance evaluates (as of its latest heartbeat).
    pub async fn heartbeat_migrations(
        &self,
        service: &str,
        instance_id: &str,
        migrations: &[String],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if migrations.is_empty() {
            return Ok(());
        }
        let _guard = self.lock_writes().await;
        let mut tx = self.pool.begin().await?;
        let result = async {
            for key in migrations {
                sqlx::query(
                    "INSERT INTO client_instance_migrations (service, instance_id, migration_key, \
                     last_seen_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (migration_key, service, \
                     instance_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms",
                )
                .bind(service)
                .bind(instance_id)
                .bind(key)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    /// Instances seen within `window` whose heartbeats name `key` among their migrations.
    pub async fn instances_of(
        &self,
        key: &str,
        now_ms: i64,
        window: Duration,
    ) -> Result<Vec<ClientInstance>, StoreError> {
        let rows: Vec<InstanceRow> = sqlx::query_as(
            "SELECT i.service, i.instance_id, i.applied_version, i.first_seen_ms, \
             i.last_seen_ms FROM client_instances i JOIN client_instance_migrations m \
             ON m.service = i.service AND m.instance_id = i.instance_id \
             WHERE m.migration_key = $1 AND i.last_seen_ms >= $2 AND m.last_seen_ms >= $2 \
             ORDER BY i.service, i.instance_id",
        )
        .bind(key)
        .bind(now_ms - window.as_millis() as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(InstanceRow::into_record).collect())
    }

    /// Adds one service's counts to the per-minute rollups, all in one transaction.
    pub async fn add_traffic(
        &self,
        service: &str,
        entries: &[(String, i64, TrafficCounts)],
    ) -> Result<(), StoreError> {
        let _guard = self.lock_writes().await;
        let mut tx = self.pool.begin().await?;
        let result = async {
            for (key, minute, counts) in entries {
                // Create the row if missing, then lock it (Postgres) and add to it.
                sqlx::query(
                    "INSERT INTO traffic_minutes (migration_key, minute_ms, service, counts) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (migration_key, minute_ms, service) \
                     DO NOTHING",
                )
                .bind(key)
                .bind(*minute)
                .bind(service)
                .bind("{}")
                .execute(&mut *tx)
                .await?;
                let stored: String = sqlx::query_scalar(&format!(
                    "SELECT counts FROM traffic_minutes WHERE migration_key = $1 \
                     AND minute_ms = $2 AND service = $3{}",
                    self.backend.for_update()
                ))
                .bind(key)
                .bind(*minute)
                .bind(service)
                .fetch_one(&mut *tx)
                .await?;
                let mut total = parse_counts(&stored)?;
                total.add(counts);
                sqlx::query(
                    "UPDATE traffic_minutes SET counts = $1 WHERE migration_key = $2 \
                     AND minute_ms = $3 AND service = $4",
                )
                .bind(
                    serde_json::to_string(&total)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                )
                .bind(key)
                .bind(*minute)
                .bind(service)
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    /// A migration's counts per minute from `since_minute_ms` on, summed over services.
    pub async fn traffic(
        &self,
        key: &str,
        since_minute_ms: i64,
    ) -> Result<Vec<(i64, TrafficCounts)>, StoreError> {
        traffic_minutes(&self.pool, key, since_minute_ms).await
    }

    /// The live fleet (instances that reported within `ttl`).
    pub async fn fleet(&self, now_ms: i64, ttl: Duration) -> Result<Fleet, StoreError> {
        let mut tx = self.pool.begin().await?;
        let fleet = load_fleet(&mut tx, now_ms, ttl).await;
        tx.commit().await?;
        fleet
    }

    /// Deletes rollups of minutes before `before_ms` and instance records not seen since then.
    pub async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        let _guard = self.lock_writes().await;
        let mut removed = 0;
        for sql in [
            "DELETE FROM traffic_minutes WHERE minute_ms < $1",
            "DELETE FROM client_instance_migrations WHERE last_seen_ms < $1",
            "DELETE FROM client_instances WHERE last_seen_ms < $1",
        ] {
            removed += sqlx::query(sql)
                .bind(before_ms)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(removed)
    }

    /// A backfill runner's position after a batch; the rate is smoothed over checkpoints.
    pub async fn save_checkpoint(
        &self,
        key: &str,
        checkpoint: &Checkpoint,
    ) -> Result<Checkpoint, StoreError> {
        let _guard = self.lock_writes().await;
        let mut tx = self.pool.begin().await?;
        let saved = async {
            let previous = load_checkpoint(&mut *tx, key, self.backend.for_update()).await?;
            let rate = match &previous {
                Some(p)
                    if checkpoint.updated_at_ms > p.updated_at_ms
                        && checkpoint.rows_done >= p.rows_done =>
                {
                    let instant = (checkpoint.rows_done - p.rows_done) as f64 * 1000.0
                        / (checkpoint.updated_at_ms - p.updated_at_ms) as f64;
                    // An exponentially weighted average: steady, yet follows a rate change
                    // within a few batches.
                    if p.rate_rows_per_second > 0.0 {
                        0.7 * p.rate_rows_per_second + 0.3 * instant
                    } else {
                        instant
                    }
                }
                Some(p) => p.rate_rows_per_second,
                None => 0.0,
            };
            let saved = Checkpoint {
                rate_rows_per_second: rate,
                ..checkpoint.clone()
            };
            sqlx::query(
                "INSERT INTO backfill_checkpoints (migration_key, cursor, rows_done, rows_total, \
                 rate_milli, runner, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (migration_key) DO UPDATE SET cursor = excluded.cursor, \
                 rows_done = excluded.rows_done, rows_total = excluded.rows_total, \
                 rate_milli = excluded.rate_milli, runner = excluded.runner, \
                 updated_at_ms = excluded.updated_at_ms",
            )
            .bind(key)
            .bind(&saved.cursor)
            .bind(saved.rows_done as i64)
            .bind(saved.rows_total_estimate as i64)
            .bind((saved.rate_rows_per_second * 1000.0) as i64)
            .bind(&saved.runner)
            .bind(saved.updated_at_ms)
            .execute(&mut *tx)
            .await?;
            Ok(saved)
        }
        .await;
        finish(tx, saved).await
    }

    pub async fn checkpoint(&self, key: &str) -> Result<Option<Checkpoint>, StoreError> {
        load_checkpoint(&self.pool, key, "").await
    }

    /// Forgets a backfill's position (it was cancelled: a new start begins at the start).
    pub async fn delete_checkpoint(&self, key: &str) -> Result<(), StoreError> {
        let _guard = self.lock_writes().await;
        sqlx::query("DELETE FROM backfill_checkpoints WHERE migration_key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn count_tokens(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<TokenRecord, StoreError> {
        let _guard = self.lock_writes().await;
        let result: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "INSERT INTO api_tokens (name, role, token_hash, created_at_ms) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(token_hash)
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await;
        match result {
            Ok(id) => Ok(TokenRecord {
                id: id as u64,
                name: name.to_owned(),
                role,
                created_at_ms: now_ms,
                revoked_at_ms: None,
            }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::AlreadyExists(format!("token named {name}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The live (not revoked) token with this hash.
    pub async fn find_token(&self, token_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT id, name, role, created_at_ms, revoked_at_ms FROM api_tokens \
             WHERE token_hash = $1 AND revoked_at_ms IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(TokenRow::into_record).transpose()
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows: Vec<TokenRow> = sqlx::query_as(
            "SELECT id, name, role, created_at_ms, revoked_at_ms FROM api_tokens ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TokenRow::into_record).collect()
    }

    /// Revokes a token; returns its record and hash (so caches can drop it).
    pub async fn revoke_token(
        &self,
        id: u64,
        now_ms: i64,
    ) -> Result<(TokenRecord, String), StoreError> {
        let _guard = self.lock_writes().await;
        let mut tx = self.pool.begin().await?;
        let revoked = async {
            sqlx::query(
                "UPDATE api_tokens SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL",
            )
            .bind(now_ms)
            .bind(id as i64)
            .execute(&mut *tx)
            .await?;
            let row: Option<(i64, String, String, i64, Option<i64>, String)> = sqlx::query_as(
                "SELECT id, name, role, created_at_ms, revoked_at_ms, token_hash \
                 FROM api_tokens WHERE id = $1",
            )
            .bind(id as i64)
            .fetch_optional(&mut *tx)
            .await?;
            Ok(row)
        }
        .await;
        let row = finish(tx, revoked).await?;
        let (id, name, role, created_at_ms, revoked_at_ms, hash) =
            row.ok_or_else(|| StoreError::NotFound(format!("token {id}")))?;
        let record = TokenRow {
            id,
            name,
            role,
            created_at_ms,
            revoked_at_ms,
        }
        .into_record()?;
        Ok((record, hash))
    }

    async fn lock_writes(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }

    async fn notify(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        version: Version,
    ) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            // Delivered to listeners only when the transaction commits.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(version.0.to_string())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

/// Commits on success; on failure rolls back explicitly, before the caller releases the SQLite
/// write mutex. (A dropped transaction only queues its rollback for the connection's next use,
/// leaving SQLite's write lock held meanwhile, so the next writer would fail with SQLITE_BUSY.)
async fn finish<T>(
    tx: sqlx::Transaction<'_, sqlx::Any>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rolling back a refused change failed");
            }
            Err(e)
        }
    }
}

async fn traffic_minutes<'e, E>(
    executor: E,
    key: &str,
    since_minute_ms: i64,
) -> Result<Vec<(i64, TrafficCounts)>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT minute_ms, counts FROM traffic_minutes WHERE migration_key = $1 \
         AND minute_ms >= $2 ORDER BY minute_ms",
    )
    .bind(key)
    .bind(since_minute_ms)
    .fetch_all(executor)
    .await?;
    let mut minutes: Vec<(i64, TrafficCounts)> = Vec::new();
    for (minute, counts) in rows {
        let counts = parse_counts(&counts)?;
        match minutes.last_mut() {
            Some((m, total)) if *m == minute => total.add(&counts),
            _ => minutes.push((minute, counts)),
        }
    }
    Ok(minutes)
}

async fn load_checkpoint<'e, E>(
    executor: E,
    key: &str,
    lock: &str,
) -> Result<Option<Checkpoint>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row: Option<(String, i64, i64, i64, String, i64)> = sqlx::query_as(&format!(
        "SELECT cursor, rows_done, rows_total, rate_milli, runner, updated_at_ms \
         FROM backfill_checkpoints WHERE migration_key = $1{lock}"
    ))
    .bind(key)
    .fetch_optional(executor)
    .await?;
    Ok(
        row.map(|(cursor, done, total, rate_milli, runner, at)| Checkpoint {
            cursor,
            rows_done: done.max(0) as u64,
            rows_total_estimate: total.max(0) as u64,
            rate_rows_per_second: rate_milli as f64 / 1000.0,
            runner,
            updated_at_ms: at,
        }),
    )
}

fn parse_counts(stored: &str) -> Result<TrafficCounts, StoreError> {
    if stored == "{}" {
        return Ok(TrafficCounts::default());
    }
    serde_json::from_str(stored).map_err(|e| StoreError::Corrupt(format!("traffic counts: {e}")))
}

async fn read_snapshot_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
) -> Result<Version, StoreError> {
    let v: i64 = sqlx::query_scalar("SELECT version FROM snapshot_version WHERE id = 1")
        .fetch_one(&mut **tx)
        .await?;
    Ok(Version(v as u64))
}

async fn next_version(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<Version, StoreError> {
    let v: i64 = sqlx::query_scalar(
        "UPDATE snapshot_version SET version = version + 1 WHERE id = 1 RETURNING version",
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(Version(v as u64))
}

async fn load_fleet(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    now_ms: i64,
    ttl: Duration,
) -> Result<Fleet, StoreError> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT service, instance_id, applied_version FROM client_instances \
         WHERE last_seen_ms >= $1",
    )
    .bind(now_ms - ttl.as_millis() as i64)
    .fetch_all(&mut **tx)
    .await?;
    Ok(Fleet {
        live: rows
            .into_iter()
            .map(|(service, instance_id, applied)| LiveInstance {
                service,
                instance_id,
                applied_version: Version(applied as u64),
            })
            .collect(),
    })
}

#[allow(clippy::too_many_arguments)]
async fn insert_audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    after: &Migration,
    actor: &str,
    now_ms: i64,
    action: &str,
    reason: &Reason,
    before_json: &str,
    after_json: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (migration_key, version, actor, at_ms, action, reason, \
         before_json, after_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(after.key.as_str())
    .bind(after.version.0 as i64)
    .bind(actor)
    .bind(now_ms)
    .bind(action)
    .bind(reason.as_str())
    .bind(before_json)
    .bind(after_json)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
