//! JSON bodies of the HTTP API: the extractor that turns malformed JSON into our error, the
//! conversions from the server's records to the typed bodies of `switchyard_proto::json`.

use crate::app::{BackfillProgress, Decision, Lifecycle, MAX_BODY_BYTES, Usage};
use crate::error::ApiError;
use crate::hub::Snapshot;
use crate::store::{AuditRecord, ClientInstance, MismatchEntity, StoredApproval, TokenRecord};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use switchyard_domain::{Migration, Operation};
use switchyard_proto::json;

/// `axum::Json`, but a rejection becomes an `ApiError` in our JSON error format.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        // Read as a JSON value first (content type, size and syntax checked as axum does), so
        // that whole numbers spelled as floats reach the typed body as the integers they are.
        let axum::Json(mut value) = axum::Json::<serde_json::Value>::from_request(req, state)
            .await
            .map_err(rejection_to_error)?;
        whole_floats_as_integers(&mut value);
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
    }
}

/// JSON has one kind of number: `2.0` is the integer 2 to JSON Schema, and so to the OpenAPI
/// document, yet serde reads it as a float that no integer field takes (a Python client's
/// `json.dumps(2.0)` writes it so). Whole floats small enough to be exact become integers;
/// anything else is left for its field to accept or refuse.
fn whole_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    // Past 2^53 a float no longer spells one integer exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() <= EXACT
            {
                *n = (f as i64).into();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_floats_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_floats_as_integers),
        _ => {}
    }
}

fn rejection_to_error(rejection: JsonRejection) -> ApiError {
    // A body that stopped arriving surfaces as a failure to buffer it, our deadline's error
    // somewhere down the chain of sources.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
    while let Some(e) = source {
        if let Some(timed_out) = e.downcast_ref::<super::serve::BodyTimedOut>() {
            return ApiError::RequestTimeout(format!(
                "{timed_out}; send the whole body at once (allowed up to {MAX_BODY_BYTES} bytes)"
            ));
        }
        source = e.source();
    }
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge(format!(
            "request body is too large: allowed up to {MAX_BODY_BYTES} bytes"
        ));
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::invalid("send the body as JSON with `Content-Type: application/json`")
        }
        other => ApiError::invalid(format!("invalid JSON body: {}", other.body_text())),
    }
}

pub fn migration(m: &Migration) -> axum::Json<json::Migration> {
    axum::Json(json::Migration::from(m))
}

pub fn snapshot(s: &Snapshot) -> json::Snapshot {
    json::Snapshot {
        version: s.version.0,
        migrations: s
            .migrations
            .values()
            .map(|m| json::Migration::from(&**m))
            .collect(),
    }
}

pub fn error_body(e: &ApiError) -> json::ErrorBody {
    json::ErrorBody {
        code: e.code().to_owned(),
        current: e.current().map(json::Migration::from),
        message: e.public_message(),
        rule: e.rule().map(|r| r.number()),
    }
}

pub fn audit_page(entries: Vec<AuditRecord>, next_before_id: Option<u64>) -> json::AuditPage {
    // The log stores each state as the JSON it was written in; an unreadable one shows as null.
    let parse = |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::Null);
    json::AuditPage {
        entries: entries
            .into_iter()
            .map(|e| json::AuditEntry {
                before: parse(&e.before_json),
                after: parse(&e.after_json),
                id: e.id,
                migration_key: e.migration_key,
                version: e.version.0,
                actor: e.actor,
                at_ms: e.at_ms,
                action: e.action,
                reason: e.reason,
                approved_by: e.approved_by,
            })
            .collect(),
        next_before_id,
    }
}

pub fn instance(i: ClientInstance, live: bool, uses_migration: Option<bool>) -> json::Instance {
    json::Instance {
        service: i.service,
        instance_id: i.instance_id,
        applied_version: i.applied_version.0,
        first_seen_ms: i.first_seen_ms,
        last_seen_ms: i.last_seen_ms,
        live,
        uses_migration,
    }
}

pub fn approval(a: &StoredApproval, after: Option<&Migration>) -> json::Approval {
    let r = &a.request;
    let (action, stage, rollout_bp) = match &r.operation {
        Operation::SetRollout { stage, rollout } => (
            "set_rollout",
            stage.map(|s| s.as_str().to_owned()),
            Some(rollout.get()),
        ),
        op => (op.action(), None, None),
    };
    json::Approval {
        id: a.id,
        key: r.key.clone(),
        change: r.description.clone(),
        action: action.to_owned(),
        stage,
        rollout_bp,
        gated: r.gated.map_or("plan", |g| g.as_str()).to_owned(),
        expected_version: r.expected_version.0,
        reason: r.reason.clone(),
        requested_by: r.requested_by.clone(),
        requested_at_ms: r.requested_at_ms,
        origin: if r.by_plan { "plan" } else { "person" }.to_owned(),
        status: a.status.as_str().to_owned(),
        decided_by: a.decided_by.clone(),
        decided_at_ms: (a.decided_at_ms != 0).then_some(a.decided_at_ms),
        decision_reason: a.decision_reason.clone(),
        migration: after.map(json::Migration::from),
    }
}

pub fn webhook(w: &crate::store::StoredWebhook) -> json::Webhook {
    json::Webhook {
        id: w.id,
        url: w.url.clone(),
        migrations: w.migrations.texts(),
        events: w.events.clone(),
        format: w.format.clone(),
        created_by: w.created_by.clone(),
        created_at_ms: w.created_at_ms,
        removed_at_ms: w.removed_at_ms,
    }
}

pub fn delivery(d: &crate::store::Delivery) -> json::WebhookDelivery {
    json::WebhookDelivery {
        id: d.id as u64,
        event: d.event_type.clone(),
        key: d.migration_key.clone(),
        created_at_ms: d.created_at_ms,
        status: d.status.clone(),
        attempts: d.attempts.max(0) as u64,
        last_status: u16::try_from(d.last_status).unwrap_or(0),
        last_error: d.last_error.clone(),
        next_attempt_ms: d.next_attempt_ms,
        delivered_at_ms: (d.delivered_at_ms != 0).then_some(d.delivered_at_ms),
    }
}

pub fn token(t: TokenRecord) -> json::Token {
    json::Token {
        id: t.id,
        name: t.name,
        role: t.role,
        scope: t.scope.texts(),
        created_at_ms: t.created_at_ms,
        revoked_at_ms: t.revoked_at_ms,
    }
}

/// A template as the template endpoints answer it.
pub fn plan_template(t: &crate::store::StoredTemplate) -> json::PlanTemplate {
    json::PlanTemplate {
        name: t.name.clone(),
        stages: json::plan_stages(&t.plan),
        window: t.plan.window.as_ref().map(|w| w.describe()),
        description: t.description.clone(),
        updated_by: t.updated_by.clone(),
        updated_at_ms: t.updated_at_ms,
    }
}

/// A plan as the plan endpoints answer it.
pub fn plan_view(view: &crate::plans::PlanView, now_ms: i64) -> json::PlanView {
    let s = &view.stored;
    json::PlanView {
        key: s.key.clone(),
        stages: json::plan_stages(&s.plan),
        not_before_ms: s.plan.not_before_ms,
        window: s.plan.window.as_ref().map(|w| w.describe()),
        template: s.template.clone(),
        guardrails: json::GuardrailsBody::of(&s.guardrails),
        set_by: format!("{} (token {})", s.set_by_name, s.set_by_token),
        set_at_ms: s.set_at_ms,
        status: s.status.as_str().to_owned(),
        status_reason: s.status_reason.clone(),
        status_at_ms: s.status_at_ms,
        waiting: s.waiting.clone(),
        next: json::plan_next(&view.next, now_ms),
    }
}

/// `GET /v1/migrations/{key}/actions`: each change's verdict under the rules, now.
pub fn dry_run(
    m: &switchyard_domain::Migration,
    verdicts: &[(
        &'static str,
        Result<(), switchyard_domain::rules::DomainError>,
    )],
) -> serde_json::Value {
    use switchyard_domain::rules::DomainError;
    let actions: Vec<serde_json::Value> = verdicts
        .iter()
        .map(|(action, verdict)| {
            let (allowed, rule, message) = match verdict {
                Ok(()) => (true, None, None),
                Err(e) => (
                    false,
                    match e {
                        DomainError::Refused { rule, .. } => Some(rule.number()),
                        DomainError::Stale { .. } => Some(8),
                        _ => None,
                    },
                    Some(e.to_string()),
                ),
            };
            serde_json::json!({ "action": action, "allowed": allowed, "rule": rule, "message": message })
        })
        .collect();
    serde_json::json!({ "key": m.key.as_str(), "version": m.version.0, "actions": actions })
}

pub fn traffic(key: String, view: crate::app::TrafficView) -> json::Traffic {
    json::Traffic {
        key,
        services: view
            .services
            .iter()
            .map(|(service, counts, last_old)| json::ServiceTraffic {
                service: service.clone(),
                old: (&counts.old).into(),
                new: (&counts.new).into(),
                last_old_minute_ms: *last_old,
            })
            .collect(),
        minutes: view
            .minutes
            .into_iter()
            .map(|(minute_ms, counts)| json::TrafficMinute {
                minute_ms,
                counts: (&counts).into(),
            })
            .collect(),
        total: (&view.total).into(),
    }
}

pub fn usage(u: Usage) -> json::UsageReport {
    let m = &u.migration;
    json::UsageReport {
        key: m.key.to_string(),
        target_database: m.database.target.as_ref().map(ToString::to_string),
        old_shape: m.database.old_shape_strings(),
        since_ms: u.since_ms,
        window_from_ms: u.window_from_ms,
        covered_since_ms: u.covered_since.as_ref().map(|c| c.0),
        coverage_reason: u.covered_since.map(|c| c.1),
        last_pass_ms: u.last_pass_ms,
        last_pass_duration_ms: u.last_pass_duration_ms,
        statements_on_target: u.statements_on_target,
        failing: u
            .failing
            .map(|(reason, since_ms)| json::UsageFailure { reason, since_ms }),
        check: json::GateCheck {
            id: u.check.id.as_str().to_owned(),
            passed: u.check.passed,
            evidence: u.check.evidence,
            remedy: u.check.remedy,
        },
        statements: u.statements.iter().map(Into::into).collect(),
    }
}

pub fn backfill(p: BackfillProgress) -> json::BackfillProgress {
    json::BackfillProgress {
        key: p.key,
        status: p.status.into(),
        paused: p.paused,
        cursor: p.cursor,
        rows_done: p.rows_done,
        rows_total_estimate: p.rows_total_estimate,
        rate_rows_per_second: p.rate_rows_per_second,
        eta_seconds: p.eta_seconds,
        runner: p.runner,
        updated_at_ms: p.updated_at_ms,
        throttle: json::BackfillThrottle {
            throttled: !p.throttle_reason.is_empty(),
            reason: p.throttle_reason,
            since_ms: p.throttled_since_ms,
            throttled_seconds: p.throttled_ms as f64 / 1000.0,
        },
        settings: p.settings,
        settings_changed: p
            .settings_changed
            .map(|(by, at_ms, reason)| json::SettingsChanged { by, at_ms, reason }),
    }
}

pub fn decision(d: Decision) -> json::Decision {
    json::Decision::new(d.key, d.bucket, d.plan, d.version)
}

pub fn lifecycle(view: Lifecycle, complete_for_days: u32) -> json::Lifecycle {
    json::Lifecycle {
        complete_for_days,
        complete_not_contracted: view
            .complete_not_contracted
            .into_iter()
            .map(|(key, complete_since_ms)| json::CompleteNotContracted {
                complete_since_ms,
                key,
            })
            .collect(),
        contracted_in_use: view
            .contracted_in_use
            .into_iter()
            .map(|(key, instances)| json::ContractedInUse {
                instances: instances
                    .into_iter()
                    .map(|i| instance(i, true, Some(true)))
                    .collect(),
                key,
            })
            .collect(),
    }
}

pub fn mismatch(m: MismatchEntity) -> json::MismatchEntity {
    json::MismatchEntity {
        entity_key: m.entity_key,
        description: m.description,
        seen: m.seen.max(0) as u64,
        first_seen_ms: m.first_seen_ms,
        last_seen_ms: m.last_seen_ms,
        service: m.service,
        instance_id: m.instance_id,
    }
}
