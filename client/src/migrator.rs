//! The migrator: the application hands over its old-shape and new-shape read and write
//! functions, and the migrator runs what the entity's stage calls for, compares shadow reads,
//! and counts what happened.
//!
//! # Writes
//! In the dual-write stages the authoritative side (old until `live`, new from `live` on) runs
//! first. If it fails, its error is returned and the other side does not run: the caller sees
//! exactly the failure of the shape that counts, and nothing was written to the other. If the
//! authoritative write succeeds and the other fails, the operation still succeeds: the
//! application's source of truth has the data, the failure is counted (errors of that side,
//! and [`MigratorStats::diverged_writes`]), logged with the entity key (rate-limited), returned
//! to the caller in [`Written::other`], and the two shapes now differ for that entity. The
//! backfill repairs that: it copies every row from the authoritative shape and is idempotent,
//! so (re-)running it before `shadow` converges the new shape, and shadow comparisons report
//! any divergence left before reads switch. Failing the whole operation instead would turn a
//! problem in the shape that does not yet count into an outage of the one that does.
//!
//! # Which write to use
//! - [`Migrator::write`] / [`Migrator::write_detailed`]: each side is its own operation (own
//!   transaction, own database, a cache, a search index). A crash between the two sides leaves
//!   the entity written on the authoritative side only, until a backfill pass repairs it. The
//!   only choice when the shapes live in different stores.
//! - [`Migrator::write_atomic`] (a pool: the migrator begins and commits) and
//!   [`Migrator::write_in`] (inside the application's own transaction): both shapes in one
//!   database. Both sides run in one transaction, authoritative first; the other side runs
//!   inside a savepoint, so its failure rolls back only its own work and the authoritative
//!   write still commits (counted, logged, returned as above). A crash anywhere before the
//!   commit leaves neither side written. Use it whenever the shapes share a database: shapes
//!   can only drift apart through a side's own failure, never through a crash.
//! - Strict mode ([`Migrator::strict_writes`], transactional writes only): a failing other side
//!   fails the whole write, and [`Migrator::write_atomic`] rolls both back. The shapes never
//!   differ, at the price that a fault in the shape that does not count yet is an outage of the
//!   one that does. Use it where a diverged entity is worse than a failed request (money moved
//!   between tables, a uniqueness the new shape must enforce) and the new path is proven.
//! - The transactional writes count each side's outcome once the transaction has ended: a
//!   failed `COMMIT` counts both sides as errors, since neither was written.
//!
//! # Reads
//! In `shadow` and `live` both sides are read (concurrently by default, serially, authoritative
//! first, if configured); the authoritative value is returned. On a sample of reads (the
//! migration's shadow sample) the caller's comparison runs; comparisons and mismatches are
//! counted and a mismatch is logged with the entity key. A failing non-authoritative read is
//! counted and logged and does not fail the operation. [`Migrator::read_compare`] takes a
//! comparison that says how two values differ; its description goes into the mismatch log.
//!
//! # What happened
//! [`Migrator::stats`] counts per side since the client started (reads, writes, errors;
//! comparisons and mismatches; writes left diverged; strict rollbacks). Mismatch and
//! side-failure logs are rate-limited per migration: the first few of each kind per minute with
//! their entity keys, then a summary line with how many were left out. The first mismatches of
//! each telemetry report also go to the server with their entity keys and descriptions, where
//! `switchyard mismatches KEY` lists the entities to repair.

use crate::atomic::{BeginTransaction, TxError, TxHandle, WriteTransaction};
use crate::handle::MigrationHandle;
use crate::logs::RateLimited;
use crate::telemetry::{Kind, Side as CountedSide};
use std::fmt::Display;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;
use switchyard_domain::traffic::MismatchSample;
use switchyard_domain::{BasisPoints, Side, Stage};
use switchyard_proto::limits::{
    MAX_ENTITY_KEY_CHARS, MAX_MISMATCH_DESCRIPTION_CHARS, MAX_MISMATCH_SAMPLES,
};

/// Runs reads and writes for one migration. Cheap to clone; share it by reference across tasks.
#[derive(Clone)]
pub struct Migrator {
    handle: MigrationHandle,
    serial_reads: bool,
    strict_writes: bool,
}

/// What a write did: the authoritative side's value, and what became of the other side.
#[derive(Debug)]
pub struct Written<T, E> {
    pub value: T,
    pub other: OtherSide<E>,
}

/// The non-authoritative side of a write.
#[derive(Debug)]
pub enum OtherSide<E> {
    /// The entity's stage writes one shape only.
    NotWritten,
    /// Written too (in a transactional write: committed with the authoritative side).
    Written,
    /// Failed; the authoritative write stands and the shapes differ for this entity until a
    /// backfill pass repairs it.
    Failed(E),
}

/// Counts since the client started, for one migration (see [`Migrator::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigratorStats {
    pub old: SideStats,
    pub new: SideStats,
    /// Shadow reads compared, and how many of those differed.
    pub comparisons: u64,
    pub mismatches: u64,
    /// Writes whose authoritative side succeeded and whose other side failed: entities that
    /// differ until a backfill pass repairs them.
    pub diverged_writes: u64,
    /// Transactional writes failed whole in strict mode because the other side failed.
    pub strict_rollbacks: u64,
}

/// One side's operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SideStats {
    pub reads: u64,
    pub writes: u64,
    /// Failed reads and writes (a failed commit counts each side it undid).
    pub errors: u64,
}

/// Per-migration events the migrator counts and logs beyond the traffic counters: shared by
/// every migrator of the migration through its slot.
pub(crate) struct Events {
    diverged_writes: AtomicU64,
    strict_rollbacks: AtomicU64,
    /// Mismatches with their entities, until the next telemetry report takes them.
    samples: Mutex<Vec<MismatchSample>>,
    mismatches: RateLimited,
    read_failures: RateLimited,
    write_failures: RateLimited,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            diverged_writes: AtomicU64::new(0),
            strict_rollbacks: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
            mismatches: RateLimited::new("shadow read mismatches"),
            read_failures: RateLimited::new("non-authoritative read failures"),
            write_failures: RateLimited::new("non-authoritative write failures"),
        }
    }
}

impl Events {
    /// Keeps a mismatch for the next report, up to what one report entry carries: the first
    /// few of each report interval, which is what an operator needs to find a pattern. A key
    /// too long for the server, or with control characters, is not sampled (a cut key would
    /// name another entity); the description is cut to length.
    fn sample(&self, entity: &str, difference: &dyn Display) {
        if entity.is_empty()
            || entity.chars().count() > MAX_ENTITY_KEY_CHARS
            || entity.chars().any(char::is_control)
        {
            return;
        }
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() >= MAX_MISMATCH_SAMPLES {
            return;
        }
        let description = difference
            .to_string()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_MISMATCH_DESCRIPTION_CHARS)
            .collect();
        samples.push(MismatchSample {
            entity_key: entity.to_owned(),
            description,
            observed_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        });
    }

    /// The samples kept since the last call.
    pub(crate) fn take_samples(&self) -> Vec<MismatchSample> {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Summarises log windows that ended (called on every telemetry report).
    pub(crate) fn flush_logs(&self, migration: &str) {
        let now = Instant::now();
        for limit in [&self.mismatches, &self.read_failures, &self.write_failures] {
            limit.flush(migration, now);
        }
    }
}

/// One side's outcome, counted when it is final (see `record`).
#[derive(Clone, Copy)]
struct Outcome {
    side: CountedSide,
    ok: bool,
    micros: u64,
}

impl Migrator {
    pub(crate) fn new(handle: MigrationHandle) -> Self {
        Self {
            handle,
            serial_reads: false,
            strict_writes: false,
        }
    }

    /// Run the two reads of `shadow` and `live` one after the other (authoritative first)
    /// instead of concurrently, e.g. when both use one database connection.
    pub fn serial_reads(mut self, serial: bool) -> Self {
        self.serial_reads = serial;
        self
    }

    /// Strict transactional writes: in [`Migrator::write_atomic`] and [`Migrator::write_in`], a
    /// failing non-authoritative side fails the whole write instead of being rolled back to its
    /// savepoint (see the module documentation for when). No effect on [`Migrator::write`],
    /// whose authoritative side has committed by the time the other runs.
    pub fn strict_writes(mut self, strict: bool) -> Self {
        self.strict_writes = strict;
        self
    }

    pub fn handle(&self) -> &MigrationHandle {
        &self.handle
    }

    /// What this migration's migrators did since the client started.
    pub fn stats(&self) -> MigratorStats {
        let slot = &self.handle.slot;
        let counts = slot.counters.totals();
        let side = |s: &switchyard_domain::traffic::SideCounts| SideStats {
            reads: s.reads,
            writes: s.writes,
            errors: s.errors,
        };
        MigratorStats {
            old: side(&counts.old),
            new: side(&counts.new),
            comparisons: counts.comparisons,
            mismatches: counts.mismatches,
            diverged_writes: slot.events.diverged_writes.load(Relaxed),
            strict_rollbacks: slot.events.strict_rollbacks.load(Relaxed),
        }
    }

    /// Reads `entity` as its stage says, comparing shadow reads with `==`.
    pub async fn read<T, E, OF, OFut, NF, NFut>(
        &self,
        entity: &str,
        old: OF,
        new: NF,
    ) -> Result<T, E>
    where
        T: PartialEq,
        E: Display,
        OF: FnOnce() -> OFut,
        OFut: Future<Output = Result<T, E>>,
        NF: FnOnce() -> NFut,
        NFut: Future<Output = Result<T, E>>,
    {
        self.read_with(entity, old, new, |a, b| a == b).await
    }

    /// Reads `entity` as its stage says, comparing shadow reads with `same(old, new)`.
    pub async fn read_with<T, E, OF, OFut, NF, NFut, C>(
        &self,
        entity: &str,
        old: OF,
        new: NF,
        same: C,
    ) -> Result<T, E>
    where
        E: Display,
        OF: FnOnce() -> OFut,
        OFut: Future<Output = Result<T, E>>,
        NF: FnOnce() -> NFut,
        NFut: Future<Output = Result<T, E>>,
        C: FnOnce(&T, &T) -> bool,
    {
        self.read_compare(entity, old, new, |a, b| {
            (!same(a, b)).then_some(Difference::Unexplained)
        })
        .await
    }

    /// Reads `entity` as its stage says; `compare(old, new)` returns `None` when the two agree
    /// and otherwise a short description of the difference (e.g. `"handle: 'ann' vs 'Ann'"`),
    /// which the mismatch log carries with the entity key. Keep it short and free of personal
    /// data the logs must not hold.
    pub async fn read_compare<T, E, OF, OFut, NF, NFut, C, D>(
        &self,
        entity: &str,
        old: OF,
        new: NF,
        compare: C,
    ) -> Result<T, E>
    where
        E: Display,
        OF: FnOnce() -> OFut,
        OFut: Future<Output = Result<T, E>>,
        NF: FnOnce() -> NFut,
        NFut: Future<Output = Result<T, E>>,
        C: FnOnce(&T, &T) -> Option<D>,
        D: Display,
    {
        let slot = &self.handle.slot;
        let (stage, state) = slot.stage(Some(entity.as_bytes()));
        let plan = stage.plan();
        match plan.read {
            Side::Old => self.timed(CountedSide::Old, Kind::Read, old()).await,
            Side::New => self.timed(CountedSide::New, Kind::Read, new()).await,
            Side::Both => {
                let (old_result, new_result) = if !self.serial_reads {
                    // Both start now: one clock read serves both latencies.
                    let start = Instant::now();
                    futures::join!(
                        self.timed_from(start, CountedSide::Old, Kind::Read, old()),
                        self.timed_from(start, CountedSide::New, Kind::Read, new())
                    )
                } else if plan.return_value == Side::Old {
                    let o = self.timed(CountedSide::Old, Kind::Read, old()).await;
                    (o, self.timed(CountedSide::New, Kind::Read, new()).await)
                } else {
                    let n = self.timed(CountedSide::New, Kind::Read, new()).await;
                    (self.timed(CountedSide::Old, Kind::Read, old()).await, n)
                };
                if plan.shadow_compare && sampled(state.shadow_sample) {
                    if let (Ok(o), Ok(n)) = (&old_result, &new_result) {
                        let difference = compare(o, n);
                        slot.counters.comparison(difference.is_none());
                        if let Some(difference) = difference {
                            slot.events.sample(entity, &difference);
                            if self.admit(&slot.events.mismatches) {
                                tracing::warn!(
                                    migration = %self.handle.key(), entity, %stage,
                                    %difference,
                                    "shadow read mismatch: old and new shapes disagree"
                                );
                            }
                        }
                    }
                }
                let (returned, other, other_side) = match plan.return_value {
                    Side::New => (new_result, old_result, "old"),
                    _ => (old_result, new_result, "new"),
                };
                if let Err(e) = &other {
                    if self.admit(&slot.events.read_failures) {
                        tracing::warn!(
                            migration = %self.handle.key(), entity, side = other_side, error = %e,
                            "non-authoritative read failed; returning the authoritative value"
                        );
                    }
                }
                returned
            }
        }
    }

    /// Writes `entity` as its stage says; returns the authoritative side's result.
    pub async fn write<T, E, OF, OFut, NF, NFut>(
        &self,
        entity: &str,
        old: OF,
        new: NF,
    ) -> Result<T, E>
    where
        E: Display,
        OF: FnOnce() -> OFut,
        OFut: Future<Output = Result<T, E>>,
        NF: FnOnce() -> NFut,
        NFut: Future<Output = Result<T, E>>,
    {
        Ok(self.write_detailed(entity, old, new).await?.value)
    }

    /// [`Migrator::write`], also returning what became of the non-authoritative side.
    pub async fn write_detailed<T, E, OF, OFut, NF, NFut>(
        &self,
        entity: &str,
        old: OF,
        new: NF,
    ) -> Result<Written<T, E>, E>
    where
        E: Display,
        OF: FnOnce() -> OFut,
        OFut: Future<Output = Result<T, E>>,
        NF: FnOnce() -> NFut,
        NFut: Future<Output = Result<T, E>>,
    {
        let stage = self.handle.stage(entity);
        let plan = stage.plan();
        let (value, second, other) = match (plan.write, plan.authoritative_write) {
            (Side::Old, _) => {
                let value = self.timed(CountedSide::Old, Kind::Write, old()).await?;
                return Ok(Written {
                    value,
                    other: OtherSide::NotWritten,
                });
            }
            (Side::New, _) => {
                let value = self.timed(CountedSide::New, Kind::Write, new()).await?;
                return Ok(Written {
                    value,
                    other: OtherSide::NotWritten,
                });
            }
            (_, Side::New) => {
                let value = self.timed(CountedSide::New, Kind::Write, new()).await?;
                let other = self.timed(CountedSide::Old, Kind::Write, old()).await;
                (value, CountedSide::Old, other)
            }
            _ => {
                let value = self.timed(CountedSide::Old, Kind::Write, old()).await?;
                let other = self.timed(CountedSide::New, Kind::Write, new()).await;
                (value, CountedSide::New, other)
            }
        };
        let other = match other {
            Ok(_) => OtherSide::Written,
            Err(e) => {
                self.diverged(entity, stage, second, &e);
                OtherSide::Failed(e)
            }
        };
        Ok(Written { value, other })
    }

    /// Writes `entity` as its stage says, both sides in one transaction begun from `db` and
    /// committed here (see the module documentation). `old` and `new` get a handle to the
    /// transaction ([`TxHandle`]) and lock it to use it.
    ///
    /// ```no_run
    /// # async fn example(migrator: switchyard_client::Migrator, pool: sqlx::PgPool)
    /// #     -> Result<(), sqlx::Error> {
    /// let (id, total) = (42_i64, 1999_i64);
    /// migrator
    ///     .write_atomic(
    ///         &pool,
    ///         "42",
    ///         |tx| async move {
    ///             sqlx::query("UPDATE orders SET total = $2 WHERE id = $1")
    ///                 .bind(id).bind(total).execute(&mut **tx.lock().await).await.map(drop)
    ///         },
    ///         |tx| async move {
    ///             sqlx::query("UPDATE orders SET total_cents = $2 WHERE id = $1")
    ///                 .bind(id).bind(total).execute(&mut **tx.lock().await).await.map(drop)
    ///         },
    ///     )
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn write_atomic<S, T, E, OF, OFut, NF, NFut>(
        &self,
        db: &S,
        entity: &str,
        old: OF,
        new: NF,
    ) -> Result<Written<T, E>, E>
    where
        S: BeginTransaction,
        E: Display + From<TxError<S>>,
        OF: FnOnce(TxHandle<S::Transaction>) -> OFut,
        OFut: Future<Output = Result<T, E>>,
        NF: FnOnce(TxHandle<S::Transaction>) -> NFut,
        NFut: Future<Output = Result<T, E>>,
    {
        let tx = TxHandle::new(db.begin().await?);
        let (result, outcomes) = self.sides_in(&tx, entity, old, new).await;
        let tx = tx.into_inner().await;
        match result {
            Ok(written) => match tx.commit().await {
                Ok(()) => {
                    self.record(&outcomes, true);
                    Ok(written)
                }
                Err(e) => {
                    // Nothing was written: neither side counts as a success.
                    self.record(&outcomes, false);
                    Err(e.into())
                }
            },
            Err(e) => {
                self.record(&outcomes, false);
                // The connection may be gone; the error the caller needs is the side's.
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback after a failed write failed");
                }
                Err(e)
            }
        }
    }

    /// Writes `entity` as its stage says inside the application's own transaction, which the
    /// application commits (with whatever else it wrote through the same handle). On `Err` the
    /// application must roll the transaction back: in strict mode the other side's failure is
    /// returned without its work being undone. Outcomes are counted when the sides end (the
    /// migrator cannot see the commit).
    ///
    /// ```no_run
    /// # async fn example(migrator: switchyard_client::Migrator, pool: sqlx::PgPool)
    /// #     -> Result<(), sqlx::Error> {
    /// use switchyard_client::atomic::TxHandle;
    /// let tx = TxHandle::new(pool.begin().await?);
    /// sqlx::query("INSERT INTO audit (order_id) VALUES (42)")
    ///     .execute(&mut **tx.lock().await).await?;
    /// migrator
    ///     .write_in(
    ///         &tx,
    ///         "42",
    ///         |tx| async move {
    ///             sqlx::query("INSERT INTO orders (id) VALUES (42)")
    ///                 .execute(&mut **tx.lock().await).await.map(drop)
    ///         },
    ///         |tx| async move {
    ///             sqlx::query("INSERT INTO shipments (order_id) VALUES (42)")
    ///                 .execute(&mut **tx.lock().await).await.map(drop)
    ///         },
    ///     )
    ///     .await?;
    /// tx.into_inner().await.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn write_in<X, T, E, OF, OFut, NF, NFut>(
        &self,
        tx: &TxHandle<X>,
        entity: &str,
        old: OF,
        new: NF,
    ) -> Result<Written<T, E>, E>
    where
        X: WriteTransaction,
        E: Display + From<X::Error>,
        OF: FnOnce(TxHandle<X>) -> OFut,
        OFut: Future<Output = Result<T, E>>,
        NF: FnOnce(TxHandle<X>) -> NFut,
        NFut: Future<Output = Result<T, E>>,
    {
        let (result, outcomes) = self.sides_in(tx, entity, old, new).await;
        self.record(&outcomes, true);
        result
    }

    /// The sides of a transactional write, authoritative first, the other in a savepoint
    /// unless strict; with each side's outcome, to be counted by the caller.
    async fn sides_in<X, T, E, OF, OFut, NF, NFut>(
        &self,
        tx: &TxHandle<X>,
        entity: &str,
        old: OF,
        new: NF,
    ) -> (Result<Written<T, E>, E>, [Option<Outcome>; 2])
    where
        X: WriteTransaction,
        E: Display + From<X::Error>,
        OF: FnOnce(TxHandle<X>) -> OFut,
        OFut: Future<Output = Result<T, E>>,
        NF: FnOnce(TxHandle<X>) -> NFut,
        NFut: Future<Output = Result<T, E>>,
    {
        let stage = self.handle.stage(entity);
        let plan = stage.plan();
        let (old_side, new_side) = (CountedSide::Old, CountedSide::New);
        match (plan.write, plan.authoritative_write) {
            (Side::Old, _) => {
                let (result, outcome) = measured(old_side, old(tx.clone())).await;
                (only(result), [Some(outcome), None])
            }
            (Side::New, _) => {
                let (result, outcome) = measured(new_side, new(tx.clone())).await;
                (only(result), [Some(outcome), None])
            }
            (_, Side::New) => {
                let first = measured(new_side, new(tx.clone())).await;
                self.other_in(tx, entity, stage, first, old_side, old).await
            }
            _ => {
                let first = measured(old_side, old(tx.clone())).await;
                self.other_in(tx, entity, stage, first, new_side, new).await
            }
        }
    }

    /// After the authoritative side (`first`): the other side, in a savepoint unless strict.
    async fn other_in<X, T, E, OF, OFut>(
        &self,
        tx: &TxHandle<X>,
        entity: &str,
        stage: Stage,
        first: (Result<T, E>, Outcome),
        second: CountedSide,
        other: OF,
    ) -> (Result<Written<T, E>, E>, [Option<Outcome>; 2])
    where
        X: WriteTransaction,
        E: Display + From<X::Error>,
        OF: FnOnce(TxHandle<X>) -> OFut,
        OFut: Future<Output = Result<T, E>>,
    {
        let (value, first_outcome) = match first {
            (Ok(value), outcome) => (value, outcome),
            (Err(e), outcome) => return (Err(e), [Some(outcome), None]),
        };
        if self.strict_writes {
            let (result, outcome) = measured(second, other(tx.clone())).await;
            return match result {
                Ok(_) => (
                    Ok(Written {
                        value,
                        other: OtherSide::Written,
                    }),
                    [Some(first_outcome), Some(outcome)],
                ),
                Err(e) => {
                    let events = &self.handle.slot.events;
                    events.strict_rollbacks.fetch_add(1, Relaxed);
                    if self.admit(&events.write_failures) {
                        tracing::warn!(
                            migration = %self.handle.key(), entity, %stage, side = name(second),
                            error = %e,
                            "non-authoritative write failed in strict mode; the whole write \
                             fails and is rolled back"
                        );
                    }
                    // The first side is undone with it: count it as not written.
                    let first_undone = Outcome {
                        ok: false,
                        ..first_outcome
                    };
                    (Err(e), [Some(first_undone), Some(outcome)])
                }
            };
        }
        if let Err(e) = tx.lock().await.savepoint().await {
            return (Err(e.into()), [Some(first_outcome), None]);
        }
        let (result, outcome) = measured(second, other(tx.clone())).await;
        let outcomes = [Some(first_outcome), Some(outcome)];
        match result {
            Ok(_) => match tx.lock().await.release_savepoint().await {
                Ok(()) => (
                    Ok(Written {
                        value,
                        other: OtherSide::Written,
                    }),
                    outcomes,
                ),
                Err(e) => (Err(e.into()), outcomes),
            },
            Err(side_error) => match tx.lock().await.rollback_to_savepoint().await {
                Ok(()) => {
                    self.diverged(entity, stage, second, &side_error);
                    (
                        Ok(Written {
                            value,
                            other: OtherSide::Failed(side_error),
                        }),
                        outcomes,
                    )
                }
                Err(e) => {
                    // The transaction is unusable (a lost connection, usually): the write
                    // fails whole, and the side's own error is only logged.
                    tracing::warn!(
                        migration = %self.handle.key(), entity, side = name(second),
                        error = %side_error, rollback_error = %e,
                        "non-authoritative write failed and its savepoint could not be rolled \
                         back; the whole write fails"
                    );
                    (Err(e.into()), outcomes)
                }
            },
        }
    }

    /// Counts outcomes whose transaction ended (`committed`: it committed, so each side's own
    /// result stands; otherwise nothing was written and every side counts as failed).
    fn record(&self, outcomes: &[Option<Outcome>; 2], committed: bool) {
        for o in outcomes.iter().flatten() {
            self.handle
                .slot
                .counters
                .operation(o.side, Kind::Write, o.ok && committed, o.micros);
        }
    }

    /// A non-authoritative write failed while the authoritative one stands.
    fn diverged(&self, entity: &str, stage: Stage, side: CountedSide, e: &impl Display) {
        let events = &self.handle.slot.events;
        events.diverged_writes.fetch_add(1, Relaxed);
        if self.admit(&events.write_failures) {
            tracing::warn!(
                migration = %self.handle.key(), entity, %stage, side = name(side), error = %e,
                "non-authoritative write failed; the operation succeeded on the authoritative \
                 side and a backfill pass repairs this entity"
            );
        }
    }

    fn admit(&self, limit: &RateLimited) -> bool {
        limit.admit(self.handle.key(), Instant::now())
    }

    async fn timed<T, E>(
        &self,
        side: CountedSide,
        kind: Kind,
        op: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.timed_from(Instant::now(), side, kind, op).await
    }

    async fn timed_from<T, E>(
        &self,
        start: Instant,
        side: CountedSide,
        kind: Kind,
        op: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let result = op.await;
        self.handle
            .slot
            .counters
            .operation(side, kind, result.is_ok(), micros_since(start));
        result
    }
}

/// What a comparison given to [`Migrator::read_with`] (a plain `bool`) says of a mismatch.
enum Difference {
    Unexplained,
}

impl Display for Difference {
    /// Nothing: an empty description is how the server and CLI know there was none.
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Unexplained => Ok(()),
        }
    }
}

/// Runs one side, noting its outcome for counting later.
async fn measured<T, E>(
    side: CountedSide,
    op: impl Future<Output = Result<T, E>>,
) -> (Result<T, E>, Outcome) {
    let start = Instant::now();
    let result = op.await;
    let outcome = Outcome {
        side,
        ok: result.is_ok(),
        micros: micros_since(start),
    };
    (result, outcome)
}

fn only<T, E>(result: Result<T, E>) -> Result<Written<T, E>, E> {
    result.map(|value| Written {
        value,
        other: OtherSide::NotWritten,
    })
}

fn name(side: CountedSide) -> &'static str {
    match side {
        CountedSide::Old => "old",
        CountedSide::New => "new",
    }
}

fn micros_since(start: Instant) -> u64 {
    start.elapsed().as_micros().min(u128::from(u64::MAX)) as u64
}

/// Whether this read is in the compared sample.
#[inline]
fn sampled(share: BasisPoints) -> bool {
    if share.is_full() {
        true
    } else if share.is_zero() {
        false
    } else {
        rand::random::<u32>() % 10_000 < share.get()
    }
}
