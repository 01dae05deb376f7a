//! Counting without contention: every counter is striped over cache-line-padded shards, and a
//! thread always adds to the same shard, so threads on different cores never write one line.
//! The background reporter swaps each shard's counters to zero and sums them, and keeps what it
//! took as running totals so [`Counters::totals`] (the migrator's `stats()`) counts since start.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use switchyard_domain::traffic::{
    Histogram, LATENCY_BUCKETS, SideCounts, TrafficCounts, latency_bucket,
};

/// Shards per migration. More than the cores of common hosts; a power of two.
const SHARDS: usize = 16;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's shard, assigned round-robin on first use.
#[inline]
fn shard_index() -> usize {
    SHARD.with(|s| {
        let i = s.get();
        if i != usize::MAX {
            return i;
        }
        let i = NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS;
        s.set(i);
        i
    })
}

#[derive(Default)]
struct SideAtomics {
    reads: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
}

impl SideAtomics {
    /// The counts, swapped to zero (`take`) or left as they are.
    fn read(&self, take: bool) -> SideCounts {
        let get = |a: &AtomicU64| {
            if take {
                a.swap(0, Relaxed)
            } else {
                a.load(Relaxed)
            }
        };
        let mut latency = Histogram::default();
        for (slot, a) in latency.0.iter_mut().zip(&self.latency) {
            *slot = get(a);
        }
        SideCounts {
            reads: get(&self.reads),
            writes: get(&self.writes),
            errors: get(&self.errors),
            latency,
        }
    }
}

#[derive(Default)]
#[repr(align(128))] // two cache lines: also keeps adjacent-line prefetching from sharing
struct Shard {
    old: SideAtomics,
    new: SideAtomics,
    comparisons: AtomicU64,
    mismatches: AtomicU64,
    without_entity: AtomicU64,
    fallback: AtomicU64,
}

/// Which shape an operation touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Old,
    New,
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

/// One migration's counters.
pub struct Counters {
    shards: Box<[Shard]>,
    /// Everything taken so far. The lock is held while shards are swapped and added here, so
    /// [`Counters::totals`] never sees counts that left the shards but did not arrive yet.
    taken: Mutex<TrafficCounts>,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            taken: Mutex::new(TrafficCounts::default()),
        }
    }
}

impl Counters {
    #[inline]
    fn shard(&self) -> &Shard {
        &self.shards[shard_index()]
    }

    #[inline]
    pub fn operation(&self, side: Side, kind: Kind, ok: bool, micros: u64) {
        let shard = self.shard();
        let s = match side {
            Side::Old => &shard.old,
            Side::New => &shard.new,
        };
        match kind {
            Kind::Read => s.reads.fetch_add(1, Relaxed),
            Kind::Write => s.writes.fetch_add(1, Relaxed),
        };
        if !ok {
            s.errors.fetch_add(1, Relaxed);
        }
        s.latency[latency_bucket(micros)].fetch_add(1, Relaxed);
    }

    #[inline]
    pub fn comparison(&self, matched: bool) {
        let shard = self.shard();
        shard.comparisons.fetch_add(1, Relaxed);
        if !matched {
            shard.mismatches.fetch_add(1, Relaxed);
        }
    }

    #[inline]
    pub fn evaluation_without_entity(&self) {
        self.shard().without_entity.fetch_add(1, Relaxed);
    }

    #[inline]
    pub fn fallback_evaluation(&self) {
        self.shard().fallback.fetch_add(1, Relaxed);
    }

    /// Everything counted since the last call, leaving the counters at zero.
    pub fn take(&self) -> TrafficCounts {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let delta = self.sum(true);
        taken.add(&delta);
        delta
    }

    /// Everything counted since the counters were made, taken or not.
    pub fn totals(&self) -> TrafficCounts {
        let taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = self.sum(false);
        total.add(&taken);
        total
    }

    fn sum(&self, take: bool) -> TrafficCounts {
        let get = |a: &AtomicU64| {
            if take {
                a.swap(0, Relaxed)
            } else {
                a.load(Relaxed)
            }
        };
        let mut total = TrafficCounts::default();
        for shard in self.shards.iter() {
            total.add(&TrafficCounts {
                old: shard.old.read(take),
                new: shard.new.read(take),
                comparisons: get(&shard.comparisons),
                mismatches: get(&shard.mismatches),
                evaluations_without_entity: get(&shard.without_entity),
                fallback_evaluations: get(&shard.fallback),
            });
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let counters = std::sync::Arc::new(Counters::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = counters.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u64 {
                        c.operation(Side::Old, Kind::Read, i % 10 != 0, i);
                        c.operation(Side::New, Kind::Write, true, 60);
                        c.comparison(i % 100 != 0 || t != 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let c = counters.take();
        assert_eq!(c.old.reads, 4000);
        assert_eq!(c.old.errors, 400);
        assert_eq!(c.new.writes, 4000);
        assert_eq!(c.new.latency.0[1], 4000);
        assert_eq!(c.comparisons, 4000);
        assert_eq!(c.mismatches, 10);
        assert!(counters.take().is_empty(), "take leaves zero");
        counters.operation(Side::Old, Kind::Read, true, 1);
        let totals = counters.totals();
        assert_eq!(
            totals.old.reads, 4001,
            "totals count taken and untaken alike"
        );
        assert_eq!(totals.mismatches, 10);
        assert_eq!(
            counters.take().old.reads,
            1,
            "totals leave the counters as they are"
        );
    }
}
