//! The stored form of a migration: the JSON of the `migrations.state` column and of the audit
//! log's `before_json` / `after_json`.
//!
//! Its shape is a storage format, kept apart from the domain types so that they can change
//! without rewriting existing databases or audit logs: field names, their order and the enum
//! spellings here must stay as they are. A field added later carries `#[serde(default)]`, so
//! rows written before it still parse.

use super::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use switchyard_domain::migration::{Compared, Window};
use switchyard_domain::traffic::{Histogram, LATENCY_BUCKETS, SideCounts, TrafficCounts};
use switchyard_domain::{
    Backfill, BackfillStatus, BasisPoints, Database, InvalidInput, Migration, MigrationKey, Stage,
    Version,
};

/// The stored JSON of a migration (its state column, an audit record).
pub(super) fn state_json(m: &Migration) -> Result<String, StoreError> {
    serde_json::to_string(&StoredMigration::from(m)).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A migration from a state column or audit JSON; `whose` names it in an error.
pub(super) fn parse_state(
    json: &str,
    whose: impl FnOnce() -> String,
) -> Result<Migration, StoreError> {
    serde_json::from_str::<StoredMigration>(json)
        .map_err(|e| e.to_string())
        .and_then(|stored| Migration::try_from(stored).map_err(|e| e.to_string()))
        .map_err(|e| StoreError::Corrupt(format!("{}: {e}", whose())))
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredMigration {
    key: String,
    description: String,
    owner: String,
    entity_kind: String,
    soak_seconds: u64,
    expected_services: Vec<String>,
    has_backfill: bool,
    salt: u64,
    shadow_sample_bp: u32,
    stage: StoredStage,
    rollout_bp: u32,
    version: u64,
    created_at_ms: i64,
    updated_at_ms: i64,
    expand_applied: bool,
    backfill: StoredBackfill,
    old_shape_stale: bool,
    /// A map ordered by stage (declaration order below), as the domain's map was written.
    full_since: BTreeMap<StoredStage, u64>,
    #[serde(default)]
    old_writes_resumed_since: Option<u64>,
    #[serde(default)]
    soak_started_at_ms: Option<i64>,
    #[serde(default)]
    live_window: Option<StoredWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_database: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    old_shape: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retire_probation_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at_ms: Option<i64>,
    /// Absent in rows written before it: read as `updated_at_ms` (the last change).
    #[serde(default)]
    stage_since_ms: Option<i64>,
}

/// Declared in stage order: `full_since` is written in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredStage {
    Off,
    DualWrite,
    Shadow,
    Live,
    Rampdown,
    Complete,
    Contracted,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredBackfill {
    status: StoredBackfillStatus,
    rows_done: u64,
    rows_total_estimate: u64,
    started_version: Option<u64>,
    completed_version: Option<u64>,
    #[serde(default)]
    paused: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredBackfillStatus {
    None,
    NotStarted,
    Running,
    Complete,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredWindow {
    started_at_ms: i64,
    ended_at_ms: Option<i64>,
    #[serde(default)]
    recorded: Option<StoredCompared>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredCompared {
    comparisons: u64,
    mismatches: u64,
}

impl From<&Migration> for StoredMigration {
    fn from(m: &Migration) -> Self {
        Self {
            key: m.key.to_string(),
            description: m.description.clone(),
            owner: m.owner.clone(),
            entity_kind: m.entity_kind.clone(),
            soak_seconds: m.soak_seconds,
            expected_services: m.expected_services.clone(),
            has_backfill: m.has_backfill,
            salt: m.salt,
            shadow_sample_bp: m.shadow_sample_bp.get(),
            stage: m.stage.into(),
            rollout_bp: m.rollout_bp.get(),
            version: m.version.0,
            created_at_ms: m.created_at_ms,
            updated_at_ms: m.updated_at_ms,
            expand_applied: m.expand_applied,
            backfill: StoredBackfill {
                status: m.backfill.status.into(),
                rows_done: m.backfill.rows_done,
                rows_total_estimate: m.backfill.rows_total_estimate,
                started_version: m.backfill.started_version.map(|v| v.0),
                completed_version: m.backfill.completed_version.map(|v| v.0),
                paused: m.backfill.paused,
            },
            old_shape_stale: m.old_shape_stale,
            target_database: m.database.target.as_ref().map(ToString::to_string),
            old_shape: m.database.old_shape_strings(),
            retire_probation_seconds: m.retire_probation_seconds,
            retired_at_ms: m.retired_at_ms,
            stage_since_ms: Some(m.stage_since_ms),
            full_since: m
                .full_since
                .iter()
                .map(|(stage, v)| ((*stage).into(), v.0))
                .collect(),
            old_writes_resumed_since: m.old_writes_resumed_since.map(|v| v.0),
            soak_started_at_ms: m.soak_started_at_ms,
            live_window: m.live_window.map(|w| StoredWindow {
                started_at_ms: w.started_at_ms,
                ended_at_ms: w.ended_at_ms,
                recorded: w.recorded.map(|c| StoredCompared {
                    comparisons: c.comparisons,
                    mismatches: c.mismatches,
                }),
            }),
        }
    }
}

impl TryFrom<StoredMigration> for Migration {
    type Error = InvalidInput;

    fn try_from(s: StoredMigration) -> Result<Self, Self::Error> {
        Ok(Self {
            key: MigrationKey::parse(&s.key)?,
            description: s.description,
            owner: s.owner,
            entity_kind: s.entity_kind,
            soak_seconds: s.soak_seconds,
            expected_services: s.expected_services,
            has_backfill: s.has_backfill,
            database: Database::new(s.target_database.as_deref(), &s.old_shape)?,
            salt: s.salt,
            shadow_sample_bp: BasisPoints::new(s.shadow_sample_bp)?,
            stage: s.stage.into(),
            rollout_bp: BasisPoints::new(s.rollout_bp)?,
            version: Version(s.version),
            created_at_ms: s.created_at_ms,
            updated_at_ms: s.updated_at_ms,
            expand_applied: s.expand_applied,
            backfill: Backfill {
                status: s.backfill.status.into(),
                rows_done: s.backfill.rows_done,
                rows_total_estimate: s.backfill.rows_total_estimate,
                started_version: s.backfill.started_version.map(Version),
                completed_version: s.backfill.completed_version.map(Version),
                paused: s.backfill.paused,
            },
            old_shape_stale: s.old_shape_stale,
            full_since: s
                .full_since
                .into_iter()
                .map(|(stage, v)| (stage.into(), Version(v)))
                .collect(),
            old_writes_resumed_since: s.old_writes_resumed_since.map(Version),
            soak_started_at_ms: s.soak_started_at_ms,
            retire_probation_seconds: s.retire_probation_seconds,
            retired_at_ms: s.retired_at_ms,
            stage_since_ms: s.stage_since_ms.unwrap_or(s.updated_at_ms),
            live_window: s.live_window.map(|w| Window {
                started_at_ms: w.started_at_ms,
                ended_at_ms: w.ended_at_ms,
                recorded: w.recorded.map(|c| Compared {
                    comparisons: c.comparisons,
                    mismatches: c.mismatches,
                }),
            }),
        })
    }
}

impl From<Stage> for StoredStage {
    fn from(stage: Stage) -> Self {
        match stage {
            Stage::Off => Self::Off,
            Stage::DualWrite => Self::DualWrite,
            Stage::Shadow => Self::Shadow,
            Stage::Live => Self::Live,
            Stage::Rampdown => Self::Rampdown,
            Stage::Complete => Self::Complete,
            Stage::Contracted => Self::Contracted,
        }
    }
}

impl From<StoredStage> for Stage {
    fn from(stage: StoredStage) -> Self {
        match stage {
            StoredStage::Off => Self::Off,
            StoredStage::DualWrite => Self::DualWrite,
            StoredStage::Shadow => Self::Shadow,
            StoredStage::Live => Self::Live,
            StoredStage::Rampdown => Self::Rampdown,
            StoredStage::Complete => Self::Complete,
            StoredStage::Contracted => Self::Contracted,
        }
    }
}

impl From<BackfillStatus> for StoredBackfillStatus {
    fn from(status: BackfillStatus) -> Self {
        match status {
            BackfillStatus::None => Self::None,
            BackfillStatus::NotStarted => Self::NotStarted,
            BackfillStatus::Running => Self::Running,
            BackfillStatus::Complete => Self::Complete,
        }
    }
}

impl From<StoredBackfillStatus> for BackfillStatus {
    fn from(status: StoredBackfillStatus) -> Self {
        match status {
            StoredBackfillStatus::None => Self::None,
            StoredBackfillStatus::NotStarted => Self::NotStarted,
            StoredBackfillStatus::Running => Self::Running,
            StoredBackfillStatus::Complete => Self::Complete,
        }
    }
}

/// The stored JSON of one minute's traffic counts (`traffic_minutes.counts`).
pub(super) fn counts_json(c: &TrafficCounts) -> Result<String, StoreError> {
    serde_json::to_string(&StoredCounts::from(c)).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Counts from `traffic_minutes.counts`; `{}` is the empty row a first report creates.
pub(super) fn parse_counts(stored: &str) -> Result<TrafficCounts, StoreError> {
    if stored == "{}" {
        return Ok(TrafficCounts::default());
    }
    serde_json::from_str::<StoredCounts>(stored)
        .map(TrafficCounts::from)
        .map_err(|e| StoreError::Corrupt(format!("traffic counts: {e}")))
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredCounts {
    old: StoredSideCounts,
    new: StoredSideCounts,
    comparisons: u64,
    mismatches: u64,
    evaluations_without_entity: u64,
    fallback_evaluations: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredSideCounts {
    reads: u64,
    writes: u64,
    errors: u64,
    latency: [u64; LATENCY_BUCKETS],
}

impl From<&TrafficCounts> for StoredCounts {
    fn from(c: &TrafficCounts) -> Self {
        let side = |s: &SideCounts| StoredSideCounts {
            reads: s.reads,
            writes: s.writes,
            errors: s.errors,
            latency: s.latency.0,
        };
        Self {
            old: side(&c.old),
            new: side(&c.new),
            comparisons: c.comparisons,
            mismatches: c.mismatches,
            evaluations_without_entity: c.evaluations_without_entity,
            fallback_evaluations: c.fallback_evaluations,
        }
    }
}

impl From<StoredCounts> for TrafficCounts {
    fn from(c: StoredCounts) -> Self {
        let side = |s: StoredSideCounts| SideCounts {
            reads: s.reads,
            writes: s.writes,
            errors: s.errors,
            latency: Histogram(s.latency),
        };
        Self {
            old: side(c.old),
            new: side(c.new),
            comparisons: c.comparisons,
            mismatches: c.mismatches,
            evaluations_without_entity: c.evaluations_without_entity,
            fallback_evaluations: c.fallback_evaluations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by today's server at the end of a lifecycle (the gate test, through contracted):
    /// every field set, a closed live window with its recorded comparisons.
    const CONTRACTED: &str = r#"{"key":"users.username-to-handle","description":"","owner":"","entity_kind":"user_id","soak_seconds":3600,"expected_services":["api"],"has_backfill":true,"salt":3350671480925584,"shadow_sample_bp":10000,"stage":"contracted","rollout_bp":10000,"version":14,"created_at_ms":1796201694105,"updated_at_ms":1796205594105,"expand_applied":true,"backfill":{"status":"complete","rows_done":0,"rows_total_estimate":0,"started_version":5,"completed_version":6,"paused":false},"old_shape_stale":true,"full_since":{"off":1,"dual_write":4,"shadow":8,"live":10,"rampdown":12,"complete":13,"contracted":14},"old_writes_resumed_since":null,"soak_started_at_ms":1796201994105,"live_window":{"started_at_ms":1796201694105,"ended_at_ms":1796201994105,"recorded":{"comparisons":100,"mismatches":0}},"stage_since_ms":1796205594105}"#;

    /// Written by today's server mid-backfill (the store test).
    const RUNNING_BACKFILL: &str = r#"{"key":"users.handle","description":"test migration users.handle","owner":"team-store","entity_kind":"user_id","soak_seconds":604800,"expected_services":[],"has_backfill":true,"salt":305419896,"shadow_sample_bp":10000,"stage":"dual_write","rollout_bp":10000,"version":8,"created_at_ms":1700000000000,"updated_at_ms":1700000000102,"expand_applied":true,"backfill":{"status":"running","rows_done":10,"rows_total_estimate":100,"started_version":6,"completed_version":null,"paused":false},"old_shape_stale":false,"full_since":{"off":1,"dual_write":5},"old_writes_resumed_since":null,"soak_started_at_ms":null,"live_window":null,"stage_since_ms":1700000000050}"#;

    /// Old writes resumed after a step back from complete, during an open live window not yet
    /// recorded. Written by hand (no test reaches this state), and checked to be what the
    /// domain's own serde wrote when this type was split from it.
    const RESUMED_OPEN_WINDOW: &str = r#"{"key":"orders.split","description":"split orders","owner":"team-orders","entity_kind":"order_id","soak_seconds":86400,"expected_services":["api","worker"],"has_backfill":false,"salt":42,"shadow_sample_bp":2500,"stage":"live","rollout_bp":1250,"version":31,"created_at_ms":1700000000000,"updated_at_ms":1700000900000,"expand_applied":true,"backfill":{"status":"none","rows_done":0,"rows_total_estimate":0,"started_version":null,"completed_version":null,"paused":false},"old_shape_stale":true,"full_since":{"off":1,"dual_write":7,"shadow":12},"old_writes_resumed_since":29,"soak_started_at_ms":null,"live_window":{"started_at_ms":1700000800000,"ended_at_ms":null,"recorded":null},"stage_since_ms":1700000700000}"#;

    /// A row written before `paused`, `old_writes_resumed_since`, `soak_started_at_ms`,
    /// `live_window`, a window's `recorded` and `stage_since_ms` existed (by hand, like the one
    /// above).
    const BEFORE_LATER_FIELDS: &str = r#"{"key":"users.email","description":"lowercase emails","owner":"team-users","entity_kind":"user_id","soak_seconds":604800,"expected_services":["api"],"has_backfill":true,"salt":7,"shadow_sample_bp":10000,"stage":"shadow","rollout_bp":5000,"version":9,"created_at_ms":1690000000000,"updated_at_ms":1690000500000,"expand_applied":true,"backfill":{"status":"not_started","rows_done":0,"rows_total_estimate":0,"started_version":null,"completed_version":null},"old_shape_stale":false,"full_since":{"off":1,"dual_write":4}}"#;

    fn parse(json: &str) -> Migration {
        parse_state(json, || "fixture".to_owned()).unwrap()
    }

    #[test]
    fn todays_states_round_trip_byte_for_byte() {
        for json in [CONTRACTED, RUNNING_BACKFILL, RESUMED_OPEN_WINDOW] {
            assert_eq!(state_json(&parse(json)).unwrap(), json);
        }
    }

    #[test]
    fn todays_states_parse_to_their_values() {
        let m = parse(CONTRACTED);
        assert_eq!(m.key.as_str(), "users.username-to-handle");
        assert_eq!(
            (m.stage, m.rollout_bp.get(), m.version),
            (Stage::Contracted, 10_000, Version(14))
        );
        assert_eq!(m.backfill.status, BackfillStatus::Complete);
        assert_eq!(m.full_since.len(), 7);
        assert_eq!(m.full_since[&Stage::Live], Version(10));
        assert_eq!(
            m.live_window.and_then(|w| w.recorded),
            Some(Compared {
                comparisons: 100,
                mismatches: 0
            })
        );
        let m = parse(RESUMED_OPEN_WINDOW);
        assert_eq!(m.old_writes_resumed_since, Some(Version(29)));
        assert_eq!(m.shadow_sample_bp.get(), 2500);
        assert_eq!(
            m.live_window.map(|w| (w.ended_at_ms, w.recorded)),
            Some((None, None))
        );
    }

    #[test]
    fn a_row_without_the_later_fields_parses_with_their_defaults() {
        let m = parse(BEFORE_LATER_FIELDS);
        assert_eq!((m.stage, m.rollout_bp.get()), (Stage::Shadow, 5000));
        assert!(!m.backfill.paused);
        assert_eq!(m.old_writes_resumed_since, None);
        assert_eq!(m.soak_started_at_ms, None);
        assert_eq!(m.live_window, None);
        // Unknown before it was kept: its last change is the best bound there is.
        assert_eq!(m.stage_since_ms, m.updated_at_ms);
        // Written back, it has every field.
        let again = state_json(&m).unwrap();
        let tail = r#""paused":false},"old_shape_stale":false,"full_since":{"off":1,"dual_write":4},"old_writes_resumed_since":null,"soak_started_at_ms":null,"live_window":null,"stage_since_ms":1690000500000}"#;
        assert!(again.ends_with(tail), "{again}");
        assert_eq!(parse(&again), m);
    }

    #[test]
    fn a_window_without_its_recorded_comparisons_parses() {
        let json = RESUMED_OPEN_WINDOW.replace(r#","recorded":null"#, "");
        assert_eq!(parse(&json), parse(RESUMED_OPEN_WINDOW));
    }

    #[test]
    fn invalid_values_are_corrupt_not_clamped() {
        for bad in [
            CONTRACTED.replace(r#""rollout_bp":10000"#, r#""rollout_bp":10001"#),
            CONTRACTED.replace(r#""stage":"contracted""#, r#""stage":"done""#),
            CONTRACTED.replace("users.username-to-handle", "Users"),
        ] {
            let error = parse_state(&bad, || "fixture".to_owned()).unwrap_err();
            assert!(
                matches!(&error, StoreError::Corrupt(e) if e.starts_with("fixture: ")),
                "{bad}: {error:?}"
            );
        }
    }

    #[test]
    fn todays_traffic_counts_round_trip_byte_for_byte() {
        let stored = r#"{"old":{"reads":3,"writes":1,"errors":0,"latency":[0,1,2,0,0,0,0,0,0,0,0,0,0,0,0,1]},"new":{"reads":2,"writes":1,"errors":1,"latency":[3,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]},"comparisons":2,"mismatches":1,"evaluations_without_entity":4,"fallback_evaluations":5}"#;
        let counts = parse_counts(stored).unwrap();
        assert_eq!(counts.old.reads, 3);
        assert_eq!(counts.old.latency.0[15], 1);
        assert_eq!(counts.new.errors, 1);
        assert_eq!(counts.fallback_evaluations, 5);
        assert_eq!(counts_json(&counts).unwrap(), stored);
        assert_eq!(parse_counts("{}").unwrap(), TrafficCounts::default());
    }
}
