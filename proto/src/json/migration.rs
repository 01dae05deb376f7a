//! A migration, the snapshot of all of them, and the error body that carries one.

use super::names::{stage_map, stage_name};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use switchyard_domain::migration::{Compared, Window};
use switchyard_domain::{BasisPoints, EventKind, InvalidInput, MigrationKey, Stage, Version};

/// A migration as the API returns it: its record, and the events that could change it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    #[serde(flatten)]
    pub record: MigrationRecord,
    /// Derived from the record; absent from files the client wrote before it existed.
    #[serde(default)]
    pub applicable_events: Vec<String>,
}

/// A migration's record: every field of [`Migration`] but the derived ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRecord {
    pub key: String,
    pub description: String,
    pub owner: String,
    pub entity_kind: String,
    pub soak_seconds: u64,
    pub expected_services: Vec<String>,
    pub has_backfill: bool,
    pub salt: u64,
    pub shadow_sample_bp: u32,
    #[serde(with = "stage_name")]
    pub stage: Stage,
    pub rollout_bp: u32,
    pub version: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub expand_applied: bool,
    pub backfill: Backfill,
    pub old_shape_stale: bool,
    #[serde(with = "stage_map")]
    pub full_since: BTreeMap<Stage, u64>,
    #[serde(default)]
    pub old_writes_resumed_since: Option<u64>,
    #[serde(default)]
    pub soak_started_at_ms: Option<i64>,
    #[serde(default)]
    pub live_window: Option<LiveWindow>,
    /// The server's --target-database name of the database it migrates; null if undeclared.
    #[serde(default)]
    pub target_database: Option<String>,
    /// The objects its contract drops (`column:users.username`, `table:…`, `index:…`).
    #[serde(default)]
    pub old_shape: Vec<String>,
    /// Retire before drop: the probation after `retired`, in seconds; null: it drops directly.
    #[serde(default)]
    pub retire_probation_seconds: Option<u64>,
    /// When `retired` was recorded (the old shape is renamed in the database); null: not retired.
    #[serde(default)]
    pub retired_at_ms: Option<i64>,
    /// When the front entered its current stage (Unix ms); ramps within the stage keep it.
    /// Absent in snapshots saved before it existed: read as `updated_at_ms`.
    #[serde(default)]
    pub stage_since_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backfill {
    pub status: BackfillStatus,
    pub rows_done: u64,
    pub rows_total_estimate: u64,
    pub started_version: Option<u64>,
    pub completed_version: Option<u64>,
    #[serde(default)]
    pub paused: bool,
}

/// The wire spelling of a backfill's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillStatus {
    None,
    NotStarted,
    Running,
    Complete,
}

impl BackfillStatus {
    pub const ALL: [BackfillStatus; 4] = [
        BackfillStatus::None,
        BackfillStatus::NotStarted,
        BackfillStatus::Running,
        BackfillStatus::Complete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BackfillStatus::None => "none",
            BackfillStatus::NotStarted => "not_started",
            BackfillStatus::Running => "running",
            BackfillStatus::Complete => "complete",
        }
    }
}

impl From<switchyard_domain::BackfillStatus> for BackfillStatus {
    fn from(s: switchyard_domain::BackfillStatus) -> Self {
        use switchyard_domain::BackfillStatus as D;
        match s {
            D::None => Self::None,
            D::NotStarted => Self::NotStarted,
            D::Running => Self::Running,
            D::Complete => Self::Complete,
        }
    }
}

impl From<BackfillStatus> for switchyard_domain::BackfillStatus {
    fn from(s: BackfillStatus) -> Self {
        match s {
            BackfillStatus::None => Self::None,
            BackfillStatus::NotStarted => Self::NotStarted,
            BackfillStatus::Running => Self::Running,
            BackfillStatus::Complete => Self::Complete,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveWindow {
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    #[serde(default)]
    pub recorded: Option<Comparisons>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparisons {
    pub comparisons: u64,
    pub mismatches: u64,
}

impl From<&switchyard_domain::Migration> for MigrationRecord {
    fn from(m: &switchyard_domain::Migration) -> Self {
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
            stage: m.stage,
            rollout_bp: m.rollout_bp.get(),
            version: m.version.0,
            created_at_ms: m.created_at_ms,
            updated_at_ms: m.updated_at_ms,
            expand_applied: m.expand_applied,
            backfill: Backfill {
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
            full_since: m.full_since.iter().map(|(s, v)| (*s, v.0)).collect(),
            old_writes_resumed_since: m.old_writes_resumed_since.map(|v| v.0),
            soak_started_at_ms: m.soak_started_at_ms,
            live_window: m.live_window.map(|w| LiveWindow {
                started_at_ms: w.started_at_ms,
                ended_at_ms: w.ended_at_ms,
                recorded: w.recorded.map(|c| Comparisons {
                    comparisons: c.comparisons,
                    mismatches: c.mismatches,
                }),
            }),
        }
    }
}

impl From<&switchyard_domain::Migration> for Migration {
    fn from(m: &switchyard_domain::Migration) -> Self {
        Self {
            record: MigrationRecord::from(m),
            applicable_events: EventKind::ALL
                .into_iter()
                .filter(|e| e.applies_to(m))
                .map(|e| e.as_str().to_owned())
                .collect(),
        }
    }
}

impl TryFrom<MigrationRecord> for switchyard_domain::Migration {
    type Error = InvalidInput;

    fn try_from(m: MigrationRecord) -> Result<Self, InvalidInput> {
        let key = MigrationKey::parse(&m.key)?;
        let in_migration = |field: &str, e: InvalidInput| {
            InvalidInput(format!("migration {key}, field {field}: {}", e.0))
        };
        Ok(Self {
            shadow_sample_bp: BasisPoints::new(m.shadow_sample_bp)
                .map_err(|e| in_migration("shadow_sample_bp", e))?,
            rollout_bp: BasisPoints::new(m.rollout_bp)
                .map_err(|e| in_migration("rollout_bp", e))?,
            description: m.description,
            owner: m.owner,
            entity_kind: m.entity_kind,
            soak_seconds: m.soak_seconds,
            expected_services: m.expected_services,
            has_backfill: m.has_backfill,
            database: switchyard_domain::Database::from_wire(
                m.target_database.as_deref().unwrap_or(""),
                &m.old_shape,
            ),
            salt: m.salt,
            stage: m.stage,
            version: Version(m.version),
            created_at_ms: m.created_at_ms,
            updated_at_ms: m.updated_at_ms,
            expand_applied: m.expand_applied,
            backfill: switchyard_domain::Backfill {
                status: m.backfill.status.into(),
                rows_done: m.backfill.rows_done,
                rows_total_estimate: m.backfill.rows_total_estimate,
                started_version: m.backfill.started_version.map(Version),
                completed_version: m.backfill.completed_version.map(Version),
                paused: m.backfill.paused,
            },
            old_shape_stale: m.old_shape_stale,
            full_since: m
                .full_since
                .into_iter()
                .map(|(s, v)| (s, Version(v)))
                .collect(),
            old_writes_resumed_since: m.old_writes_resumed_since.map(Version),
            soak_started_at_ms: m.soak_started_at_ms,
            retire_probation_seconds: m.retire_probation_seconds,
            retired_at_ms: m.retired_at_ms,
            stage_since_ms: m.stage_since_ms.unwrap_or(m.updated_at_ms),
            live_window: m.live_window.map(|w| Window {
                started_at_ms: w.started_at_ms,
                ended_at_ms: w.ended_at_ms,
                recorded: w.recorded.map(|c| Compared {
                    comparisons: c.comparisons,
                    mismatches: c.mismatches,
                }),
            }),
            key,
        })
    }
}

impl TryFrom<Migration> for switchyard_domain::Migration {
    type Error = InvalidInput;

    /// `applicable_events` is derived from the record, so it is not read back.
    fn try_from(m: Migration) -> Result<Self, InvalidInput> {
        m.record.try_into()
    }
}

/// `GET /v1/snapshot` and `GET /v1/migrations`, the SSE `snapshot` event, the client's
/// snapshot file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u64,
    pub migrations: Vec<Migration>,
}

/// Every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    /// The migration as it is, when the change was refused because of its state. A state this
    /// build cannot read (a newer server's) is left out rather than losing the error's code and
    /// message with it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "readable_or_none"
    )]
    pub current: Option<Migration>,
    pub message: String,
    /// The safety rule that refused the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
}

fn readable_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Migration>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_domain::NewMigration;

    fn migration() -> switchyard_domain::Migration {
        let new = NewMigration {
            key: MigrationKey::parse("users.handle").unwrap(),
            description: "d".into(),
            owner: "o".into(),
            entity_kind: "user_id".into(),
            soak_seconds: 60,
            expected_services: vec!["api".into()],
            has_backfill: true,
            shadow_sample: BasisPoints::FULL,
            database: Default::default(),
            retire_probation_seconds: None,
        };
        let mut m = switchyard_domain::Migration::create(new, 7, Version(3), 1_000);
        m.stage = Stage::Live;
        m.full_since.insert(Stage::DualWrite, Version(4));
        m.live_window = Some(Window {
            started_at_ms: 5,
            ended_at_ms: None,
            recorded: Some(Compared {
                comparisons: 2,
                mismatches: 1,
            }),
        });
        m
    }

    #[test]
    fn a_migration_reads_back_as_it_was_written() {
        let m = migration();
        let text = serde_json::to_string(&Migration::from(&m)).unwrap();
        let read: Migration = serde_json::from_str(&text).unwrap();
        assert_eq!(switchyard_domain::Migration::try_from(read).unwrap(), m);
        assert!(
            text.contains(r#""full_since":{"off":3,"dual_write":4}"#),
            "{text}"
        );
        assert!(text.ends_with(r#""applicable_events":["expand_applied","backfill_started"]}"#));
    }

    #[test]
    fn a_file_without_the_fields_added_later_still_reads() {
        let mut value = serde_json::to_value(Migration::from(&migration())).unwrap();
        let object = value.as_object_mut().unwrap();
        for field in ["applicable_events", "live_window", "soak_started_at_ms"] {
            object.remove(field);
        }
        object["backfill"].as_object_mut().unwrap().remove("paused");
        assert!(serde_json::from_value::<Migration>(value).is_ok());
    }

    #[test]
    fn invalid_keys_and_basis_points_are_refused_with_the_domain_message() {
        let mut bad = Migration::from(&migration());
        bad.record.rollout_bp = 10_001;
        let err = switchyard_domain::Migration::try_from(bad).unwrap_err();
        assert!(
            err.0
                .starts_with("migration users.handle, field rollout_bp: rollout 10001")
        );
        let mut bad = Migration::from(&migration());
        bad.record.key = "Users".into();
        let err = switchyard_domain::Migration::try_from(bad).unwrap_err();
        assert!(err.0.contains("a-z, 0-9"), "{err}");
        let mut value = serde_json::to_value(Migration::from(&migration())).unwrap();
        value["stage"] = "sideways".into();
        let err = serde_json::from_value::<Migration>(value).unwrap_err();
        assert!(err.to_string().contains("unknown stage"), "{err}");
    }

    #[test]
    fn an_error_keeps_its_message_when_its_state_is_unreadable() {
        let body = serde_json::json!({
            "code": "rule_refused", "message": "rule 1: …", "rule": 1,
            "current": { "key": "users.handle", "stage": "a_stage_from_the_future" },
        });
        let read: ErrorBody = serde_json::from_value(body).unwrap();
        assert_eq!(read.code, "rule_refused");
        assert_eq!(read.rule, Some(1));
        assert_eq!(read.current, None);
    }
}
