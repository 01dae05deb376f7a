//! The JSON bodies of the HTTP API, typed: what the server writes, what the CLI reads and the
//! client's snapshot file holds (the same JSON `GET /v1/snapshot` returns).
//!
//! These structs are the wire contract, kept apart from the domain's records so that a change
//! to a record cannot change the API by accident. Field order follows what the server has
//! always written; fields added since the first release default when absent, so that older
//! files and servers still parse. Conversions into domain records validate through the
//! domain's own parse functions.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use switchyard_domain::migration::{Compared, Window};
use switchyard_domain::traffic::{Histogram, LATENCY_BUCKETS, SideCounts};
use switchyard_domain::{
    BasisPoints, EventKind, InvalidInput, MigrationKey, Plan, Role, Stage, Version, gate,
};

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
    /// The migration as it is, when the change was refused because of its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Migration>,
    pub message: String,
    /// The safety rule that refused the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
}

/// `GET /v1/migrations/{key}/gate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateReport {
    pub key: String,
    pub passed: bool,
    pub checks: Vec<GateCheck>,
    pub soak_ends_at_ms: Option<i64>,
    pub evaluated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateCheck {
    pub id: String,
    pub passed: bool,
    pub evidence: String,
    pub remedy: String,
}

impl From<&gate::GateReport> for GateReport {
    fn from(r: &gate::GateReport) -> Self {
        Self {
            key: r.key.clone(),
            passed: r.passed,
            checks: r
                .checks
                .iter()
                .map(|c| GateCheck {
                    id: c.id.as_str().to_owned(),
                    passed: c.passed,
                    evidence: c.evidence.clone(),
                    remedy: c.remedy.clone(),
                })
                .collect(),
            soak_ends_at_ms: r.soak_ends_at_ms,
            evaluated_at_ms: r.evaluated_at_ms,
        }
    }
}

/// `GET /v1/migrations/{key}/audit`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_before_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: u64,
    pub migration_key: String,
    pub version: u64,
    pub actor: String,
    pub at_ms: i64,
    pub action: String,
    pub reason: String,
    /// The migration as the audit log stored it before and after the change (`null` for
    /// none), kept verbatim: entries written by older servers have other fields.
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

/// The front an audited state was at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct AuditedFront {
    #[serde(with = "stage_name")]
    pub stage: Stage,
    pub rollout_bp: u32,
}

impl AuditEntry {
    /// The fronts before and after; `None` where the entry has no state (a creation's
    /// before) or one without a front.
    pub fn fronts(&self) -> (Option<AuditedFront>, Option<AuditedFront>) {
        let front = |v: &serde_json::Value| AuditedFront::deserialize(v).ok();
        (front(&self.before), front(&self.after))
    }
}

/// `GET /v1/clients` and `GET /v1/migrations/{key}/instances`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instances {
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub service: String,
    pub instance_id: String,
    pub applied_version: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub live: bool,
}

/// `POST /v1/clients/heartbeat`: the snapshot version the server is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    pub snapshot_version: u64,
}

/// `GET /v1/lifecycle`: migrations needing attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub complete_for_days: u32,
    pub complete_not_contracted: Vec<CompleteNotContracted>,
    pub contracted_in_use: Vec<ContractedInUse>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteNotContracted {
    pub complete_since_ms: i64,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractedInUse {
    pub instances: Vec<Instance>,
    pub key: String,
}

/// `GET /v1/migrations/{key}/backfill` and the answer to a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackfillProgress {
    pub key: String,
    pub status: BackfillStatus,
    pub paused: bool,
    pub cursor: String,
    pub rows_done: u64,
    pub rows_total_estimate: u64,
    pub rate_rows_per_second: f64,
    /// Seconds left at the current rate, when both are known.
    pub eta_seconds: Option<u64>,
    pub runner: String,
    pub updated_at_ms: Option<i64>,
}

/// `GET /v1/migrations/{key}/decide`: what an operation on an entity does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub key: String,
    pub bucket: Option<u32>,
    #[serde(with = "stage_name")]
    pub stage: Stage,
    pub write: Side,
    pub authoritative_write: Side,
    pub read: Side,
    pub return_value: Side,
    pub shadow_compare: bool,
    pub version: u64,
}

impl Decision {
    pub fn new(key: String, bucket: Option<u32>, plan: Plan, version: Version) -> Self {
        Self {
            key,
            bucket,
            stage: plan.stage,
            write: plan.write.into(),
            authoritative_write: plan.authoritative_write.into(),
            read: plan.read.into(),
            return_value: plan.return_value.into(),
            shadow_compare: plan.shadow_compare,
            version: version.0,
        }
    }
}

/// The wire spelling of a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Old,
    New,
    Both,
}

impl Side {
    pub const ALL: [Side; 3] = [Side::Old, Side::New, Side::Both];

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Old => "old",
            Side::New => "new",
            Side::Both => "both",
        }
    }
}

impl From<switchyard_domain::Side> for Side {
    fn from(s: switchyard_domain::Side) -> Self {
        match s {
            switchyard_domain::Side::Old => Side::Old,
            switchyard_domain::Side::New => Side::New,
            switchyard_domain::Side::Both => Side::Both,
        }
    }
}

/// Counts clients report for a migration over some interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficCounts {
    pub old: SideTraffic,
    pub new: SideTraffic,
    pub comparisons: u64,
    pub mismatches: u64,
    pub evaluations_without_entity: u64,
    pub fallback_evaluations: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideTraffic {
    pub reads: u64,
    pub writes: u64,
    pub errors: u64,
    /// Operations per latency bucket (`GET /v1/vocabulary` lists the buckets).
    pub latency: [u64; LATENCY_BUCKETS],
}

impl From<&SideCounts> for SideTraffic {
    fn from(c: &SideCounts) -> Self {
        Self {
            reads: c.reads,
            writes: c.writes,
            errors: c.errors,
            latency: c.latency.0,
        }
    }
}

impl From<SideTraffic> for SideCounts {
    fn from(c: SideTraffic) -> Self {
        Self {
            reads: c.reads,
            writes: c.writes,
            errors: c.errors,
            latency: Histogram(c.latency),
        }
    }
}

impl From<&switchyard_domain::traffic::TrafficCounts> for TrafficCounts {
    fn from(c: &switchyard_domain::traffic::TrafficCounts) -> Self {
        Self {
            old: (&c.old).into(),
            new: (&c.new).into(),
            comparisons: c.comparisons,
            mismatches: c.mismatches,
            evaluations_without_entity: c.evaluations_without_entity,
            fallback_evaluations: c.fallback_evaluations,
        }
    }
}

impl From<TrafficCounts> for switchyard_domain::traffic::TrafficCounts {
    fn from(c: TrafficCounts) -> Self {
        Self {
            old: c.old.into(),
            new: c.new.into(),
            comparisons: c.comparisons,
            mismatches: c.mismatches,
            evaluations_without_entity: c.evaluations_without_entity,
            fallback_evaluations: c.fallback_evaluations,
        }
    }
}

/// One telemetry entry as clients send it: a migration, a minute, and the counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryEntry {
    pub key: String,
    pub minute_ms: i64,
    #[serde(flatten)]
    pub counts: TrafficCounts,
}

/// `GET /v1/migrations/{key}/traffic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub key: String,
    pub minutes: Vec<TrafficMinute>,
    pub total: TrafficCounts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficMinute {
    pub minute_ms: i64,
    #[serde(flatten)]
    pub counts: TrafficCounts,
}

/// An API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: u64,
    pub name: String,
    #[serde(with = "role_name")]
    pub role: Role,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// `POST /v1/tokens`: the secret is shown only in this answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub info: Token,
    pub token: String,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub tokens: Vec<Token>,
}

/// `GET /v1/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    pub name: String,
    pub permissions: Vec<String>,
    #[serde(with = "role_name")]
    pub role: Role,
    pub token_id: u64,
}

// Requests. Names (stage, event, role) stay strings here: the server parses them through the
// domain, whose message says what is allowed.

/// `POST /v1/migrations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMigration {
    pub key: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub entity_kind: String,
    pub soak_seconds: Option<u64>,
    #[serde(default)]
    pub expected_services: Vec<String>,
    #[serde(default)]
    pub has_backfill: bool,
    pub shadow_sample_bp: Option<u32>,
    #[serde(default)]
    pub reason: String,
}

/// `POST /v1/migrations/{key}/rollout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub stage: Option<String>,
    pub rollout_bp: u32,
    pub expected_version: u64,
    #[serde(default)]
    pub reason: String,
}

/// `POST /v1/migrations/{key}/advance` and `…/retreat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub expected_version: u64,
    #[serde(default)]
    pub reason: String,
}

/// `POST /v1/migrations/{key}/events`; the rows only for `backfill_progress`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordEvent {
    pub event: String,
    pub expected_version: u64,
    #[serde(default)]
    pub reason: String,
    pub rows_done: Option<u64>,
    pub rows_total_estimate: Option<u64>,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    pub role: String,
}

/// Stages by their domain name.
mod stage_name {
    use super::*;

    pub fn serialize<S: Serializer>(stage: &Stage, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(stage.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Stage, D::Error> {
        Stage::parse(&String::deserialize(d)?).map_err(|e| D::Error::custom(e.0))
    }
}

/// A map keyed by stage, in stage order.
mod stage_map {
    use super::*;

    pub fn serialize<S: Serializer>(map: &BTreeMap<Stage, u64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(stage, v)| (stage.as_str(), v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<Stage, u64>, D::Error> {
        BTreeMap::<String, u64>::deserialize(d)?
            .into_iter()
            .map(|(name, v)| Ok((Stage::parse(&name).map_err(|e| D::Error::custom(e.0))?, v)))
            .collect()
    }
}

/// Roles by their domain name.
mod role_name {
    use super::*;

    pub fn serialize<S: Serializer>(role: &Role, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(role.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        Role::parse(&String::deserialize(d)?).map_err(D::Error::custom)
    }
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
}
