//! A load generator: workers that read, update and insert rows through the migrator the whole
//! time a migration moves, checking every read against what they last wrote.
//!
//! Each worker owns the rows whose id is its index modulo the worker count (and the rows it
//! inserts), so it knows every owned row's latest value: a read returning anything else is a
//! *wrong read* (stale or corrupt data served), and at the end the table can be checked row by
//! row against [`Finished::expected`]. Owning rows also keeps one entity's operations in order,
//! as one user's requests usually are, so shadow comparisons do not see races between writers.
//!
//! Operations are counted per *phase*, a label the caller moves along (`dual_write`, `backfill`,
//! …), with latencies for percentiles.

use crate::Entities;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub workers: usize,
    /// Rows 1..=seeded_rows exist, with [`Entities::seeded`] values.
    pub seeded_rows: i64,
    /// Shares of reads and updates; the rest are inserts.
    pub read_share: f64,
    pub update_share: f64,
    /// Each worker's pause between operations (paces the load to the machine).
    pub pause: Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            workers: 4,
            seeded_rows: 0,
            read_share: 0.6,
            update_share: 0.3,
            pause: Duration::from_millis(2),
        }
    }
}

/// What happened in one phase.
#[derive(Debug, Clone, Default)]
pub struct PhaseStats {
    pub reads: u64,
    pub updates: u64,
    pub inserts: u64,
    pub failed: u64,
    /// Reads that returned something other than the row's latest write.
    pub wrong_reads: u64,
    /// The first few failures, for the report.
    pub errors: Vec<String>,
    latencies_us: Vec<u32>,
}

impl PhaseStats {
    pub fn operations(&self) -> u64 {
        self.reads + self.updates + self.inserts
    }

    /// The latency below which `q` (0..=1) of the operations finished, in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
        f64::from(sorted[rank - 1]) / 1000.0
    }
}

/// Phases in the order they started.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub phases: Vec<(String, PhaseStats)>,
}

impl Stats {
    pub fn phase(&self, name: &str) -> Option<&PhaseStats> {
        self.phases.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    pub fn total(&self) -> PhaseStats {
        let mut total = PhaseStats::default();
        for (_, s) in &self.phases {
            total.reads += s.reads;
            total.updates += s.updates;
            total.inserts += s.inserts;
            total.failed += s.failed;
            total.wrong_reads += s.wrong_reads;
            total
                .errors
                .extend(s.errors.iter().take(5 - total.errors.len().min(5)).cloned());
            total.latencies_us.extend_from_slice(&s.latencies_us);
        }
        total
    }

    /// A table: operations, failures, wrong reads and latency per phase.
    pub fn report(&self) -> String {
        let mut out = format!(
            "{:<22} {:>8} {:>7} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8}\n",
            "phase", "ops", "reads", "updates", "inserts", "failed", "wrong", "p50 ms", "p99 ms"
        );
        let total = self.total();
        for (name, s) in self
            .phases
            .iter()
            .map(|(n, s)| (n.as_str(), s))
            .chain([("all", &total)])
        {
            let _ = writeln!(
                out,
                "{:<22} {:>8} {:>7} {:>7} {:>7} {:>6} {:>6} {:>8.2} {:>8.2}",
                name,
                s.operations(),
                s.reads,
                s.updates,
                s.inserts,
                s.failed,
                s.wrong_reads,
                s.percentile_ms(0.5),
                s.percentile_ms(0.99)
            );
        }
        out
    }
}

/// Running workers.
pub struct Load<V> {
    phase: Arc<Mutex<String>>,
    stats: Arc<Mutex<Stats>>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Owned<V>>>,
}

/// What one worker owns and last wrote.
struct Owned<V> {
    created: Vec<i64>,
    written: HashMap<i64, V>,
}

/// The load's end: the statistics and every row's expected value.
pub struct Finished<V> {
    pub stats: Stats,
    /// Rows the workers inserted.
    pub created: Vec<i64>,
    /// The latest value written to each row the workers wrote; other seeded rows hold their
    /// seeded value.
    pub written: HashMap<i64, V>,
}

impl<V: Clone> Finished<V> {
    /// What row `id` must hold.
    pub fn expected<E: Entities<Value = V>>(&self, entities: &E, id: i64) -> V {
        self.written
            .get(&id)
            .cloned()
            .unwrap_or_else(|| entities.seeded(id))
    }
}

impl<V> Load<V>
where
    V: PartialEq + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    /// Starts the workers, counting into `phase`.
    pub fn start<E: Entities<Value = V>>(
        entities: Arc<E>,
        config: LoadConfig,
        phase: &str,
    ) -> Load<V> {
        let load = Load {
            phase: Arc::new(Mutex::new(phase.to_owned())),
            stats: Arc::new(Mutex::new(Stats::default())),
            stop: Arc::new(AtomicBool::new(false)),
            workers: Vec::new(),
        };
        let workers = (0..config.workers.max(1))
            .map(|w| {
                let worker = Worker {
                    index: w,
                    entities: entities.clone(),
                    config: config.clone(),
                    phase: load.phase.clone(),
                    stats: load.stats.clone(),
                    stop: load.stop.clone(),
                };
                tokio::spawn(worker.run())
            })
            .collect();
        Load { workers, ..load }
    }

    /// Counts what follows into `phase`.
    pub fn set_phase(&self, phase: &str) {
        *self.phase.lock().unwrap() = phase.to_owned();
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap().clone()
    }

    /// Operations counted in `phase` so far.
    pub fn operations_in(&self, phase: &str) -> u64 {
        self.stats
            .lock()
            .unwrap()
            .phase(phase)
            .map_or(0, PhaseStats::operations)
    }

    /// Stops the workers after their current operation.
    pub async fn finish(self) -> Finished<V> {
        self.stop.store(true, Ordering::Relaxed);
        let mut created = Vec::new();
        let mut written = HashMap::new();
        for worker in self.workers {
            let owned = worker.await.expect("a load worker panicked");
            created.extend(owned.created);
            written.extend(owned.written);
        }
        let stats = self.stats.lock().unwrap().clone();
        Finished {
            stats,
            created,
            written,
        }
    }
}

struct Worker<E> {
    index: usize,
    entities: Arc<E>,
    config: LoadConfig,
    phase: Arc<Mutex<String>>,
    stats: Arc<Mutex<Stats>>,
    stop: Arc<AtomicBool>,
}

enum Op {
    Read,
    Update,
    Insert,
}

impl<E: Entities> Worker<E> {
    async fn run(self) -> Owned<E::Value> {
        let n = self.config.workers.max(1) as i64;
        let mut rng = SmallRng::seed_from_u64(self.index as u64);
        let mut ids: Vec<i64> = (1..=self.config.seeded_rows)
            .filter(|id| id % n == self.index as i64)
            .collect();
        let mut owned = Owned {
            created: Vec::new(),
            written: HashMap::new(),
        };
        let mut writes = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let roll: f64 = rng.random();
            let op = if ids.is_empty() || roll >= self.config.read_share + self.config.update_share
            {
                Op::Insert
            } else if roll < self.config.read_share {
                Op::Read
            } else {
                Op::Update
            };
            let phase = self.phase.lock().unwrap().clone();
            let started = Instant::now();
            let (failure, wrong) = match op {
                Op::Read => {
                    let id = ids[rng.random_range(0..ids.len())];
                    let expected = owned
                        .written
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(|| self.entities.seeded(id));
                    match self.entities.read(id).await {
                        Ok(Some(value)) => (None, value != expected),
                        Ok(None) => (None, true),
                        Err(e) => (Some(format!("read {id}: {e}")), false),
                    }
                }
                Op::Update => {
                    let id = ids[rng.random_range(0..ids.len())];
                    writes += 1;
                    let value = self.entities.fresh(self.index, writes);
                    match self.entities.update(id, &value).await {
                        Ok(()) => {
                            owned.written.insert(id, value);
                            (None, false)
                        }
                        Err(e) => (Some(format!("update {id}: {e}")), false),
                    }
                }
                Op::Insert => {
                    writes += 1;
                    let value = self.entities.fresh(self.index, writes);
                    match self.entities.insert(&value).await {
                        Ok(id) => {
                            owned.written.insert(id, value);
                            owned.created.push(id);
                            ids.push(id);
                            (None, false)
                        }
                        Err(e) => (Some(format!("insert: {e}")), false),
                    }
                }
            };
            let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            {
                let mut stats = self.stats.lock().unwrap();
                let at = match stats.phases.iter().position(|(p, _)| *p == phase) {
                    Some(at) => at,
                    None => {
                        stats.phases.push((phase, PhaseStats::default()));
                        stats.phases.len() - 1
                    }
                };
                let s = &mut stats.phases[at].1;
                match op {
                    Op::Read => s.reads += 1,
                    Op::Update => s.updates += 1,
                    Op::Insert => s.inserts += 1,
                }
                s.latencies_us.push(micros);
                if wrong {
                    s.wrong_reads += 1;
                }
                if let Some(e) = failure {
                    s.failed += 1;
                    if s.errors.len() < 5 {
                        s.errors.push(e);
                    }
                }
            }
            if !self.config.pause.is_zero() {
                tokio::time::sleep(self.config.pause).await;
            }
        }
        owned
    }
}
