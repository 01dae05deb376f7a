//! The evaluation state: one `Slot` per migration, read with plain atomic loads.
//!
//! A slot packs what evaluation needs (stage, rollout, shadow sample, where the state came
//! from) into one `AtomicU64`, so an evaluation reads one consistent word, hashes the entity key
//! only when the front splits the entities, and never locks or allocates. The background task
//! is the only writer. The registry maps names to slots through an `ArcSwap`ped map: lookups are
//! lock-free; the map itself is replaced (rarely) when a new migration appears.

use crate::telemetry::Counters;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use switchyard_domain::{BasisPoints, Front, Migration, Stage, bucket};

/// Where a slot's state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// No snapshot knows the migration: the application's fallback stage (or `off`).
    Fallback = 0,
    /// A snapshot (from the server or a file).
    Snapshot = 1,
}

/// The unpacked state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct State {
    pub stage: Stage,
    pub rollout: BasisPoints,
    pub shadow_sample: BasisPoints,
    pub origin: Origin,
}

impl State {
    /// Stage, rollout, shadow sample, origin, and (for evaluation to read without working it
    /// out) the stage of the entities the front has not reached.
    fn pack(self) -> u64 {
        let behind = Front::new(self.stage, self.rollout).stage_for(Some(u32::MAX));
        (self.stage.index() as u64)
            | (u64::from(self.rollout.get()) << 8)
            | (u64::from(self.shadow_sample.get()) << 24)
            | ((self.origin as u64) << 40)
            | ((behind.index() as u64) << 48)
    }

    #[inline]
    fn unpack(word: u64) -> State {
        // Only `pack` writes the word, so every field is in range.
        let stage = Stage::ALL[(word & 0xFF) as usize];
        let rollout = BasisPoints::new(((word >> 8) & 0xFFFF) as u32).unwrap_or(BasisPoints::ZERO);
        let shadow_sample =
            BasisPoints::new(((word >> 24) & 0xFFFF) as u32).unwrap_or(BasisPoints::ZERO);
        let origin = if (word >> 40) & 0xFF == Origin::Snapshot as u64 {
            Origin::Snapshot
        } else {
            Origin::Fallback
        };
        State {
            stage,
            rollout,
            shadow_sample,
            origin,
        }
    }

    fn fallback(stage: Stage) -> State {
        State {
            stage,
            rollout: BasisPoints::FULL,
            shadow_sample: BasisPoints::ZERO,
            origin: Origin::Fallback,
        }
    }
}

/// The stage whose index is in the word's low byte (only `State::pack` writes it).
#[inline(always)]
fn stage_at(word: u64) -> Stage {
    Stage::ALL
        .get((word & 0xFF) as usize)
        .copied()
        .unwrap_or(Stage::Off)
}

pub(crate) struct Slot {
    pub key: Box<str>,
    state: AtomicU64,
    salt: AtomicU64,
    version: AtomicU64,
    /// Set once the application resolved or evaluated the migration; heartbeats list these.
    used: AtomicBool,
    pub counters: Counters,
    /// What the migrator counts and logs beyond the traffic counters.
    pub events: crate::migrator::Events,
}

impl Slot {
    fn new(key: &str, fallback: Stage) -> Slot {
        Slot {
            key: key.into(),
            state: AtomicU64::new(State::fallback(fallback).pack()),
            salt: AtomicU64::new(0),
            version: AtomicU64::new(0),
            used: AtomicBool::new(false),
            counters: Counters::default(),
            events: Default::default(),
        }
    }

    #[inline]
    pub fn state(&self) -> State {
        State::unpack(self.state.load(Ordering::Acquire))
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The stage of one entity: the hot path of `stage()` by handle and by name. Reads the
    /// state word and decodes only the front's two stages and the rollout (packed ready by
    /// `State::pack`); hashes only when the front splits the entities. Same answer as
    /// [`Slot::stage`] (`the_fast_path_agrees_with_the_front` checks every case).
    #[inline(always)]
    pub fn stage_of(&self, entity_key: &[u8]) -> Stage {
        self.mark_used();
        let word = self.state.load(Ordering::Acquire);
        if (word >> 40) & 0xFF != Origin::Snapshot as u64 {
            self.counters.fallback_evaluation();
        }
        let rollout = ((word >> 8) & 0xFFFF) as u32;
        let front = stage_at(word);
        if rollout >= switchyard_domain::bucket::BUCKETS {
            return front;
        }
        let behind = stage_at(word >> 48);
        if rollout == 0 {
            return behind;
        }
        if bucket(self.salt.load(Ordering::Acquire), entity_key) < rollout {
            front
        } else {
            behind
        }
    }

    /// The stage of one entity (`None`: an operation without entity), counting evaluations
    /// without an entity and on a fallback.
    #[inline]
    pub fn stage(&self, entity_key: Option<&[u8]>) -> (Stage, State) {
        self.mark_used();
        let state = self.state();
        if state.origin == Origin::Fallback {
            self.counters.fallback_evaluation();
        }
        let front = Front::new(state.stage, state.rollout);
        let stage = match entity_key {
            None => {
                self.counters.evaluation_without_entity();
                front.trailing()
            }
            // At 0% and 100% every bucket gives the same stage: skip the hash.
            Some(_) if state.rollout.is_zero() || state.rollout.is_full() => {
                front.stage_for(Some(0))
            }
            Some(key) => {
                let salt = self.salt.load(Ordering::Acquire);
                front.stage_for(Some(bucket(salt, key)))
            }
        };
        (stage, state)
    }

    #[inline]
    pub fn mark_used(&self) {
        // Read first: after the first call this is a shared read, never a contended write.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    pub fn is_used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    fn apply(&self, m: &Migration) {
        // Salt first: a reader that sees the new state word also sees its salt (Release/Acquire).
        self.salt.store(m.salt, Ordering::Release);
        self.version.store(m.version.0, Ordering::Release);
        let state = State {
            stage: m.stage,
            rollout: m.rollout_bp,
            shadow_sample: m.shadow_sample_bp,
            origin: Origin::Snapshot,
        };
        self.state.store(state.pack(), Ordering::Release);
    }
}

/// The registry's hasher: xxh3 over the name (a few nanoseconds for a short name, word at a
/// time), unkeyed. The keys are migration names chosen by operators, not by an attacker, so a
/// keyed hash (SipHash, the std default) buys nothing and would cost a third of a by-name
/// lookup.
#[derive(Default, Clone, Copy)]
pub(crate) struct NameHasher(u64);

impl std::hash::Hasher for NameHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    /// `str`'s terminator byte: mixed in without another pass of the hash.
    #[inline]
    fn write_u8(&mut self, byte: u8) {
        self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type SlotMap = HashMap<Box<str>, Arc<Slot>, std::hash::BuildHasherDefault<NameHasher>>;

/// Name → slot. Slots are never removed, so handles stay valid for the client's lifetime.
/// A thread's last read of a registry's map (see [`Registry::with`]).
struct Cached {
    registry: u64,
    generation: u64,
    map: Option<Arc<SlotMap>>,
    /// The slots this thread evaluated last (in `registry`), replaced in turn.
    recent: [Option<Arc<Slot>>; RECENT],
    next: usize,
}

/// How many slots a thread remembers: a handler that evaluates a few migrations finds each
/// without a hash.
const RECENT: usize = 4;

thread_local! {
    static CACHED: std::cell::RefCell<Cached> = const {
        std::cell::RefCell::new(Cached {
            registry: 0,
            generation: 0,
            map: None,
            recent: [None, None, None, None],
            next: 0,
        })
    };
}

pub(crate) struct Registry {
    map: ArcSwap<SlotMap>,
    /// This registry among the process's (the per-thread cache below is keyed by it).
    id: u64,
    /// Bumped after each new map is stored: a thread whose cached map is of this generation
    /// (or newer) may read it without touching `map`.
    generation: AtomicU64,
    /// Serialises writers (the background task, and first-time lookups of new names).
    writer: Mutex<()>,
    fallbacks: HashMap<String, Stage>,
    default_fallback: Stage,
}

impl Registry {
    pub fn new(fallbacks: HashMap<String, Stage>, default_fallback: Stage) -> Registry {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let registry = Registry {
            map: ArcSwap::from_pointee(SlotMap::default()),
            id: IDS.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            writer: Mutex::new(()),
            fallbacks,
            default_fallback,
        };
        for key in registry.fallbacks.keys() {
            registry.slot(key);
        }
        registry
    }

    /// The slot of `key`, if the registry has one; lock-free.
    #[inline]
    pub fn get(&self, key: &str) -> Option<Arc<Slot>> {
        self.map.load().get(key).cloned()
    }

    /// Calls `f` with the slot of `key` (hot path).
    ///
    /// Each thread remembers the slots it last evaluated (four) and the map it last read, with
    /// its generation. Asked for one of those names again (the common case: a request handler
    /// evaluating its migrations), it compares names and calls `f`: no hash, no atomic. For
    /// another name, while no name has been added since its map was read, a lookup is a load
    /// of the generation and a hash-map probe, still with no atomic write (`ArcSwap::load`
    /// takes and returns a debt slot on every call, half the cost of a by-name evaluation).
    /// The map only grows and a name's slot never changes, so neither memory can go wrong.
    #[inline]
    pub fn with<R>(&self, key: &str, f: impl FnOnce(&Slot) -> R) -> Option<R> {
        CACHED.with(|cached| {
            let found = match cached.try_borrow() {
                Ok(c) if c.registry == self.id => {
                    if let Some(recent) = c.recent.iter().flatten().find(|s| *s.key == *key) {
                        return Some(f(recent));
                    }
                    let generation = self.generation.load(Ordering::Acquire);
                    match &c.map {
                        Some(map) if c.generation >= generation => Some(map.get(key).cloned()),
                        _ => None,
                    }
                }
                _ => None,
            };
            let slot = match found {
                Some(slot) => slot,
                None => {
                    let generation = self.generation.load(Ordering::Acquire);
                    let map = self.map.load_full();
                    let slot = map.get(key).cloned();
                    if let Ok(mut c) = cached.try_borrow_mut() {
                        *c = Cached {
                            registry: self.id,
                            generation,
                            map: Some(map),
                            recent: Default::default(),
                            next: 0,
                        };
                    }
                    slot
                }
            }?;
            let answer = f(&slot);
            if let Ok(mut c) = cached.try_borrow_mut() {
                let next = c.next;
                c.recent[next] = Some(slot);
                c.next = (next + 1) % RECENT;
            }
            Some(answer)
        })
    }

    /// The slot of `key`, created (at its fallback stage) if new.
    pub fn slot(&self, key: &str) -> Arc<Slot> {
        if let Some(slot) = self.get(key) {
            return slot;
        }
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = self.get(key) {
            return slot;
        }
        let fallback = self
            .fallbacks
            .get(key)
            .copied()
            .unwrap_or(self.default_fallback);
        let slot = Arc::new(Slot::new(key, fallback));
        let mut next = SlotMap::clone(&self.map.load());
        next.insert(key.into(), slot.clone());
        self.map.store(Arc::new(next));
        // After the store: a reader that sees this generation loads a map that has the name.
        self.generation.fetch_add(1, Ordering::Release);
        slot
    }

    /// Applies migrations from a snapshot or a change.
    pub fn apply(&self, migrations: &[Migration]) {
        for m in migrations {
            self.slot(m.key.as_str()).apply(m);
        }
    }

    pub fn slots(&self) -> Vec<Arc<Slot>> {
        self.map.load().values().cloned().collect()
    }

    pub fn used_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .map
            .load()
            .values()
            .filter(|s| s.is_used())
            .map(|s| s.key.to_string())
            .collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_words_round_trip() {
        for stage in Stage::ALL {
            for (rollout, sample) in [(0, 0), (1, 10_000), (9_999, 1), (10_000, 5_000)] {
                let state = State {
                    stage,
                    rollout: BasisPoints::new(rollout).unwrap(),
                    shadow_sample: BasisPoints::new(sample).unwrap(),
                    origin: Origin::Snapshot,
                };
                assert_eq!(State::unpack(state.pack()), state);
            }
        }
        let fallback = State::fallback(Stage::Live);
        assert_eq!(State::unpack(fallback.pack()), fallback);
    }

    /// The client's evaluation path (including its skip-the-hash shortcut at 0% and 100%)
    /// agrees with the published vectors at every rollout.
    #[test]
    fn evaluation_follows_the_published_bucketing_vectors() {
        let vectors = include_str!("../../testdata/bucketing.csv");
        let registry = Registry::new(HashMap::new(), Stage::Off);
        let slot = registry.slot("vectors");
        for line in vectors.lines().skip(1).filter(|l| !l.is_empty()) {
            let cols: Vec<&str> = line.split(',').collect();
            let salt: u64 = cols[0].parse().unwrap();
            let key = cols[1].trim_matches('"');
            let bucket: u32 = cols[3].parse().unwrap();
            for rollout in [0, 1, bucket, bucket + 1, 5_000, 10_000] {
                let mut m = switchyard_domain::Migration::create(
                    switchyard_domain::NewMigration {
                        key: switchyard_domain::MigrationKey::parse("vectors").unwrap(),
                        description: String::new(),
                        owner: String::new(),
                        entity_kind: String::new(),
                        soak_seconds: 0,
                        expected_services: vec![],
                        has_backfill: false,
                        shadow_sample: BasisPoints::FULL,
                        database: Default::default(),
                        retire_probation_seconds: None,
                    },
                    salt,
                    switchyard_domain::Version(1),
                    0,
                );
                m.stage = Stage::Live;
                m.rollout_bp = BasisPoints::new(rollout).unwrap();
                slot.apply(&m);
                let expected = if bucket < rollout {
                    Stage::Live
                } else {
                    Stage::Shadow
                };
                assert_eq!(
                    slot.stage(Some(key.as_bytes())).0,
                    expected,
                    "{line} at {rollout}"
                );
            }
        }
    }

    #[test]
    fn unknown_migrations_evaluate_at_their_fallback() {
        let registry = Registry::new(
            HashMap::from([("users.x".to_owned(), Stage::DualWrite)]),
            Stage::Off,
        );
        let slot = registry
            .get("users.x")
            .expect("fallbacks get slots up front");
        assert_eq!(slot.stage(Some(b"42")).0, Stage::DualWrite);
        assert_eq!(registry.slot("other").stage(None).0, Stage::Off);
        let counts = slot.counters.take();
        assert_eq!(counts.fallback_evaluations, 1);
    }

    #[test]
    fn the_fast_path_agrees_with_the_front() {
        let keys: Vec<String> = (0..2_000).map(|i| format!("user-{i}")).collect();
        for stage in Stage::ALL {
            for rollout in [0, 1, 2_500, 9_999, 10_000] {
                for origin in [Origin::Snapshot, Origin::Fallback] {
                    let slot = Slot::new("a.b", Stage::Off);
                    slot.salt.store(0x5eed, Ordering::Release);
                    let state = State {
                        stage,
                        rollout: BasisPoints::new(rollout).unwrap(),
                        shadow_sample: BasisPoints::ZERO,
                        origin,
                    };
                    slot.state.store(state.pack(), Ordering::Release);
                    for key in &keys {
                        assert_eq!(
                            slot.stage_of(key.as_bytes()),
                            slot.stage(Some(key.as_bytes())).0,
                            "{stage:?} at {rollout} for {key}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn lookups_by_name_see_new_names_and_keep_registries_apart() {
        let a = Registry::new(HashMap::new(), Stage::Off);
        let b = Registry::new(HashMap::new(), Stage::Live);
        let (slot_a, slot_b) = (a.slot("orders.split"), b.slot("orders.split"));
        // The same thread alternates registries and names: each answer is its registry's slot.
        for _ in 0..3 {
            let found = a.with("orders.split", |s| s as *const Slot).unwrap();
            assert_eq!(found, Arc::as_ptr(&slot_a));
            let found = b.with("orders.split", |s| s as *const Slot).unwrap();
            assert_eq!(found, Arc::as_ptr(&slot_b));
            assert!(a.with("users.email", |_| ()).is_none());
        }
        // A name added after this thread cached the map is found at once.
        let added = a.slot("users.email");
        let found = a.with("users.email", |s| s as *const Slot).unwrap();
        assert_eq!(found, Arc::as_ptr(&added));
        assert_eq!(
            a.with("orders.split", |s| s.key.to_string()).unwrap(),
            "orders.split"
        );
        // Another thread sees the same.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                assert_eq!(
                    a.with("users.email", |s| s.key.to_string()).unwrap(),
                    "users.email"
                );
                assert!(b.with("users.email", |_| ()).is_none());
            });
        });
    }
}
