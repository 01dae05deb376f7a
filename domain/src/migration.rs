//! The migration record: identity, settings, the traffic front and the facts the rules need.

use crate::schema::Database;
use crate::{BasisPoints, Front, MigrationKey, Stage, Version};
use std::collections::BTreeMap;

/// Seven days, the default soak period of the contract gate.
pub const DEFAULT_SOAK_SECONDS: u64 = 7 * 24 * 3600;
/// Default share of shadow reads that clients compare: all of them.
pub const DEFAULT_SHADOW_SAMPLE: BasisPoints = BasisPoints::FULL;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackfillStatus {
    /// The migration has no backfill.
    None,
    NotStarted,
    Running,
    Complete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backfill {
    pub status: BackfillStatus,
    pub rows_done: u64,
    pub rows_total_estimate: u64,
    pub started_version: Option<Version>,
    pub completed_version: Option<Version>,
    /// Paused by a release manager: runners wait between batches until it is resumed.
    pub paused: bool,
}

impl Backfill {
    pub fn initial(has_backfill: bool) -> Self {
        Self {
            status: if has_backfill {
                BackfillStatus::NotStarted
            } else {
                BackfillStatus::None
            },
            rows_done: 0,
            rows_total_estimate: 0,
            started_version: None,
            completed_version: None,
            paused: false,
        }
    }
}

/// What a release manager gives to create a migration. Validated before it reaches the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMigration {
    pub key: MigrationKey,
    pub description: String,
    pub owner: String,
    pub entity_kind: String,
    pub soak_seconds: u64,
    pub expected_services: Vec<String>,
    pub has_backfill: bool,
    pub shadow_sample: BasisPoints,
    pub database: Database,
    /// Retire before drop: the probation (seconds) the retired old shape must hold before
    /// `contracted`; `None`: the contract drops it directly.
    pub retire_probation_seconds: Option<u64>,
}

impl NewMigration {
    /// A migration named `key` with nothing else said: no description, owner or entity kind,
    /// no soak, no expected services, no backfill, no shadow sampling, no target database.
    pub fn with_key(key: MigrationKey) -> NewMigration {
        NewMigration {
            key,
            description: String::new(),
            owner: String::new(),
            entity_kind: String::new(),
            soak_seconds: 0,
            expected_services: Vec::new(),
            has_backfill: false,
            shadow_sample: BasisPoints::ZERO,
            database: Database::default(),
            retire_probation_seconds: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub key: MigrationKey,
    pub description: String,
    pub owner: String,
    pub entity_kind: String,
    pub soak_seconds: u64,
    pub expected_services: Vec<String>,
    pub has_backfill: bool,
    /// The database it migrates and the objects its contract drops (declared at creation).
    pub database: Database,
    /// Bucketing seed, fixed at creation so the same entities lead every stage.
    pub salt: u64,
    pub shadow_sample_bp: BasisPoints,
    pub stage: Stage,
    pub rollout_bp: BasisPoints,
    pub version: Version,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub expand_applied: bool,
    pub backfill: Backfill,
    /// Set once any entity has been at `complete` (old writes stopped); cleared only by
    /// recording that the old shape was repaired (rule 6).
    pub old_shape_stale: bool,
    /// For each stage, the snapshot version since which every entity has been at that stage or
    /// beyond, continuously. Rules 3 and 5 and the contract gate ask clients to have applied at
    /// least that version.
    pub full_since: BTreeMap<Stage, Version>,
    /// The version at which old writes resumed for every entity after some had stopped
    /// (complete went back to 0%): a repair of the old shape counts only once every live
    /// client has applied it (rule 6).
    pub old_writes_resumed_since: Option<Version>,
    /// When `complete` reached 100% (this time: any step back clears it): the soak's start.
    pub soak_started_at_ms: Option<i64>,
    /// When the front entered its current stage (by advancing or stepping back; ramps within
    /// the stage keep it): how long a migration has sat where it is.
    pub stage_since_ms: i64,
    /// The last period the stage was `live`, whose shadow comparisons the gate checks.
    pub live_window: Option<Window>,
    /// Retire before drop (opt-in at creation): how long the old shape must stay retired,
    /// with no statement failing on it and no restore, before `contracted`.
    pub retire_probation_seconds: Option<u64>,
    /// When `retired` was recorded (the current retire); `restored` clears it.
    pub retired_at_ms: Option<i64>,
}

/// The period some entities were at `live`; `ended_at_ms` is `None` while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    /// Shadow comparisons and mismatches reported during the window, recorded when it closed,
    /// so the gate's evidence outlives the telemetry retention.
    pub recorded: Option<Compared>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compared {
    pub comparisons: u64,
    pub mismatches: u64,
}

impl Migration {
    /// A new migration sits at `off` with its front at 100%, so the first `advance` moves it
    /// to `dual_write` at 0% and the release manager ramps from there.
    pub fn create(new: NewMigration, salt: u64, version: Version, now_ms: i64) -> Self {
        Self {
            key: new.key,
            description: new.description,
            owner: new.owner,
            entity_kind: new.entity_kind,
            soak_seconds: new.soak_seconds,
            expected_services: new.expected_services,
            backfill: Backfill::initial(new.has_backfill),
            has_backfill: new.has_backfill,
            database: new.database,
            salt,
            shadow_sample_bp: new.shadow_sample,
            stage: Stage::Off,
            rollout_bp: BasisPoints::FULL,
            version,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            expand_applied: false,
            old_shape_stale: false,
            full_since: BTreeMap::from([(Stage::Off, version)]),
            old_writes_resumed_since: None,
            soak_started_at_ms: None,
            stage_since_ms: now_ms,
            live_window: None,
            retire_probation_seconds: new.retire_probation_seconds,
            retired_at_ms: None,
        }
    }

    pub fn front(&self) -> Front {
        Front::new(self.stage, self.rollout_bp)
    }
}
