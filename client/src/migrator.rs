//! The migrator: the application hands over its old-shape and new-shape read and write
//! functions, and the migrator runs what the entity's stage calls for, compares shadow reads,
//! and counts what happened.
//!
//! # Writes
//! In the dual-write stages the authoritative side (old until `live`, new from `live` on) runs
//! first. If it fails, its error is returned and the other side does not run: the caller sees
//! exactly the failure of the shape that counts, and nothing was written to the other. If the
//! authoritative write succeeds and the other fails, the operation still succeeds: the
//! application's source of truth has the data, the failure is counted (errors of that side) and
//! logged with the entity key, and the two shapes now differ for that entity. The backfill
//! repairs that: it copies every row from the authoritative shape and is idempotent, so
//! (re-)running it before `shadow` converges the new shape, and shadow comparisons report any
//! divergence left before reads switch. Failing the whole operation instead would turn a
//! problem in the shape that does not yet count into an outage of the one that does.
//!
//! # Reads
//! In `shadow` and `live` both sides are read (concurrently by default, serially, authoritative
//! first, if configured); the authoritative value is returned. On a sample of reads (the
//! migration's shadow sample) the caller's comparison runs; comparisons and mismatches are
//! counted and a mismatch is logged with the entity key. A failing non-authoritative read is
//! counted and logged and does not fail the operation.

use crate::handle::MigrationHandle;
use crate::telemetry::{Kind, Side as CountedSide};
use std::fmt::Display;
use std::future::Future;
use std::time::Instant;
use switchyard_domain::{BasisPoints, Side};

/// Runs reads and writes for one migration. Cheap to clone; share it by reference across tasks.
#[derive(Clone)]
pub struct Migrator {
    handle: MigrationHandle,
    serial_reads: bool,
}

impl Migrator {
    pub(crate) fn new(handle: MigrationHandle) -> Self {
        Self {
            handle,
            serial_reads: false,
        }
    }

    /// Run the two reads of `shadow` and `live` one after the other (authoritative first)
    /// instead of concurrently, e.g. when both use one database connection.
    pub fn serial_reads(mut self, serial: bool) -> Self {
        self.serial_reads = serial;
        self
    }

    pub fn handle(&self) -> &MigrationHandle {
        &self.handle
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
                        let matched = same(o, n);
                        slot.counters.comparison(matched);
                        if !matched {
                            tracing::warn!(
                                migration = %self.handle.key(), entity, %stage,
                                "shadow read mismatch: old and new shapes disagree"
                            );
                        }
                    }
                }
                let (returned, other, other_side) = match plan.return_value {
                    Side::New => (new_result, old_result, "old"),
                    _ => (old_result, new_result, "new"),
                };
                if let Err(e) = &other {
                    tracing::warn!(
                        migration = %self.handle.key(), entity, side = other_side, error = %e,
                        "non-authoritative read failed; returning the authoritative value"
                    );
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
        let stage = self.handle.stage(entity);
        let plan = stage.plan();
        let warn = |side: &str, e: &E| {
            tracing::warn!(
                migration = %self.handle.key(), entity, %stage, side, error = %e,
                "non-authoritative write failed; the operation succeeded on the authoritative \
                 side and a backfill pass repairs this entity"
            );
        };
        match (plan.write, plan.authoritative_write) {
            (Side::Old, _) => self.timed(CountedSide::Old, Kind::Write, old()).await,
            (Side::New, _) => self.timed(CountedSide::New, Kind::Write, new()).await,
            (_, Side::New) => {
                let value = self.timed(CountedSide::New, Kind::Write, new()).await?;
                if let Err(e) = self.timed(CountedSide::Old, Kind::Write, old()).await {
                    warn("old", &e);
                }
                Ok(value)
            }
            _ => {
                let value = self.timed(CountedSide::Old, Kind::Write, old()).await?;
                if let Err(e) = self.timed(CountedSide::New, Kind::Write, new()).await {
                    warn("new", &e);
                }
                Ok(value)
            }
        }
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
        let micros = start.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
        self.handle
            .slot
            .counters
            .operation(side, kind, result.is_ok(), micros);
        result
    }
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
