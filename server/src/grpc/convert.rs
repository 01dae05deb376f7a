//! Wire forms of the server's own records (audit entries, tokens, instances, backfill progress,
//! snapshots, decisions) and of the app's inputs read from requests. Wire ↔ domain conversions
//! are not here: they live in `switchyard_proto::convert`, shared with every client.

use crate::app::{BackfillProgress, CreateMigrationInput, Decision, Lifecycle, RunnerPosition};
use crate::hub::{Snapshot, WatchItem};
use crate::store::{AuditRecord, ClientInstance, TokenRecord};
use switchyard_domain::Version;
use switchyard_domain::traffic::{MismatchSample, TrafficCounts};
use switchyard_proto::convert::traffic_minute_to_wire;
use switchyard_proto::v1 as pb;

impl From<pb::CreateMigrationRequest> for CreateMigrationInput {
    fn from(r: pb::CreateMigrationRequest) -> Self {
        CreateMigrationInput {
            key: r.key,
            description: r.description,
            owner: r.owner,
            entity_kind: r.entity_kind,
            soak_seconds: r.soak_seconds,
            expected_services: r.expected_services,
            has_backfill: r.has_backfill,
            shadow_sample_bp: r.shadow_sample_bp,
            reason: r.reason,
            target_database: Some(r.target_database),
            old_shape: r.old_shape,
            retire_probation_seconds: r.retire_probation_seconds,
        }
    }
}

impl<'a> From<&'a pb::BackfillCheckpointRequest> for RunnerPosition<'a> {
    fn from(r: &'a pb::BackfillCheckpointRequest) -> Self {
        RunnerPosition {
            cursor: &r.cursor,
            rows_done: r.rows_done,
            rows_total_estimate: r.rows_total_estimate,
            runner: &r.runner,
            started_version: (r.started_version > 0).then_some(Version(r.started_version)),
            throttle: r.throttle.as_ref().map(|t| crate::app::RunnerThrottle {
                reason: if t.throttled { &t.reason } else { "" },
                held_ms: t.held_ms,
                throttled_ms: t.throttled_ms,
            }),
        }
    }
}

/// A client's counts as the app takes them: (migration, minute, counts), and the mismatch
/// samples per migration.
#[allow(clippy::type_complexity)]
pub fn telemetry_entries(
    entries: Vec<pb::MigrationTelemetry>,
) -> (
    Vec<(String, i64, TrafficCounts)>,
    Vec<(String, Vec<MismatchSample>)>,
) {
    let mut samples = Vec::new();
    let counts = entries
        .into_iter()
        .map(|mut e| {
            let counts = TrafficCounts::from(&e);
            if !e.mismatch_samples.is_empty() {
                let taken = std::mem::take(&mut e.mismatch_samples);
                samples.push((e.key.clone(), taken.into_iter().map(Into::into).collect()));
            }
            (e.key, e.minute_ms, counts)
        })
        .collect();
    (counts, samples)
}

impl From<&Snapshot> for pb::Snapshot {
    fn from(s: &Snapshot) -> Self {
        pb::Snapshot {
            version: s.version.0,
            migrations: s
                .migrations
                .values()
                .map(|m| pb::Migration::from(&**m))
                .collect(),
        }
    }
}

impl From<WatchItem> for pb::WatchEvent {
    fn from(item: WatchItem) -> Self {
        pb::WatchEvent {
            event: Some(match item {
                WatchItem::Snapshot(s) => pb::watch_event::Event::Snapshot((&*s).into()),
                WatchItem::Change(p) => pb::watch_event::Event::Change((&*p.migration).into()),
            }),
        }
    }
}

impl From<Decision> for pb::Decision {
    fn from(d: Decision) -> Self {
        pb::Decision {
            key: d.key,
            stage: pb::Stage::from(d.plan.stage) as i32,
            bucket: d.bucket.unwrap_or(0),
            has_bucket: d.bucket.is_some(),
            write: pb::Side::from(d.plan.write) as i32,
            authoritative_write: pb::Side::from(d.plan.authoritative_write) as i32,
            read: pb::Side::from(d.plan.read) as i32,
            return_value: pb::Side::from(d.plan.return_value) as i32,
            shadow_compare: d.plan.shadow_compare,
            version: d.version.0,
        }
    }
}

impl From<TokenRecord> for pb::TokenInfo {
    fn from(t: TokenRecord) -> Self {
        pb::TokenInfo {
            id: t.id,
            name: t.name,
            role: pb::Role::from(t.role) as i32,
            created_at_ms: t.created_at_ms,
            revoked_at_ms: t.revoked_at_ms.unwrap_or(0),
            scope: t.scope.texts(),
        }
    }
}

impl From<AuditRecord> for pb::AuditEntry {
    fn from(e: AuditRecord) -> Self {
        pb::AuditEntry {
            id: e.id,
            migration_key: e.migration_key,
            version: e.version.0,
            actor: e.actor,
            at_ms: e.at_ms,
            action: e.action,
            reason: e.reason,
            before_json: e.before_json,
            after_json: e.after_json,
            approved_by: e.approved_by,
        }
    }
}

/// One page of the audit log; `next` is where the following page starts.
pub fn audit_page(entries: Vec<AuditRecord>, next: Option<u64>) -> pb::AuditResponse {
    pb::AuditResponse {
        entries: entries.into_iter().map(pb::AuditEntry::from).collect(),
        next_before_id: next.unwrap_or(0),
    }
}

pub fn instance(i: ClientInstance, live: bool, uses_migration: Option<bool>) -> pb::Instance {
    pb::Instance {
        service: i.service,
        instance_id: i.instance_id,
        applied_version: i.applied_version.0,
        last_seen_ms: i.last_seen_ms,
        first_seen_ms: i.first_seen_ms,
        live,
        uses_migration,
    }
}

pub fn traffic(
    key: String,
    rows: &[(i64, TrafficCounts)],
    total: &TrafficCounts,
) -> pb::TrafficResponse {
    pb::TrafficResponse {
        key,
        minutes: rows
            .iter()
            .map(|(minute, counts)| traffic_minute_to_wire(*minute, counts))
            .collect(),
        total: Some(traffic_minute_to_wire(0, total)),
    }
}

impl From<Lifecycle> for pb::LifecycleResponse {
    fn from(view: Lifecycle) -> Self {
        pb::LifecycleResponse {
            contracted_in_use: view
                .contracted_in_use
                .into_iter()
                .map(|(key, instances)| pb::ContractedInUse {
                    key,
                    // Only live instances are listed: their heartbeats name the migration now.
                    instances: instances
                        .into_iter()
                        .map(|i| instance(i, true, Some(true)))
                        .collect(),
                })
                .collect(),
            complete_not_contracted: view
                .complete_not_contracted
                .into_iter()
                .map(|(key, since)| pb::CompleteNotContracted {
                    key,
                    complete_since_ms: since,
                })
                .collect(),
        }
    }
}

impl From<&BackfillProgress> for pb::BackfillProgress {
    fn from(p: &BackfillProgress) -> Self {
        pb::BackfillProgress {
            key: p.key.clone(),
            status: pb::BackfillStatus::from(p.status) as i32,
            paused: p.paused,
            cursor: p.cursor.clone(),
            rows_done: p.rows_done,
            rows_total_estimate: p.rows_total_estimate,
            rate_rows_per_second: p.rate_rows_per_second,
            eta_seconds: p.eta_seconds.unwrap_or(0),
            runner: p.runner.clone(),
            updated_at_ms: p.updated_at_ms.unwrap_or(0),
            throttle: Some(pb::BackfillThrottle {
                throttled: !p.throttle_reason.is_empty(),
                reason: p.throttle_reason.clone(),
                since_ms: p.throttled_since_ms.unwrap_or(0),
                throttled_ms: p.throttled_ms,
                held_ms: 0,
            }),
            settings: Some(pb::BackfillSettings::from(&p.settings)),
            settings_changed: p.settings_changed.as_ref().map(|(by, at_ms, reason)| {
                pb::BackfillSettingsChange {
                    by: by.clone(),
                    at_ms: *at_ms,
                    reason: reason.clone(),
                }
            }),
        }
    }
}
