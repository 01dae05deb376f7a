//! Conversions between wire types and domain types, in one place for the server and every
//! client: domain → wire is infallible; wire → domain validates (`TryFrom`).

use crate::v1 as pb;
use std::collections::BTreeMap;
use switchyard_domain::migration::{Backfill, BackfillStatus, Compared, Window};
use switchyard_domain::traffic::{Histogram, MismatchSample, SideCounts, TrafficCounts};
use switchyard_domain::{
    BasisPoints, Database, Event, EventKind, InvalidInput, Migration, MigrationKey, Operation,
    Role, Side, Stage, Version,
};

impl From<Stage> for pb::Stage {
    fn from(s: Stage) -> Self {
        match s {
            Stage::Off => pb::Stage::Off,
            Stage::DualWrite => pb::Stage::DualWrite,
            Stage::Shadow => pb::Stage::Shadow,
            Stage::Live => pb::Stage::Live,
            Stage::Rampdown => pb::Stage::Rampdown,
            Stage::Complete => pb::Stage::Complete,
            Stage::Contracted => pb::Stage::Contracted,
        }
    }
}

/// A wire stage; `Ok(None)` for STAGE_UNSPECIFIED.
pub fn stage_from_wire(raw: i32) -> Result<Option<Stage>, InvalidInput> {
    let stage = match pb::Stage::try_from(raw) {
        Ok(pb::Stage::Unspecified) => return Ok(None),
        Ok(pb::Stage::Off) => Stage::Off,
        Ok(pb::Stage::DualWrite) => Stage::DualWrite,
        Ok(pb::Stage::Shadow) => Stage::Shadow,
        Ok(pb::Stage::Live) => Stage::Live,
        Ok(pb::Stage::Rampdown) => Stage::Rampdown,
        Ok(pb::Stage::Complete) => Stage::Complete,
        Ok(pb::Stage::Contracted) => Stage::Contracted,
        Err(_) => {
            return Err(InvalidInput(format!(
                "unknown stage {raw}: allowed STAGE_OFF (1) to STAGE_CONTRACTED (7)"
            )));
        }
    };
    Ok(Some(stage))
}

/// A rollout change as the request names it: the stage the front ends on (unspecified: the
/// current one) and where.
impl TryFrom<&pb::SetRolloutRequest> for Operation {
    type Error = InvalidInput;

    fn try_from(r: &pb::SetRolloutRequest) -> Result<Self, InvalidInput> {
        Ok(Operation::SetRollout {
            stage: stage_from_wire(r.stage)?,
            rollout: BasisPoints::new(r.rollout_bp)?,
        })
    }
}

impl From<Side> for pb::Side {
    fn from(s: Side) -> Self {
        match s {
            Side::Old => pb::Side::Old,
            Side::New => pb::Side::New,
            Side::Both => pb::Side::Both,
        }
    }
}

impl From<BackfillStatus> for pb::BackfillStatus {
    fn from(s: BackfillStatus) -> Self {
        match s {
            BackfillStatus::None => pb::BackfillStatus::None,
            BackfillStatus::NotStarted => pb::BackfillStatus::NotStarted,
            BackfillStatus::Running => pb::BackfillStatus::Running,
            BackfillStatus::Complete => pb::BackfillStatus::Complete,
        }
    }
}

/// A status this build does not know (or none) reads as no backfill: nothing acts on a backfill
/// whose state it cannot name.
impl From<pb::BackfillStatus> for BackfillStatus {
    fn from(s: pb::BackfillStatus) -> Self {
        match s {
            pb::BackfillStatus::NotStarted => BackfillStatus::NotStarted,
            pb::BackfillStatus::Running => BackfillStatus::Running,
            pb::BackfillStatus::Complete => BackfillStatus::Complete,
            pb::BackfillStatus::None | pb::BackfillStatus::Unspecified => BackfillStatus::None,
        }
    }
}

impl From<EventKind> for pb::EventKind {
    fn from(e: EventKind) -> Self {
        match e {
            EventKind::ExpandApplied => pb::EventKind::ExpandApplied,
            EventKind::BackfillStarted => pb::EventKind::BackfillStarted,
            EventKind::BackfillProgress => pb::EventKind::BackfillProgress,
            EventKind::BackfillComplete => pb::EventKind::BackfillComplete,
            EventKind::BackfillPaused => pb::EventKind::BackfillPaused,
            EventKind::BackfillResumed => pb::EventKind::BackfillResumed,
            EventKind::BackfillCancelled => pb::EventKind::BackfillCancelled,
            EventKind::OldShapeRepaired => pb::EventKind::OldShapeRepaired,
            EventKind::Retired => pb::EventKind::Retired,
            EventKind::Restored => pb::EventKind::Restored,
            EventKind::Contracted => pb::EventKind::Contracted,
        }
    }
}

impl TryFrom<pb::EventKind> for EventKind {
    type Error = InvalidInput;

    fn try_from(e: pb::EventKind) -> Result<Self, InvalidInput> {
        Ok(match e {
            pb::EventKind::ExpandApplied => EventKind::ExpandApplied,
            pb::EventKind::BackfillStarted => EventKind::BackfillStarted,
            pb::EventKind::BackfillProgress => EventKind::BackfillProgress,
            pb::EventKind::BackfillComplete => EventKind::BackfillComplete,
            pb::EventKind::BackfillPaused => EventKind::BackfillPaused,
            pb::EventKind::BackfillResumed => EventKind::BackfillResumed,
            pb::EventKind::BackfillCancelled => EventKind::BackfillCancelled,
            pb::EventKind::OldShapeRepaired => EventKind::OldShapeRepaired,
            pb::EventKind::Retired => EventKind::Retired,
            pb::EventKind::Restored => EventKind::Restored,
            pb::EventKind::Contracted => EventKind::Contracted,
            pb::EventKind::Unspecified => return Err(invalid_event(e as i32)),
        })
    }
}

/// The event a request records, with the rows a progress event carries.
impl TryFrom<&pb::RecordEventRequest> for Event {
    type Error = InvalidInput;

    fn try_from(r: &pb::RecordEventRequest) -> Result<Self, InvalidInput> {
        let kind = pb::EventKind::try_from(r.event).map_err(|_| invalid_event(r.event))?;
        EventKind::try_from(kind)?
            .with_rows(Some((r.rows_done, r.rows_total_estimate)))
            .map_err(|e| InvalidInput(e.0))
    }
}

fn invalid_event(raw: i32) -> InvalidInput {
    InvalidInput(format!(
        "invalid event {raw}: allowed EVENT_KIND_EXPAND_APPLIED (1) to \
         EVENT_KIND_BACKFILL_CANCELLED (9)"
    ))
}

impl From<Role> for pb::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Reader => pb::Role::Reader,
            Role::Operator => pb::Role::Operator,
            Role::Gate => pb::Role::Gate,
            Role::Backfill => pb::Role::Backfill,
            Role::Admin => pb::Role::Admin,
        }
    }
}

impl TryFrom<pb::Role> for Role {
    type Error = InvalidInput;

    fn try_from(r: pb::Role) -> Result<Self, InvalidInput> {
        Ok(match r {
            pb::Role::Reader => Role::Reader,
            pb::Role::Operator => Role::Operator,
            pb::Role::Gate => Role::Gate,
            pb::Role::Backfill => Role::Backfill,
            pb::Role::Admin => Role::Admin,
            pb::Role::Unspecified => return Err(invalid_role(r as i32)),
        })
    }
}

/// A role as a request carries it: its wire number, which may be one this build does not know.
pub fn role_from_wire(raw: i32) -> Result<Role, InvalidInput> {
    pb::Role::try_from(raw)
        .map_err(|_| invalid_role(raw))?
        .try_into()
}

fn invalid_role(raw: i32) -> InvalidInput {
    let allowed: Vec<&str> = Role::ALL
        .into_iter()
        .map(|r| pb::Role::from(r).as_str_name())
        .collect();
    InvalidInput(format!(
        "invalid role {raw}: allowed {}",
        allowed.join(", ")
    ))
}

impl From<&Migration> for pb::Migration {
    fn from(m: &Migration) -> Self {
        pb::Migration {
            key: m.key.to_string(),
            description: m.description.clone(),
            owner: m.owner.clone(),
            entity_kind: m.entity_kind.clone(),
            soak_seconds: m.soak_seconds,
            expected_services: m.expected_services.clone(),
            has_backfill: m.has_backfill,
            salt: m.salt,
            stage: pb::Stage::from(m.stage) as i32,
            rollout_bp: m.rollout_bp.get(),
            version: m.version.0,
            created_at_ms: m.created_at_ms,
            updated_at_ms: m.updated_at_ms,
            expand_applied: m.expand_applied,
            backfill: Some(pb::Backfill {
                status: pb::BackfillStatus::from(m.backfill.status) as i32,
                rows_done: m.backfill.rows_done,
                rows_total_estimate: m.backfill.rows_total_estimate,
                started_version: m.backfill.started_version.map_or(0, |v| v.0),
                completed_version: m.backfill.completed_version.map_or(0, |v| v.0),
                paused: m.backfill.paused,
            }),
            old_shape_stale: m.old_shape_stale,
            shadow_sample_bp: m.shadow_sample_bp.get(),
            soak_started_at_ms: m.soak_started_at_ms.unwrap_or(0),
            full_since: m
                .full_since
                .iter()
                .map(|(stage, since)| (stage.as_str().to_owned(), since.0))
                .collect(),
            applicable_events: EventKind::ALL
                .into_iter()
                .filter(|e| e.applies_to(m))
                .map(|e| pb::EventKind::from(e) as i32)
                .collect(),
            old_writes_resumed_since: m.old_writes_resumed_since.map_or(0, |v| v.0),
            live_window: m.live_window.map(|w| pb::LiveWindow {
                started_at_ms: w.started_at_ms,
                ended_at_ms: w.ended_at_ms.unwrap_or(0),
                recorded: w.recorded.map(|c| pb::ShadowComparisons {
                    comparisons: c.comparisons,
                    mismatches: c.mismatches,
                }),
            }),
            target_database: m
                .database
                .target
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            old_shape: m.database.old_shape_strings(),
            retire_probation_seconds: m.retire_probation_seconds,
            retired_at_ms: m.retired_at_ms.unwrap_or(0),
            stage_since_ms: m.stage_since_ms,
        }
    }
}

/// A migration as a client receives it; `applicable_events` is derived, so it is not read.
impl TryFrom<pb::Migration> for Migration {
    type Error = InvalidInput;

    fn try_from(m: pb::Migration) -> Result<Self, InvalidInput> {
        let stage = stage_from_wire(m.stage)?
            .ok_or_else(|| InvalidInput(format!("migration {} has no stage", m.key)))?;
        let backfill = m.backfill.unwrap_or_default();
        let full_since = m
            .full_since
            .iter()
            .map(|(stage, since)| {
                let stage = Stage::parse(stage).map_err(|e| {
                    InvalidInput(format!("migration {} full_since: {}", m.key, e.0))
                })?;
                Ok((stage, Version(*since)))
            })
            .collect::<Result<BTreeMap<_, _>, InvalidInput>>()?;
        let version = |v: u64| (v > 0).then_some(Version(v));
        Ok(Migration {
            key: MigrationKey::parse(&m.key)?,
            description: m.description,
            owner: m.owner,
            entity_kind: m.entity_kind,
            soak_seconds: m.soak_seconds,
            expected_services: m.expected_services,
            has_backfill: m.has_backfill,
            database: Database::from_wire(&m.target_database, &m.old_shape),
            salt: m.salt,
            shadow_sample_bp: BasisPoints::new(m.shadow_sample_bp)?,
            stage,
            rollout_bp: BasisPoints::new(m.rollout_bp)?,
            version: Version(m.version),
            created_at_ms: m.created_at_ms,
            updated_at_ms: m.updated_at_ms,
            expand_applied: m.expand_applied,
            backfill: Backfill {
                status: BackfillStatus::from(backfill.status()),
                rows_done: backfill.rows_done,
                rows_total_estimate: backfill.rows_total_estimate,
                started_version: version(backfill.started_version),
                completed_version: version(backfill.completed_version),
                paused: backfill.paused,
            },
            old_shape_stale: m.old_shape_stale,
            full_since,
            soak_started_at_ms: (m.soak_started_at_ms != 0).then_some(m.soak_started_at_ms),
            retire_probation_seconds: m.retire_probation_seconds,
            retired_at_ms: (m.retired_at_ms != 0).then_some(m.retired_at_ms),
            // 0 from a server that predates the field: its last change is the best bound.
            stage_since_ms: if m.stage_since_ms != 0 {
                m.stage_since_ms
            } else {
                m.updated_at_ms
            },
            old_writes_resumed_since: version(m.old_writes_resumed_since),
            live_window: m.live_window.map(|w| Window {
                started_at_ms: w.started_at_ms,
                ended_at_ms: (w.ended_at_ms != 0).then_some(w.ended_at_ms),
                recorded: w.recorded.map(|c| Compared {
                    comparisons: c.comparisons,
                    mismatches: c.mismatches,
                }),
            }),
        })
    }
}

impl From<&SideCounts> for pb::SideCounts {
    fn from(c: &SideCounts) -> Self {
        pb::SideCounts {
            reads: c.reads,
            writes: c.writes,
            errors: c.errors,
            latency: Some(pb::LatencyHistogram {
                counts: c.latency.0.to_vec(),
            }),
        }
    }
}

impl From<&pb::SideCounts> for SideCounts {
    fn from(c: &pb::SideCounts) -> Self {
        let mut latency = Histogram::default();
        // Extra buckets (from a newer peer) are dropped; missing ones count as zero.
        for (slot, n) in latency
            .0
            .iter_mut()
            .zip(c.latency.iter().flat_map(|h| h.counts.iter()))
        {
            *slot = *n;
        }
        SideCounts {
            reads: c.reads,
            writes: c.writes,
            errors: c.errors,
            latency,
        }
    }
}

impl From<&pb::MigrationTelemetry> for TrafficCounts {
    fn from(e: &pb::MigrationTelemetry) -> Self {
        TrafficCounts {
            old: e.old.as_ref().map(SideCounts::from).unwrap_or_default(),
            new: e.new.as_ref().map(SideCounts::from).unwrap_or_default(),
            comparisons: e.comparisons,
            mismatches: e.mismatches,
            evaluations_without_entity: e.evaluations_without_entity,
            fallback_evaluations: e.fallback_evaluations,
        }
    }
}

/// One migration's counts for one minute, as a client reports them.
pub fn telemetry_to_wire(
    key: &str,
    minute_ms: i64,
    c: &TrafficCounts,
    samples: &[MismatchSample],
) -> pb::MigrationTelemetry {
    pb::MigrationTelemetry {
        key: key.to_owned(),
        minute_ms,
        old: Some((&c.old).into()),
        new: Some((&c.new).into()),
        comparisons: c.comparisons,
        mismatches: c.mismatches,
        evaluations_without_entity: c.evaluations_without_entity,
        fallback_evaluations: c.fallback_evaluations,
        mismatch_samples: samples.iter().map(pb::MismatchSample::from).collect(),
    }
}

impl From<&MismatchSample> for pb::MismatchSample {
    fn from(s: &MismatchSample) -> Self {
        pb::MismatchSample {
            entity_key: s.entity_key.clone(),
            description: s.description.clone(),
            observed_at_ms: s.observed_at_ms,
        }
    }
}

impl From<pb::MismatchSample> for MismatchSample {
    fn from(s: pb::MismatchSample) -> Self {
        MismatchSample {
            entity_key: s.entity_key,
            description: s.description,
            observed_at_ms: s.observed_at_ms,
        }
    }
}

/// One minute of a migration's rolled-up traffic, as the server serves it.
pub fn traffic_minute_to_wire(minute_ms: i64, c: &TrafficCounts) -> pb::TrafficMinute {
    pb::TrafficMinute {
        minute_ms,
        old: Some((&c.old).into()),
        new: Some((&c.new).into()),
        comparisons: c.comparisons,
        mismatches: c.mismatches,
        evaluations_without_entity: c.evaluations_without_entity,
        fallback_evaluations: c.fallback_evaluations,
    }
}

impl From<&switchyard_domain::gate::GateReport> for pb::GateReport {
    fn from(r: &switchyard_domain::gate::GateReport) -> Self {
        pb::GateReport {
            key: r.key.clone(),
            passed: r.passed,
            checks: r
                .checks
                .iter()
                .map(|c| pb::GateCheck {
                    id: c.id.as_str().to_owned(),
                    passed: c.passed,
                    evidence: c.evidence.clone(),
                    remedy: c.remedy.clone(),
                })
                .collect(),
            soak_ends_at_ms: r.soak_ends_at_ms.unwrap_or(0),
            evaluated_at_ms: r.evaluated_at_ms,
        }
    }
}

impl From<&crate::json::BackfillSettings> for pb::BackfillSettings {
    fn from(s: &crate::json::BackfillSettings) -> Self {
        pb::BackfillSettings {
            batch_size: s.batch_size,
            max_rows_per_second: s.max_rows_per_second,
            max_replica_lag_ms: s.max_replica_lag_ms,
            max_replica_lag_bytes: s.max_replica_lag_bytes,
            max_wal_bytes_per_second: s.max_wal_bytes_per_second,
            batch_target_ms: s.batch_target_ms,
            yield_to_blocked_sessions: s.yield_to_blocked_sessions,
            hold_during_autovacuum: s.hold_during_autovacuum,
        }
    }
}

impl From<&pb::BackfillSettings> for crate::json::BackfillSettings {
    fn from(s: &pb::BackfillSettings) -> Self {
        crate::json::BackfillSettings {
            batch_size: s.batch_size,
            max_rows_per_second: s.max_rows_per_second,
            max_replica_lag_ms: s.max_replica_lag_ms,
            max_replica_lag_bytes: s.max_replica_lag_bytes,
            max_wal_bytes_per_second: s.max_wal_bytes_per_second,
            batch_target_ms: s.batch_target_ms,
            yield_to_blocked_sessions: s.yield_to_blocked_sessions,
            hold_during_autovacuum: s.hold_during_autovacuum,
        }
    }
}

/// A plan's stages from the wire (the stage enum to its name; UNSPECIFIED refused).
fn plan_stages_from_wire(
    stages: &[pb::PlanStage],
) -> Result<Vec<crate::json::PlanStage>, InvalidInput> {
    stages
        .iter()
        .map(|s| {
            let stage = stage_from_wire(s.stage)?.ok_or_else(|| {
                InvalidInput("every plan stage needs its stage (STAGE_DUAL_WRITE …)".to_owned())
            })?;
            Ok(crate::json::PlanStage {
                stage: stage.as_str().to_owned(),
                steps: s
                    .steps
                    .iter()
                    .map(|st| crate::json::PlanStepBody {
                        rollout_bp: st.rollout_bp,
                        hold_seconds: st.hold_seconds,
                    })
                    .collect(),
                then: s.then.clone(),
            })
        })
        .collect()
}

fn plan_stages_to_wire(stages: &[crate::json::PlanStage]) -> Vec<pb::PlanStage> {
    stages
        .iter()
        .map(|s| pb::PlanStage {
            stage: Stage::parse(&s.stage).map_or(pb::Stage::Unspecified, pb::Stage::from) as i32,
            steps: s
                .steps
                .iter()
                .map(|st| pb::PlanStep {
                    rollout_bp: st.rollout_bp,
                    hold_seconds: st.hold_seconds,
                })
                .collect(),
            then: s.then.clone(),
        })
        .collect()
}

impl From<&crate::json::GuardrailsBody> for pb::PlanGuardrails {
    fn from(g: &crate::json::GuardrailsBody) -> Self {
        pb::PlanGuardrails {
            max_mismatch_ratio: g.max_mismatch_ratio,
            max_new_error_ratio: g.max_new_error_ratio,
            max_error_ratio_vs_old: g.max_error_ratio_vs_old,
            max_p99_ratio_vs_old: g.max_p99_ratio_vs_old,
            max_behind_seconds: g.max_behind_seconds,
            max_backfill_stall_seconds: g.max_backfill_stall_seconds,
            max_unobserved_seconds: g.max_unobserved_seconds,
            min_operations: g.min_operations,
            min_comparisons: g.min_comparisons,
            on_breach: g.on_breach.clone(),
        }
    }
}

impl From<&pb::PlanGuardrails> for crate::json::GuardrailsBody {
    fn from(g: &pb::PlanGuardrails) -> Self {
        crate::json::GuardrailsBody {
            max_mismatch_ratio: g.max_mismatch_ratio,
            max_new_error_ratio: g.max_new_error_ratio,
            max_error_ratio_vs_old: g.max_error_ratio_vs_old,
            max_p99_ratio_vs_old: g.max_p99_ratio_vs_old,
            max_behind_seconds: g.max_behind_seconds,
            max_backfill_stall_seconds: g.max_backfill_stall_seconds,
            max_unobserved_seconds: g.max_unobserved_seconds,
            min_operations: g.min_operations,
            min_comparisons: g.min_comparisons,
            on_breach: g.on_breach.clone(),
        }
    }
}

impl TryFrom<&pb::SetPlanRequest> for crate::json::PlanBody {
    type Error = InvalidInput;

    fn try_from(r: &pb::SetPlanRequest) -> Result<Self, InvalidInput> {
        Ok(crate::json::PlanBody {
            template: (!r.template.is_empty()).then(|| r.template.clone()),
            stages: plan_stages_from_wire(&r.stages)?,
            not_before_ms: (r.not_before_ms != 0).then_some(r.not_before_ms),
            window: (!r.window.is_empty()).then(|| r.window.clone()),
            guardrails: r.guardrails.as_ref().map(Into::into).unwrap_or_default(),
            reason: r.reason.clone(),
        })
    }
}

impl From<&crate::json::PlanView> for pb::PlanView {
    fn from(p: &crate::json::PlanView) -> Self {
        pb::PlanView {
            key: p.key.clone(),
            stages: plan_stages_to_wire(&p.stages),
            not_before_ms: p.not_before_ms.unwrap_or(0),
            window: p.window.clone().unwrap_or_default(),
            template: p.template.clone().unwrap_or_default(),
            guardrails: Some((&p.guardrails).into()),
            set_by: p.set_by.clone(),
            set_at_ms: p.set_at_ms,
            status: p.status.clone(),
            status_reason: p.status_reason.clone(),
            status_at_ms: p.status_at_ms,
            waiting: p.waiting.clone(),
            next_kind: p.next.kind.clone(),
            next_description: p.next.description.clone(),
            next_at_ms: p.next.at_ms.unwrap_or(0),
        }
    }
}

impl TryFrom<&pb::SetPlanTemplateRequest> for crate::json::PlanTemplateBody {
    type Error = InvalidInput;

    fn try_from(r: &pb::SetPlanTemplateRequest) -> Result<Self, InvalidInput> {
        Ok(crate::json::PlanTemplateBody {
            stages: plan_stages_from_wire(&r.stages)?,
            window: (!r.window.is_empty()).then(|| r.window.clone()),
            description: r.description.clone(),
            reason: r.reason.clone(),
        })
    }
}

impl From<&crate::json::PlanTemplate> for pb::PlanTemplate {
    fn from(t: &crate::json::PlanTemplate) -> Self {
        pb::PlanTemplate {
            name: t.name.clone(),
            stages: plan_stages_to_wire(&t.stages),
            window: t.window.clone().unwrap_or_default(),
            description: t.description.clone(),
            updated_by: t.updated_by.clone(),
            updated_at_ms: t.updated_at_ms,
        }
    }
}

impl From<&crate::json::Webhook> for pb::Webhook {
    fn from(w: &crate::json::Webhook) -> Self {
        pb::Webhook {
            id: w.id,
            url: w.url.clone(),
            migrations: w.migrations.clone(),
            events: w.events.clone(),
            format: w.format.clone(),
            created_by: w.created_by.clone(),
            created_at_ms: w.created_at_ms,
            removed_at_ms: w.removed_at_ms.unwrap_or(0),
        }
    }
}

impl From<&crate::json::WebhookDelivery> for pb::WebhookDelivery {
    fn from(d: &crate::json::WebhookDelivery) -> Self {
        pb::WebhookDelivery {
            id: d.id,
            event: d.event.clone(),
            key: d.key.clone(),
            created_at_ms: d.created_at_ms,
            status: d.status.clone(),
            attempts: d.attempts,
            last_status: u32::from(d.last_status),
            last_error: d.last_error.clone(),
            next_attempt_ms: d.next_attempt_ms,
            delivered_at_ms: d.delivered_at_ms.unwrap_or(0),
        }
    }
}

/// An approval request in the proto's shape; its `migration` (after an approval) is set by the
/// caller, who has the record.
impl From<&crate::json::Approval> for pb::Approval {
    fn from(a: &crate::json::Approval) -> Self {
        pb::Approval {
            id: a.id,
            key: a.key.clone(),
            change: a.change.clone(),
            action: a.action.clone(),
            stage: a
                .stage
                .as_deref()
                .and_then(|s| Stage::parse(s).ok())
                .map_or(pb::Stage::Unspecified, pb::Stage::from) as i32,
            rollout_bp: a.rollout_bp.unwrap_or(0),
            gated: a.gated.clone(),
            expected_version: a.expected_version,
            reason: a.reason.clone(),
            requested_by: a.requested_by.clone(),
            requested_at_ms: a.requested_at_ms,
            origin: a.origin.clone(),
            status: a.status.clone(),
            decided_by: a.decided_by.clone(),
            decided_at_ms: a.decided_at_ms.unwrap_or(0),
            decision_reason: a.decision_reason.clone(),
            migration: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_domain::NewMigration;

    #[test]
    fn migrations_survive_the_wire() {
        let mut m = Migration::create(
            NewMigration {
                key: MigrationKey::parse("users.handle").unwrap(),
                description: "d".into(),
                owner: "o".into(),
                entity_kind: "user_id".into(),
                soak_seconds: 60,
                expected_services: vec!["api".into()],
                has_backfill: true,
                shadow_sample: BasisPoints::new(2_500).unwrap(),
                database: Default::default(),
                retire_probation_seconds: None,
            },
            42,
            Version(3),
            1_000,
        );
        m.stage = Stage::Shadow;
        m.rollout_bp = BasisPoints::new(1_234).unwrap();
        m.backfill.status = BackfillStatus::Complete;
        m.backfill.completed_version = Some(Version(2));
        m.soak_started_at_ms = Some(5_000);
        m.full_since.insert(Stage::Shadow, Version(3));
        m.old_writes_resumed_since = Some(Version(2));
        m.live_window = Some(Window {
            started_at_ms: 2_000,
            ended_at_ms: Some(4_000),
            recorded: Some(Compared {
                comparisons: 7,
                mismatches: 1,
            }),
        });
        // Derived from the record: the expand is not recorded yet, the backfill is complete.
        assert_eq!(
            pb::Migration::from(&m).applicable_events,
            [pb::EventKind::ExpandApplied as i32]
        );
        let back = Migration::try_from(pb::Migration::from(&m)).unwrap();
        let expected = m.clone();
        assert_eq!(back, expected);

        let mut bad = pb::Migration::from(&m);
        bad.rollout_bp = 10_001;
        assert!(Migration::try_from(bad).is_err());
    }

    #[test]
    fn roles_and_events_survive_the_wire_and_unknown_numbers_say_what_is_allowed() {
        for role in Role::ALL {
            assert_eq!(role_from_wire(pb::Role::from(role) as i32), Ok(role));
        }
        for raw in [0, 99] {
            let e = role_from_wire(raw).unwrap_err();
            assert!(e.0.contains(&format!("invalid role {raw}")), "{e:?}");
            assert!(
                e.0.contains(
                    "allowed ROLE_READER, ROLE_OPERATOR, ROLE_GATE, ROLE_BACKFILL, ROLE_ADMIN"
                ),
                "{e:?}"
            );
        }

        for kind in EventKind::ALL {
            let request = pb::RecordEventRequest {
                event: pb::EventKind::from(kind) as i32,
                rows_done: 5,
                rows_total_estimate: 10,
                ..Default::default()
            };
            assert_eq!(Event::try_from(&request).map(Event::kind), Ok(kind));
        }
        for raw in [0, 99] {
            let request = pb::RecordEventRequest {
                event: raw,
                ..Default::default()
            };
            let e = Event::try_from(&request).unwrap_err();
            assert!(e.0.contains(&format!("invalid event {raw}")), "{e:?}");
            assert!(e.0.contains("allowed EVENT_KIND_EXPAND_APPLIED (1)"));
        }
    }

    #[test]
    fn telemetry_survives_the_wire() {
        let mut c = TrafficCounts::default();
        c.old.reads = 3;
        c.new.latency.record(700);
        c.mismatches = 2;
        let wire = telemetry_to_wire("a.b", 60_000, &c, &[]);
        assert_eq!(TrafficCounts::from(&wire), c);
    }
}
