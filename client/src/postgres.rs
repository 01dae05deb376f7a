//! The PostgreSQL flavour of the backfill (feature `postgres`): a ready batch function for
//! [`crate::BackfillRunner::run`], given a table, its key column, the work to do on each batch
//! of its rows, and the predicate of rows still to do. The work is a `SET` expression
//! ([`PgBackfill::new`]: `UPDATE <table> SET …`) or any data-modifying statement over the
//! batch's keys ([`PgBackfill::statement`]: an insert into a new table that links back, a copy
//! with a transformation, a default filled before a constraint is validated), and either way
//! the batches get the same transactions, timeouts, retries, window and sweep.
//!
//! ```no_run
//! # async fn example(client: switchyard_client::Client, pool: sqlx::PgPool)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! use switchyard_client::postgres::PgBackfill;
//!
//! let users = PgBackfill::new(pool, "users", "id", "handle = username")
//!     .pending("handle IS DISTINCT FROM username");
//! let runner = client
//!     .backfill("users.username-to-handle")
//!     .batch_size(1_000)
//!     .total_estimate(users.estimate_rows().await?);
//! runner.run(|cursor, limit| users.batch(cursor, limit)).await?;
//! # Ok(()) }
//! ```
//!
//! # One batch
//! Each batch is its own short transaction:
//! 1. `set_config('lock_timeout', …, true)` and `statement_timeout` (the `SET LOCAL` of the
//!    transaction), so a batch never queues behind, or holds up, the application for long;
//! 2. the next `limit` keys after the cursor (a window of the key index), and the window's rows
//!    that match the pending predicate locked `FOR NO KEY UPDATE SKIP LOCKED`;
//! 3. the work on the locked rows: the `SET`, or the statement, which reads their keys as the
//!    relation `switchyard_batch (switchyard_key)` (a `WITH` query placed before the
//!    statement's own);
//! 4. commit. The cursor moves to the window's last key whatever the predicate matched, so a
//!    batch's cost is bounded by `limit` even where few rows are still pending.
//!
//! Locking the table's rows before the work writes anything is also the lock order: a writer
//! that, like a dual write, locks the source row before it writes the new shape waits for the
//! batch or the batch for it, and they never deadlock.
//!
//! [`PgBackfill::repair`] runs the same work for given keys only (entities found to differ,
//! from `switchyard mismatches KEY --keys-only`), in batch transactions with the same
//! timeouts and retries.
//!
//! # Two passes
//! `SKIP LOCKED` keeps the backfill from waiting on the application, but it also passes over
//! rows that someone holds at that moment. A writer holding a row dual-writes it (rule 3 holds
//! every writer at dual_write 100% while a backfill runs), but anything else holding it does
//! not: a `SELECT … FOR UPDATE`, a job touching another column. So after the keyset pass
//! (cursor `keyset:KEY`) a sweep pass (cursor `sweep:KEY`) walks the table again from the start
//! and takes the rows still matching the predicate *without* skipping: it waits for each lock up
//! to `lock_timeout`, and a lock timeout is retried with backoff. The sweep writes only what the
//! first pass could not, but it reads the table's keys once more; it is what makes "every row
//! is backfilled" true. Without a pending predicate there is nothing to sweep by, so the single
//! pass waits for locks (up to `lock_timeout`, retried) instead of skipping.
//!
//! Rows are locked `FOR NO KEY UPDATE`, which foreign-key checks of the application's inserts
//! into child tables do not conflict with (`SET` must not change the key).
//!
//! Rows reported to the runner: rows examined in the keyset pass (so progress against the
//! table's size is accurate), rows the work affected in the sweep. The rows-per-second limit therefore
//! paces the keyset pass; the sweep is paced by `pause_between_batches`.
//!
//! # Failures
//! A lock timeout, a deadlock or a serialization failure rolls the batch back and retries it
//! after a jittered, doubling delay. A statement timeout does the same with half the window, and
//! the window grows back after batches that succeed. After `max_attempts` the error goes to the
//! runner, whose checkpoint lets a new run resume at the last committed batch. Every batch is
//! idempotent as long as the work is (`new = f(old)`; `ON CONFLICT` for an insert), which is
//! what makes re-running a rolled-back or uncheckpointed batch safe.
//!
//! The table and key column are identifiers (quoted here, so give them as the catalog spells
//! them: lower case unless created quoted). The `SET` expression, the statement and the
//! predicate are SQL written by the application's developers, placed into the statements as
//! they are: never build them from user input.

use crate::backfill::Batch;
use crate::health::Window;
use rand::Rng;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row, Transaction};
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

pub use crate::pg_health::PgHealth;

/// Why a Postgres backfill batch failed.
#[derive(Debug, thiserror::Error)]
pub enum PgBackfillError {
    /// The table, the key column or the SQL given is not usable.
    #[error("the backfill of {table} is misconfigured: {message}")]
    Setup { table: String, message: String },
    /// A batch failed after its retries (or with an error not worth retrying).
    #[error("a backfill batch on {table} failed after {attempts} attempt(s): {source}")]
    Database {
        table: String,
        attempts: u32,
        #[source]
        source: sqlx::Error,
    },
}

/// A backfill of one PostgreSQL table; see the module documentation.
pub struct PgBackfill {
    pool: PgPool,
    /// As given, for messages.
    table_name: String,
    table: String,
    key: String,
    apply: Apply,
    pending: Option<String>,
    lock_timeout: Duration,
    statement_timeout: Duration,
    max_attempts: u32,
    first_retry: Duration,
    /// The key column's SQL type, read from the catalog on the first batch.
    key_type: OnceLock<String>,
    /// The window after statement timeouts (shrunk, then grown back to the runner's limit).
    window: Window,
}

/// What a batch does to the rows it locked.
#[derive(Debug, Clone)]
enum Apply {
    /// `UPDATE <table> SET <expression>` on them.
    Set(String),
    /// The application's data-modifying statement, reading their keys from `switchyard_batch`.
    Statement(String),
}

/// Which pass a cursor is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Keyset,
    Sweep,
}

impl PgBackfill {
    /// A backfill of `table` (optionally `schema.table`) in the order of `key_column` (unique
    /// and indexed: the primary key, usually), applying `UPDATE table SET <set>` to each row.
    pub fn new(pool: PgPool, table: &str, key_column: &str, set: &str) -> PgBackfill {
        PgBackfill {
            pool,
            table_name: table.to_owned(),
            table: table
                .split('.')
                .map(quote_ident)
                .collect::<Vec<_>>()
                .join("."),
            key: quote_ident(key_column),
            apply: Apply::Set(set.to_owned()),
            pending: None,
            lock_timeout: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(10),
            max_attempts: 8,
            first_retry: Duration::from_millis(50),
            key_type: OnceLock::new(),
            window: Window::default(),
        }
    }

    /// A backfill of `table` in the order of `key_column` (as [`PgBackfill::new`]) whose batches
    /// run `statement`, any data-modifying SQL (`INSERT`, `UPDATE`, `DELETE`, `MERGE`, with
    /// its own `WITH` if need be), over the batch: the keys the batch locked are the relation
    /// `switchyard_batch`, one column `switchyard_key` of the key column's type. For a table
    /// split, the new table's rows from the old, each linking back:
    ///
    /// ```text
    /// INSERT INTO shipments (order_id, address)
    /// SELECT o.id, o.ship_address FROM orders o
    /// JOIN switchyard_batch b ON b.switchyard_key = o.id
    /// ON CONFLICT (order_id) DO UPDATE SET address = EXCLUDED.address
    /// ```
    ///
    /// The statement runs in the batch's transaction after the batch's rows of `table` are
    /// locked `FOR NO KEY UPDATE`, so writers that lock the source row first (as a dual write
    /// updating it does) and the backfill never deadlock; rows reported in the sweep are the
    /// statement's affected rows. It must be idempotent (`ON CONFLICT`, `IS DISTINCT FROM`), as
    /// a batch may run again; the configuration check refuses one that does not plan, does not
    /// read `switchyard_batch` (it would touch the whole table on every batch) or modifies
    /// nothing.
    pub fn statement(pool: PgPool, table: &str, key_column: &str, statement: &str) -> PgBackfill {
        let mut backfill = PgBackfill::new(pool, table, key_column, "");
        backfill.apply = Apply::Statement(statement.to_owned());
        backfill
    }

    /// The rows still to do, e.g. `handle IS DISTINCT FROM username`. Needed for the sweep pass
    /// (without it, rows skipped because they were locked are never visited again) and makes a
    /// re-run touch only what is left.
    pub fn pending(mut self, predicate: &str) -> Self {
        self.pending = Some(predicate.to_owned());
        self
    }

    /// How long a batch waits for a row or table lock before it is rolled back and retried
    /// (default 1 s).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How long one batch statement may run (default 10 s); a timeout retries with half the
    /// window.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Attempts per batch before the error goes to the runner (default 8), and the first delay
    /// between them (default 50 ms, doubling, jittered, at most 5 s).
    pub fn retries(mut self, max_attempts: u32, first_delay: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.first_retry = first_delay;
        self
    }

    /// The planner's estimate of the table's rows (`pg_class.reltuples`), or an exact count when
    /// the table was never analyzed: for [`crate::BackfillRunner::total_estimate`].
    pub async fn estimate_rows(&self) -> Result<u64, PgBackfillError> {
        let estimate: Option<f32> =
            sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)")
                .bind(&self.table)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.database(1, e))?;
        match estimate {
            None => Err(self.setup("the table does not exist".to_owned())),
            Some(rows) if rows >= 0.0 => Ok(rows as u64),
            // -1: never vacuumed or analyzed; count instead.
            Some(_) => {
                let sql = format!("SELECT count(*) FROM {}", self.table);
                let rows: i64 = sqlx::query_scalar(&sql)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| self.database(1, e))?;
                Ok(rows.max(0) as u64)
            }
        }
    }

    /// Runs one batch: the batch function to give [`crate::BackfillRunner::run`].
    pub async fn batch(
        &self,
        cursor: Option<String>,
        limit: u64,
    ) -> Result<Batch, PgBackfillError> {
        let (pass, after) = parse_cursor(cursor.as_deref());
        if pass == Pass::Sweep && self.pending.is_none() {
            // A checkpoint from a configuration that had a predicate: nothing more to sweep.
            return Ok(Batch {
                rows: 0,
                last_key: cursor,
                done: true,
            });
        }
        let (window, (scanned, last, affected)) = self
            .retrying(limit, |key_type, window| {
                self.run_once(pass, after, window, key_type)
            })
            .await?;
        let end = scanned < window;
        tracing::debug!(table = %self.table_name, ?pass, scanned, affected, "backfill batch");
        Ok(match (pass, end) {
            (Pass::Keyset, false) => Batch {
                rows: scanned,
                last_key: Some(format!("keyset:{}", last.unwrap_or_default())),
                done: false,
            },
            (Pass::Keyset, true) if self.pending.is_some() => Batch {
                rows: scanned,
                last_key: Some("sweep".to_owned()),
                done: false,
            },
            (Pass::Keyset, true) => Batch {
                rows: scanned,
                last_key: last.map(|k| format!("keyset:{k}")),
                done: true,
            },
            (Pass::Sweep, _) => Batch {
                rows: affected,
                last_key: last.map(|k| format!("sweep:{k}")),
                done: end,
            },
        })
    }

    /// Runs the batch's work for the given keys only, whatever the pending predicate says: to
    /// repair entities found to differ, e.g. those `switchyard mismatches KEY --keys-only`
    /// lists. Keys are taken in chunks of 500, each a batch transaction with its locks, timeouts
    /// and retries; keys naming no row are skipped. Returns the rows the work affected. Like the
    /// backfill it copies from the old shape, so repair while the old shape is authoritative
    /// (before `live`).
    pub async fn repair(&self, keys: &[String]) -> Result<u64, PgBackfillError> {
        let mut affected = 0;
        for chunk in keys.chunks(500) {
            let (_, n) = self
                .retrying(chunk.len() as u64, |key_type, _| {
                    self.repair_once(chunk, key_type)
                })
                .await?;
            affected += n;
        }
        Ok(affected)
    }

    /// The retry loop every batch transaction runs in: the configuration checked (once), then
    /// `attempt(key type, window)` until it succeeds, retrying the errors worth retrying after
    /// a jittered, doubling delay, a statement timeout with half the window. Returns the window
    /// used and what the attempt returned.
    async fn retrying<'a, T, F, Fut>(
        &'a self,
        limit: u64,
        mut attempt: F,
    ) -> Result<(u64, T), PgBackfillError>
    where
        F: FnMut(&'a str, u64) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let mut attempts = 0;
        let mut delay = self.first_retry;
        loop {
            attempts += 1;
            let window = self.window.get(limit);
            let result = match self.key_type().await {
                Ok(Ok(key_type)) => attempt(key_type, window).await,
                Ok(Err(message)) => return Err(self.setup(message)),
                Err(e) => Err(e),
            };
            let e = match result {
                Ok(value) => {
                    // Grow back towards the runner's limit after a success.
                    self.window.grow(window, limit, 2.0);
                    return Ok((window, value));
                }
                Err(e) => e,
            };
            let Some(code) = retryable(&e) else {
                return Err(self.database(attempts, e));
            };
            if attempts >= self.max_attempts {
                return Err(self.database(attempts, e));
            }
            if code == "57014" {
                self.window.shrink(window / 2);
            }
            tracing::warn!(
                table = %self.table_name, attempt = attempts, error = %e,
                "backfill batch rolled back; retrying after {delay:?}"
            );
            let jittered = delay.mul_f64(rand::rng().random_range(0.5..1.0));
            tokio::time::sleep(jittered).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// One batch transaction: the window's keys, its pending rows locked, the work applied to
    /// them. Returns (keys in the window, the window's last key, rows the work affected).
    async fn run_once(
        &self,
        pass: Pass,
        after: Option<&str>,
        window: u64,
        key_type: &str,
    ) -> Result<(u64, Option<String>, u64), sqlx::Error> {
        let mut tx: Transaction<'_, Postgres> = self.pool.begin().await?;
        self.set_timeouts(&mut tx).await?;
        let sql = self.window_statement(pass, after.is_some(), key_type);
        let mut query = sqlx::query(&sql);
        if let Some(after) = after {
            query = query.bind(after);
        }
        let row = query
            .bind(i64::try_from(window).unwrap_or(i64::MAX))
            .fetch_one(&mut *tx)
            .await?;
        let scanned: i64 = row.try_get(0)?;
        let last: Option<String> = row.try_get(1)?;
        let locked: Vec<String> = row.try_get(2)?;
        let affected = self.apply_to(&mut tx, &locked, key_type).await?;
        tx.commit().await?;
        Ok((scanned as u64, last, affected))
    }

    /// One repair transaction: the given keys' rows locked (waiting up to the lock timeout),
    /// the work applied to them.
    async fn repair_once(&self, keys: &[String], key_type: &str) -> Result<u64, sqlx::Error> {
        let mut tx: Transaction<'_, Postgres> = self.pool.begin().await?;
        self.set_timeouts(&mut tx).await?;
        let (table, key) = (&self.table, &self.key);
        let locked: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT coalesce(array_agg(l.switchyard_key::text), '{{}}') FROM ( \
                 SELECT {key} AS switchyard_key FROM {table} \
                 WHERE {key} = ANY($1::text[]::{key_type}[]) ORDER BY {key} FOR NO KEY UPDATE \
             ) l"
        ))
        .bind(keys)
        .fetch_one(&mut *tx)
        .await?;
        let affected = self.apply_to(&mut tx, &locked, key_type).await?;
        tx.commit().await?;
        Ok(affected)
    }

    /// The work on the rows `locked` (their keys as text): rows affected.
    async fn apply_to(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        locked: &[String],
        key_type: &str,
    ) -> Result<u64, sqlx::Error> {
        if locked.is_empty() {
            return Ok(0);
        }
        let result = sqlx::query(&self.apply_statement(key_type))
            .bind(locked)
            .execute(&mut **tx)
            .await?;
        Ok(result.rows_affected())
    }

    /// The window of keys after the cursor, and the window's pending rows locked: (keys in the
    /// window, its last key, the locked keys as text).
    fn window_statement(&self, pass: Pass, has_cursor: bool, key_type: &str) -> String {
        let (table, key) = (&self.table, &self.key);
        let (after, limit) = if has_cursor {
            (format!("WHERE {key} > $1::text::{key_type}"), "$2")
        } else {
            (String::new(), "$1")
        };
        let pending = self
            .pending
            .as_deref()
            .map_or(String::new(), |p| format!("AND ({p})"));
        // The first pass never waits for the application; the sweep waits, up to lock_timeout.
        // Without a predicate there is no sweep to come back for skipped rows: wait instead.
        let skip = match pass {
            Pass::Keyset if self.pending.is_some() => "SKIP LOCKED",
            Pass::Keyset => "",
            Pass::Sweep => "",
        };
        // The window's last key is ordered by the key itself: an unqualified name in that
        // ORDER BY would pick the `::text` output column and order text-wise ('99' > '100').
        format!(
            "WITH switchyard_window AS ( \
                 SELECT {key} AS switchyard_key FROM {table} {after} ORDER BY {key} LIMIT {limit} \
             ), switchyard_locked AS ( \
                 SELECT {key} AS switchyard_key FROM {table} \
                 WHERE {key} IN (SELECT switchyard_key FROM switchyard_window) {pending} \
                 FOR NO KEY UPDATE {skip} \
             ) \
             SELECT (SELECT count(*) FROM switchyard_window), \
                    (SELECT w.switchyard_key::text AS last_key FROM switchyard_window w \
                     ORDER BY w.switchyard_key DESC LIMIT 1), \
                    (SELECT coalesce(array_agg(l.switchyard_key::text), '{{}}') \
                     FROM switchyard_locked l)"
        )
    }

    /// The work, with the locked keys (`$1`, text) as the relation `switchyard_batch`.
    fn apply_statement(&self, key_type: &str) -> String {
        let batch =
            format!("switchyard_batch (switchyard_key) AS (SELECT unnest($1::text[])::{key_type})");
        match &self.apply {
            Apply::Set(set) => format!(
                "WITH {batch} UPDATE {table} SET {set} \
                 WHERE {key} IN (SELECT switchyard_key FROM switchyard_batch)",
                table = self.table,
                key = self.key,
            ),
            Apply::Statement(statement) => {
                // The application's own WITH list goes on after ours, at the top level where
                // PostgreSQL requires data-modifying WITH queries to be.
                let trimmed = statement.trim_start();
                match strip_keyword(trimmed, "WITH") {
                    Some(rest) => match strip_keyword(rest.trim_start(), "RECURSIVE") {
                        Some(rest) => format!("WITH RECURSIVE {batch}, {rest}"),
                        None => format!("WITH {batch}, {rest}"),
                    },
                    None => format!("WITH {batch} {trimmed}"),
                }
            }
        }
    }

    /// The key column's type (for comparing the text cursor), read once. `Ok(Err(message))`
    /// is a misconfiguration; `Err` a database error (a lock timeout is retried like a batch).
    async fn key_type(&self) -> Result<Result<&str, String>, sqlx::Error> {
        if let Some(known) = self.key_type.get() {
            return Ok(Ok(known));
        }
        Ok(match self.check_configuration().await? {
            Ok(key_type) => Ok(self.key_type.get_or_init(|| key_type)),
            Err(message) => Err(message),
        })
    }

    /// Reads the key type and checks that the batch statements plan: a typo in the SET
    /// expression, the statement or the predicate fails here, clearly, before anything runs.
    /// Planning takes the table's lock, so it runs under the same lock timeout as a batch (a
    /// migration's DDL holding the table must not leave the backfill hanging).
    async fn check_configuration(&self) -> Result<Result<String, String>, sqlx::Error> {
        let mut tx: Transaction<'_, Postgres> = self.pool.begin().await?;
        self.set_timeouts(&mut tx).await?;
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(&self.table)
            .fetch_one(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(Err("the table does not exist".to_owned()));
        }
        let key: Option<(String, bool)> = sqlx::query_as(
            "SELECT format_type(atttypid, atttypmod), attnotnull FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attname = $2 AND attnum > 0 AND NOT attisdropped",
        )
        .bind(&self.table)
        .bind(unquote(&self.key))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((key_type, not_null)) = key else {
            return Ok(Err(format!("it has no column {}", unquote(&self.key))));
        };
        if !not_null {
            // Rows with a NULL key would never be visited (nothing is greater than NULL).
            return Ok(Err(format!(
                "the key column {} may be NULL; give a unique, NOT NULL key (the primary key, \
                 usually)",
                unquote(&self.key)
            )));
        }
        let what = match &self.apply {
            Apply::Set(set) => format!("the SET expression {set:?}"),
            Apply::Statement(statement) => {
                // Without it every batch would run the work on the whole table.
                if !statement.to_ascii_lowercase().contains("switchyard_batch") {
                    return Ok(Err(format!(
                        "the statement {statement:?} does not read switchyard_batch, the \
                         relation of the batch's keys (column switchyard_key); it would run on \
                         every row at every batch"
                    )));
                }
                format!("the statement {statement:?}")
            }
        };
        let predicate = self.pending.as_deref().unwrap_or("");
        let does_not_plan = |e: &sqlx::Error| {
            format!(
                "the batch statement does not plan (check {what} and the predicate \
                 {predicate:?}): {e}"
            )
        };
        for (pass, has_cursor) in [(Pass::Keyset, true), (Pass::Sweep, false)] {
            let explain = format!(
                "EXPLAIN {}",
                self.window_statement(pass, has_cursor, &key_type)
            );
            let mut query = sqlx::query(&explain);
            if has_cursor {
                query = query.bind(None::<String>);
            }
            if let Err(e) = query.bind(1i64).fetch_all(&mut *tx).await {
                if retryable(&e).is_some() {
                    return Err(e);
                }
                return Ok(Err(does_not_plan(&e)));
            }
        }
        let explain = format!("EXPLAIN {}", self.apply_statement(&key_type));
        let plan: Vec<String> = match sqlx::query_scalar(&explain)
            .bind(Vec::<String>::new())
            .fetch_all(&mut *tx)
            .await
        {
            Ok(plan) => plan,
            Err(e) if retryable(&e).is_some() => return Err(e),
            Err(e) => return Ok(Err(does_not_plan(&e))),
        };
        // A plan that modifies a table has a ModifyTable node, printed as "Insert on", etc.
        let modifies = plan.iter().any(|line| {
            ["Insert on ", "Update on ", "Delete on ", "Merge on "]
                .iter()
                .any(|node| line.contains(node))
        });
        if !modifies {
            return Ok(Err(format!(
                "{what} modifies nothing: give an INSERT, UPDATE, DELETE or MERGE"
            )));
        }
        tx.rollback().await?;
        Ok(Ok(key_type))
    }

    /// The transaction's `SET LOCAL lock_timeout` and `statement_timeout`.
    async fn set_timeouts(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        // The application name marks the batch's session for the duration of the transaction,
        // so [`PgHealth`] can tell which sessions wait on the batch's locks.
        sqlx::query(
            "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, \
             true), set_config('application_name', $3, true)",
        )
        .bind(format!("{}ms", self.lock_timeout.as_millis().max(1)))
        .bind(format!("{}ms", self.statement_timeout.as_millis().max(1)))
        .bind(self.application_name())
        .execute(&mut **tx)
        .await
        .map(drop)
    }

    /// What the batch's session is called while it runs (63 bytes at most, as PostgreSQL keeps).
    pub fn application_name(&self) -> String {
        let mut name = format!("switchyard-backfill {}", self.table_name);
        while name.len() > 63 {
            name.pop();
        }
        name
    }

    /// The health signals of this backfill's database, for [`crate::BackfillRunner::health`]:
    /// replicas' replay lag and the WAL rate of the pool's server, sessions waiting on this
    /// backfill's batches, autovacuum on its table.
    pub fn health(&self) -> PgHealth {
        PgHealth::new(self.pool.clone())
            .table(&self.table_name)
            .batch_sessions(&self.application_name())
    }

    fn setup(&self, message: String) -> PgBackfillError {
        PgBackfillError::Setup {
            table: self.table_name.clone(),
            message,
        }
    }

    fn database(&self, attempts: u32, source: sqlx::Error) -> PgBackfillError {
        PgBackfillError::Database {
            table: self.table_name.clone(),
            attempts,
            source,
        }
    }
}

/// Why an error is worth retrying: the SQLSTATE of lock_not_available (the lock timeout),
/// deadlock_detected, serialization_failure, query_canceled (the statement timeout), a
/// connection exception (08…) or an administrator's shutdown (57P01, a failover); or a lost
/// connection or an exhausted pool. A batch that failed was rolled back, so it runs again whole.
fn retryable(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => Some("connection".to_owned()),
        _ => {
            let code = e.as_database_error()?.code()?;
            (matches!(
                code.as_ref(),
                "55P03" | "40P01" | "40001" | "57014" | "57P01"
            ) || code.starts_with("08"))
            .then(|| code.into_owned())
        }
    }
}

/// `keyset:KEY` or `sweep:KEY`: after KEY (which may be empty: a text key `''`); a bare
/// `sweep` (or `keyset`, or nothing): from the start of that pass; anything else is a key of
/// the keyset pass (a checkpoint written by a custom batch function).
fn parse_cursor(cursor: Option<&str>) -> (Pass, Option<&str>) {
    match cursor {
        None | Some("") | Some("keyset") => (Pass::Keyset, None),
        Some("sweep") => (Pass::Sweep, None),
        Some(c) => {
            if let Some(k) = c.strip_prefix("keyset:") {
                (Pass::Keyset, Some(k))
            } else if let Some(k) = c.strip_prefix("sweep:") {
                (Pass::Sweep, Some(k))
            } else {
                (Pass::Keyset, Some(c))
            }
        }
    }
}

/// `sql` after its leading keyword `keyword` (any case, followed by a space or line break).
fn strip_keyword<'s>(sql: &'s str, keyword: &str) -> Option<&'s str> {
    let head = sql.get(..keyword.len())?;
    let rest = &sql[keyword.len()..];
    (head.eq_ignore_ascii_case(keyword) && rest.starts_with(char::is_whitespace)).then_some(rest)
}

/// An identifier quoted for SQL: `"name"`, with embedded quotes doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn unquote(quoted: &str) -> String {
    quoted[1..quoted.len() - 1].replace("\"\"", "\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_name_their_pass() {
        assert_eq!(parse_cursor(None), (Pass::Keyset, None));
        assert_eq!(parse_cursor(Some("")), (Pass::Keyset, None));
        assert_eq!(parse_cursor(Some("keyset:42")), (Pass::Keyset, Some("42")));
        assert_eq!(parse_cursor(Some("sweep")), (Pass::Sweep, None));
        // An empty text key is a position, not "from the start".
        assert_eq!(parse_cursor(Some("keyset:")), (Pass::Keyset, Some("")));
        assert_eq!(parse_cursor(Some("sweep:")), (Pass::Sweep, Some("")));
        assert_eq!(parse_cursor(Some("sweep:7")), (Pass::Sweep, Some("7")));
        // A bare key (a checkpoint written by a custom batch function) is a keyset position.
        assert_eq!(parse_cursor(Some("42")), (Pass::Keyset, Some("42")));
    }

    #[test]
    fn a_statements_with_list_follows_the_batch() {
        assert_eq!(
            strip_keyword("WITH x AS (SELECT 1) INSERT", "WITH"),
            Some(" x AS (SELECT 1) INSERT")
        );
        assert_eq!(strip_keyword("with\nx", "WITH"), Some("\nx"));
        assert_eq!(strip_keyword("WITHOUT", "WITH"), None);
        assert_eq!(strip_keyword("INSERT", "WITH"), None);
        assert_eq!(strip_keyword("WI", "WITH"), None);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("users"), "\"users\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(unquote(&quote_ident("we\"ird")), "we\"ird");
    }
}
