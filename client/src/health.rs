//! Database health signals a backfill runner yields to.
//!
//! A fast backfill competes with the application for the database: it fills replicas' replay
//! queues, writes WAL faster than archiving or replicas take it, holds row locks application
//! sessions then wait on, and races autovacuum on the table it rewrites. Between batches the
//! runner asks a [`HealthCheck`] for its signals and holds (re-checking on an interval, and
//! saying why in its checkpoints) while any is over its threshold.
//!
//! [`HealthCheck`] is a small trait so other databases' drivers can plug in; the PostgreSQL one
//! is [`crate::postgres::PgHealth`] (feature `postgres`). The batch's own duration is not a
//! signal here: the runner keeps batches near [`crate::BackfillRunner::batch_target`] by
//! shrinking and growing its window ([`Window`]).

use futures::future::BoxFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The thresholds signals are judged against; `None` turns a signal off. The runner's own
/// values, replaced field by field by the settings stored on the server
/// (`switchyard backfill set`).
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// A standby's replay lag in time (default 1 s).
    pub max_replica_lag: Option<Duration>,
    /// A standby's replay lag in WAL bytes (default 64 MiB).
    pub max_replica_lag_bytes: Option<u64>,
    /// WAL the primary writes per second (default 32 MiB/s).
    pub max_wal_bytes_per_second: Option<u64>,
    /// Hold after an application session waited on a lock the backfill held (default on).
    pub yield_to_blocked_sessions: bool,
    /// Hold while autovacuum works on the backfilled table (default on).
    pub hold_during_autovacuum: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_replica_lag: Some(Duration::from_secs(1)),
            max_replica_lag_bytes: Some(64 << 20),
            max_wal_bytes_per_second: Some(32 << 20),
            yield_to_blocked_sessions: true,
            hold_during_autovacuum: true,
        }
    }
}

/// A signal that is not healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Over its threshold: `reason` says which, by how much, against what (e.g. `replica
    /// 127.0.0.1:5433 replay lag 3.2 s > 1 s`).
    Over {
        signal: &'static str,
        reason: String,
    },
    /// Could not be read (permission denied, a view missing, a failed query). The runner
    /// carries on for a bounded grace, then holds rather than guess.
    Unreadable { signal: &'static str, error: String },
}

/// A source of health signals; see the module documentation.
pub trait HealthCheck: Send + Sync {
    /// Reads the signals between batches; returns those that are not healthy (none: go on).
    fn check<'a>(&'a self, thresholds: &'a Thresholds) -> BoxFuture<'a, Vec<Reading>>;

    /// Runs while a batch runs, and is dropped when the batch ends: for what can only be seen
    /// then (sessions waiting on the batch's locks). The default watches nothing.
    fn during_batch<'a>(&'a self, thresholds: &'a Thresholds) -> BoxFuture<'a, ()> {
        let _ = thresholds;
        Box::pin(std::future::pending())
    }
}

/// A batch window that shrinks at once and grows back gradually towards the runner's limit:
/// the Postgres flavour's after statement timeouts, the runner's to keep batches near their
/// target duration.
#[derive(Debug, Default)]
pub(crate) struct Window(AtomicU64);

impl Window {
    /// The window for a batch of at most `limit` rows.
    pub(crate) fn get(&self, limit: u64) -> u64 {
        match self.0.load(Ordering::Relaxed) {
            0 => limit,
            shrunk => shrunk.min(limit),
        }
        .max(1)
    }

    /// Down to `rows` (at least 1).
    pub(crate) fn shrink(&self, rows: u64) {
        self.0.store(rows.max(1), Ordering::Relaxed);
    }

    /// Up by `factor` from `current`, back to the full `limit` once it reaches it.
    pub(crate) fn grow(&self, current: u64, limit: u64, factor: f64) {
        if current < limit {
            let grown = ((current as f64 * factor).ceil() as u64).max(current + 1);
            self.0
                .store(if grown >= limit { 0 } else { grown }, Ordering::Relaxed);
        }
    }

    /// Back to the full limit (the limit itself changed).
    pub(crate) fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// A byte count for people: `3.2 MiB`. (Only the Postgres health signals word byte counts.)
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration for people, in seconds: `3.2 s`, `1 s`.
pub(crate) fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_shrinks_at_once_and_grows_back_to_the_limit() {
        let w = Window::default();
        assert_eq!(w.get(1000), 1000);
        w.shrink(100);
        assert_eq!(w.get(1000), 100);
        assert_eq!(w.get(50), 50, "never above the limit");
        w.grow(100, 1000, 1.25);
        assert_eq!(w.get(1000), 125);
        w.grow(900, 1000, 2.0);
        assert_eq!(w.get(1000), 1000);
        w.shrink(0);
        assert_eq!(w.get(1000), 1, "at least one row");
    }

    #[test]
    fn amounts_read_as_people_write_them() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(3.2 * 1024.0 * 1024.0), "3.2 MiB");
        assert_eq!(seconds(Duration::from_millis(3200)), "3.2 s");
        assert_eq!(seconds(Duration::from_secs(1)), "1 s");
    }
}
