//! JSON bodies of the HTTP API: the extractor that turns malformed JSON into our error, the
//! conversions from the server's records to the typed bodies of `switchyard_proto::json`.

use crate::app::{BackfillProgress, Decision, Lifecycle, MAX_BODY_BYTES, Usage};
use crate::error::ApiError;
use crate::hub::Snapshot;
use crate::store::{AuditRecord, ClientInstance, TokenRecord};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use switchyard_domain::Migration;
use switchyard_domain::traffic::TrafficCounts;
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
            })
            .collect(),
        next_before_id,
    }
}

pub fn instance(i: ClientInstance, live: bool) -> json::Instance {
    json::Instance {
        service: i.service,
        instance_id: i.instance_id,
        applied_version: i.applied_version.0,
        first_seen_ms: i.first_seen_ms,
        last_seen_ms: i.last_seen_ms,
        live,
    }
}

pub fn token(t: TokenRecord) -> json::Token {
    json::Token {
        id: t.id,
        name: t.name,
        role: t.role,
        created_at_ms: t.created_at_ms,
        revoked_at_ms: t.revoked_at_ms,
    }
}

pub fn traffic(
    key: String,
    minutes: Vec<(i64, TrafficCounts)>,
    total: TrafficCounts,
) -> json::Traffic {
    json::Traffic {
        key,
        minutes: minutes
            .into_iter()
            .map(|(minute_ms, counts)| json::TrafficMinute {
                minute_ms,
                counts: (&counts).into(),
            })
            .collect(),
        total: (&total).into(),
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
                instances: instances.into_iter().map(|i| instance(i, true)).collect(),
                key,
            })
            .collect(),
    }
}
