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
    fn pack(self) -> u64 {
        (self.stage.index() as u64)
            | (u64::from(self.rollout.get()) << 8)
            | (u64::from(self.shadow_sample.get()) << 24)
            | ((self.origin as u64) << 40)
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

/// FNV-1a: the registry's keys are migration names chosen by operators, not by an attacker, so
/// a keyed hash (SipHash, the std default) buys nothing and costs a third of a by-name lookup.
#[derive(Default, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type SlotMap = HashMap<Box<str>, Arc<Slot>, std::hash::BuildHasherDefault<Fnv>>;

/// Name → slot. Slots are never removed, so handles stay valid for the client's lifetime.
pub(crate) struct Registry {
    map: ArcSwap<SlotMap>,
    /// Serialises writers (the background task, and first-time lookups of new names).
    writer: Mutex<()>,
    fallbacks: HashMap<String, Stage>,
    default_fallback: Stage,
}

impl Registry {
    pub fn new(fallbacks: HashMap<String, Stage>, default_fallback: Stage) -> Registry {
        let registry = Registry {
            map: ArcSwap::from_pointee(SlotMap::default()),
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

    /// Calls `f` with the slot of `key` without touching its reference count (hot path).
    #[inline]
    pub fn with<R>(&self, key: &str, f: impl FnOnce(&Slot) -> R) -> Option<R> {
        self.map.load().get(key).map(|slot| f(slot))
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
}
