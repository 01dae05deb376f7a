//! What the server reports: the gate's verdict, the audit log, client instances, the lifecycle,
//! backfill progress, decisions, traffic and the database's usage evidence.

use super::BackfillStatus;
use super::names::stage_name;
use serde::{Deserialize, Serialize};
use switchyard_domain::traffic::{Histogram, LATENCY_BUCKETS, SideCounts};
use switchyard_domain::{Plan, Stage, Version, gate};

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
    /// Who approved the change (four eyes), or `approval bypassed by admin …`; empty when it
    /// needed no approval.
    #[serde(default)]
    pub approved_by: String,
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
    /// The next page's `after`; absent when this page is the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub service: String,
    pub instance_id: String,
    pub applied_version: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub live: bool,
    /// In a migration's list: whether the instance's heartbeats name the migration (it
    /// evaluates it or runs its backfill). Absent in the fleet's list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_migration: Option<bool>,
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
    /// Whether the runner holds between batches for the database's health (absent from servers
    /// before throttling: not throttled).
    #[serde(default)]
    pub throttle: BackfillThrottle,
    /// The settings set on the server (`switchyard backfill set`); absent: none.
    #[serde(default)]
    pub settings: BackfillSettings,
    /// Who last changed the settings, when, and why; absent if they never were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_changed: Option<SettingsChanged>,
}

/// The last change of a backfill's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsChanged {
    pub by: String,
    pub at_ms: i64,
    pub reason: String,
}

/// A runner holding between batches while a health signal is over its threshold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackfillThrottle {
    pub throttled: bool,
    /// E.g. `replica 127.0.0.1:5433 replay lag 3.2 s > 1 s`; empty when not throttled.
    pub reason: String,
    /// When the current hold began; `None` when not throttled.
    pub since_ms: Option<i64>,
    /// Seconds held, over the whole backfill so far.
    pub throttled_seconds: f64,
}

/// A backfill's settings on the server, changeable while it runs; runners apply them at the
/// next batch. `None`: the runner's own value. For thresholds, 0 turns the signal off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u64>,
    /// 0: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replica_lag_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replica_lag_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wal_bytes_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_target_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yield_to_blocked_sessions: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_during_autovacuum: Option<bool>,
}

impl BackfillSettings {
    /// Each setting `other` has replaces this one's.
    pub fn merged(&self, other: &BackfillSettings) -> BackfillSettings {
        BackfillSettings {
            batch_size: other.batch_size.or(self.batch_size),
            max_rows_per_second: other.max_rows_per_second.or(self.max_rows_per_second),
            max_replica_lag_ms: other.max_replica_lag_ms.or(self.max_replica_lag_ms),
            max_replica_lag_bytes: other.max_replica_lag_bytes.or(self.max_replica_lag_bytes),
            max_wal_bytes_per_second: other
                .max_wal_bytes_per_second
                .or(self.max_wal_bytes_per_second),
            batch_target_ms: other.batch_target_ms.or(self.batch_target_ms),
            yield_to_blocked_sessions: other
                .yield_to_blocked_sessions
                .or(self.yield_to_blocked_sessions),
            hold_during_autovacuum: other.hold_during_autovacuum.or(self.hold_during_autovacuum),
        }
    }
}

/// `PUT /v1/migrations/{key}/backfill/settings`: the settings given replace those stored;
/// `reset` first clears every stored setting (back to the runner's own values).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillSettingsChange {
    #[serde(default)]
    pub reset: bool,
    /// Why (required, as for every change).
    #[serde(default)]
    pub reason: String,
    #[serde(flatten)]
    pub settings: BackfillSettings,
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

    /// The JSON body, written straight into a buffer of the right size: the same bytes serde
    /// writes (a test holds them equal), without its per-field escaping scans and regrowth. The
    /// server-side decide answers tens of thousands of these a second, and only the key, bucket
    /// and version vary; the names and the plan's words are fixed text.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let plain_key = self
            .key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !plain_key {
            // Not a key the server makes (those are [a-z0-9._-]); serde escapes it.
            return serde_json::to_vec(self).expect("a decision serializes");
        }
        let mut numbers = itoa::Buffer::new();
        let mut out = Vec::with_capacity(224 + self.key.len());
        out.extend_from_slice(b"{\"key\":\"");
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(b"\",\"bucket\":");
        match self.bucket {
            Some(bucket) => out.extend_from_slice(numbers.format(bucket).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        for (name, word) in [
            ("stage", self.stage.as_str()),
            ("write", self.write.as_str()),
            ("authoritative_write", self.authoritative_write.as_str()),
            ("read", self.read.as_str()),
            ("return_value", self.return_value.as_str()),
        ] {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":\"");
            out.extend_from_slice(word.as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b",\"shadow_compare\":");
        out.extend_from_slice(if self.shadow_compare {
            b"true"
        } else {
            b"false"
        });
        out.extend_from_slice(b",\"version\":");
        out.extend_from_slice(numbers.format(self.version).as_bytes());
        out.push(b'}');
        out
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
    /// Some of the mismatches counted, with their entities (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatch_samples: Vec<MismatchSample>,
}

/// A shadow read whose old and new values differed (in a telemetry entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MismatchSample {
    pub entity_key: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub observed_at_ms: i64,
}

impl From<MismatchSample> for switchyard_domain::traffic::MismatchSample {
    fn from(s: MismatchSample) -> Self {
        Self {
            entity_key: s.entity_key,
            description: s.description,
            observed_at_ms: s.observed_at_ms,
        }
    }
}

/// `GET /v1/migrations/{key}/mismatches`: the entities whose shadow reads differed, most
/// recently seen first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatches {
    pub key: String,
    /// Distinct entities kept for this migration (the newest 1,000).
    pub entities: u64,
    pub samples: Vec<MismatchEntity>,
}

/// One entity's mismatches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MismatchEntity {
    pub entity_key: String,
    /// The latest description the comparison gave (empty: none).
    pub description: String,
    /// Samples received for this entity (a client samples the first few per report).
    pub seen: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Who saw it last.
    pub service: String,
    pub instance_id: String,
}

/// `GET /v1/migrations/{key}/traffic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub key: String,
    pub minutes: Vec<TrafficMinute>,
    pub total: TrafficCounts,
    /// Per reporting service over the period: who is still on the old shape. Absent from
    /// servers before it: none.
    #[serde(default)]
    pub services: Vec<ServiceTraffic>,
}

/// One service's operations on a migration over a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTraffic {
    pub service: String,
    pub old: SideTraffic,
    pub new: SideTraffic,
    /// The last minute (Unix ms) the service used the old shape in the period; null: never.
    pub last_old_minute_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficMinute {
    pub minute_ms: i64,
    #[serde(flatten)]
    pub counts: TrafficCounts,
}

/// `GET /v1/migrations/{key}/usage`: what the usage observer saw of the old shape in the
/// migration's target database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    pub key: String,
    /// The database the migration names; null: none (the database is not observed).
    pub target_database: Option<String>,
    pub old_shape: Vec<String>,
    /// Evidence shown from here on.
    pub since_ms: i64,
    /// Where the gate's window starts (the soak's), when the soak has started.
    pub window_from_ms: Option<i64>,
    /// Since when the target has been observed without a gap, and why then.
    pub covered_since_ms: Option<i64>,
    pub coverage_reason: Option<String>,
    pub last_pass_ms: Option<i64>,
    /// How long the last pass took reading the target, and how many statements it saw there.
    pub last_pass_duration_ms: Option<u64>,
    pub statements_on_target: Option<u64>,
    /// Why the target cannot be observed, and since when (null while it can).
    pub failing: Option<UsageFailure>,
    /// The gate's `database_usage` check, now.
    pub check: GateCheck,
    /// Statements touching the old shape, newest first.
    pub statements: Vec<UsageStatement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageFailure {
    pub reason: String,
    pub since_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageStatement {
    /// Normalized text (constants as `$n`).
    pub statement: String,
    pub role: String,
    pub objects: Vec<UsageObject>,
    pub calls: u64,
    pub rows: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Calls inside the gate's window.
    pub calls_in_window: u64,
    /// `blocks` (used in the window), `expected` (a Switchyard client's, before it) or
    /// `unexpected` (another caller's, before it: it would block).
    pub verdict: String,
    pub sessions: Vec<UsageSession>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageObject {
    pub object: String,
    /// Null: the statement names it; otherwise why it may use it.
    pub possible: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSession {
    pub role: String,
    pub application_name: String,
    pub client_addr: String,
}

impl From<&switchyard_domain::usage::StatementSummary> for UsageStatement {
    fn from(s: &switchyard_domain::usage::StatementSummary) -> Self {
        Self {
            statement: s.statement.clone(),
            role: s.role.clone(),
            objects: s
                .objects
                .iter()
                .map(|o| UsageObject {
                    object: o.object.clone(),
                    possible: o.possible.clone(),
                })
                .collect(),
            calls: s.calls,
            rows: s.rows,
            first_seen_ms: s.first_seen_ms,
            last_seen_ms: s.last_seen_ms,
            calls_in_window: s.calls_in_window,
            verdict: s.verdict.as_str().to_owned(),
            sessions: s
                .sessions
                .iter()
                .map(|x| UsageSession {
                    role: x.role.clone(),
                    application_name: x.application_name.clone(),
                    client_addr: x.client_addr.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settings_change_refuses_unknown_fields() {
        let change: BackfillSettingsChange =
            serde_json::from_str(r#"{"reset": true, "batch_size": 5}"#).unwrap();
        assert!(change.reset);
        assert_eq!(change.settings.batch_size, Some(5));
        let typo = serde_json::from_str::<BackfillSettingsChange>(r#"{"batch_sise": 5}"#);
        assert!(typo.unwrap_err().to_string().contains("batch_sise"));
    }

    #[test]
    fn a_decision_written_by_hand_is_the_bytes_serde_writes() {
        let keys = ["users.email-split", "a", "odd \"key\" \\ with\ttabs"];
        for stage in Stage::ALL {
            for (key, bucket) in keys.iter().zip([Some(0), None, Some(9_999)]) {
                let decision =
                    Decision::new(key.to_string(), bucket, stage.plan(), Version(u64::MAX));
                assert_eq!(
                    String::from_utf8(decision.to_json_bytes()).unwrap(),
                    serde_json::to_string(&decision).unwrap(),
                    "{stage:?} {key:?} {bucket:?}"
                );
            }
        }
    }
}
