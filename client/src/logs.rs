//! Logs that cannot flood: the migrator logs the first few mismatches and failures of each kind
//! per minute with their entity keys, then only counts, and says how many it left out.
//!
//! A mismatch or a failing non-authoritative side usually comes in bursts (a bug in the new
//! write path fails every write; a backfill not yet run makes every comparison differ). One line
//! per event would bury everything else the service logs and cost more than the operation. The
//! first lines carry what an operator needs to look (entity keys, the error); the summary line
//! says how much more there was; counts stay exact in `Migrator::stats()`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines logged per kind and migration in each window.
pub(crate) const LINES_PER_WINDOW: u32 = 5;
/// The window.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// What one kind of event may log.
#[derive(Debug)]
pub(crate) struct RateLimited {
    /// Names the events in the summary line, e.g. "shadow read mismatches".
    what: &'static str,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl RateLimited {
    pub(crate) const fn new(what: &'static str) -> Self {
        Self {
            what,
            window: Mutex::new(Window {
                started: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether this event gets its own line. A window that ended with events left out is
    /// summarised first.
    pub(crate) fn admit(&self, migration: &str, now: Instant) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.started.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            self.summarise(&mut w, migration);
            w.started = Some(now);
            w.logged = 0;
        }
        if w.logged < LINES_PER_WINDOW {
            w.logged += 1;
            true
        } else {
            w.suppressed += 1;
            false
        }
    }

    /// Summarises a window that has ended: called by the telemetry task on every report, so a
    /// burst's summary appears within a report interval of its window's end even if nothing
    /// else happens.
    pub(crate) fn flush(&self, migration: &str, now: Instant) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.started.is_some_and(|s| now.duration_since(s) >= WINDOW) {
            self.summarise(&mut w, migration);
        }
    }

    fn summarise(&self, w: &mut Window, migration: &str) {
        if w.suppressed > 0 {
            tracing::warn!(
                migration,
                left_out = w.suppressed,
                "{} more {} in the last minute were not logged one by one (counted in the \
                 migrator's stats and the server's traffic)",
                w.suppressed,
                self.what
            );
            w.suppressed = 0;
        }
    }

    /// Events left out of the current window so far (for tests and stats).
    #[cfg(test)]
    fn suppressed(&self) -> u64 {
        self.window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_lines_of_a_window_are_logged_then_counted() {
        let limit = RateLimited::new("mismatches");
        let start = Instant::now();
        let admitted = (0..100)
            .filter(|_| limit.admit("orders.split", start))
            .count();
        assert_eq!(admitted, LINES_PER_WINDOW as usize);
        assert_eq!(limit.suppressed(), 100 - u64::from(LINES_PER_WINDOW));
        // Within the window a flush keeps counting; after it, the summary resets the count.
        limit.flush("orders.split", start + WINDOW / 2);
        assert_eq!(limit.suppressed(), 95);
        limit.flush("orders.split", start + WINDOW);
        assert_eq!(limit.suppressed(), 0);
        // A new window logs again.
        assert!(limit.admit("orders.split", start + WINDOW * 2));
    }
}
