//! JSON bodies of the HTTP API and the extractor that turns malformed JSON into our error.

use crate::error::ApiError;
use crate::hub::Snapshot;
use crate::store::{AuditRecord, ClientInstance, TokenRecord};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard_domain::traffic::{
    LATENCY_BOUNDS_US, LATENCY_BUCKETS, TrafficCounts, latency_bucket_label,
};
use switchyard_domain::{EventKind, Migration, Stage, Version};

/// `axum::Json`, but a rejection becomes an `ApiError` in our JSON error format.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(rejection_to_error(rejection)),
        }
    }
}

fn rejection_to_error(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge(format!(
            "request body is too large: allowed up to {} bytes",
            super::MAX_BODY_BYTES
        ));
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::invalid("send the body as JSON with `Content-Type: application/json`")
        }
        other => ApiError::invalid(format!("invalid JSON body: {}", other.body_text())),
    }
}

pub fn to_json(m: &Migration) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::to_value(MigrationJson::from(m)).unwrap_or_default())
}

/// A migration as the API returns it: the record, and the events that could change it now.
#[derive(Serialize)]
pub struct MigrationJson<'a> {
    #[serde(flatten)]
    migration: &'a Migration,
    applicable_events: Vec<&'static str>,
}

impl<'a> From<&'a Migration> for MigrationJson<'a> {
    fn from(migration: &'a Migration) -> Self {
        Self {
            migration,
            applicable_events: EventKind::ALL
                .into_iter()
                .filter(|e| e.applies_to(migration))
                .map(EventKind::as_str)
                .collect(),
        }
    }
}

#[derive(Serialize)]
pub struct SnapshotJson<'a> {
    pub version: Version,
    pub migrations: Vec<MigrationJson<'a>>,
}

impl<'a> From<&'a Snapshot> for SnapshotJson<'a> {
    fn from(s: &'a Snapshot) -> Self {
        Self {
            version: s.version,
            migrations: s
                .migrations
                .values()
                .map(|m| MigrationJson::from(&**m))
                .collect(),
        }
    }
}

#[derive(Serialize)]
pub struct Vocabulary {
    stages: Vec<&'static str>,
    events: Vec<EventJson>,
    latency_buckets: Vec<LatencyBucketJson>,
}

#[derive(Serialize)]
struct EventJson {
    name: &'static str,
    label: &'static str,
    permission: &'static str,
    milestone: bool,
}

#[derive(Serialize)]
struct LatencyBucketJson {
    /// `None` for the last bucket, which holds everything slower than the largest bound.
    upper_bound_us: Option<u64>,
    label: String,
}

impl Vocabulary {
    pub fn get() -> Self {
        Self {
            stages: Stage::ALL.into_iter().map(Stage::as_str).collect(),
            events: EventKind::ALL
                .into_iter()
                .map(|e| EventJson {
                    name: e.as_str(),
                    label: e.label(),
                    permission: e.permission().as_str(),
                    milestone: e.is_milestone(),
                })
                .collect(),
            latency_buckets: (0..LATENCY_BUCKETS)
                .map(|i| LatencyBucketJson {
                    upper_bound_us: LATENCY_BOUNDS_US.get(i).copied(),
                    label: latency_bucket_label(i),
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
pub struct AuditEntryJson {
    id: u64,
    migration_key: String,
    version: Version,
    actor: String,
    at_ms: i64,
    action: String,
    reason: String,
    before: serde_json::Value,
    after: serde_json::Value,
}

#[derive(Serialize)]
pub struct AuditPage {
    entries: Vec<AuditEntryJson>,
    next_before_id: Option<u64>,
}

impl AuditPage {
    pub fn new(entries: Vec<AuditRecord>, next_before_id: Option<u64>) -> Self {
        let parse = |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::Null);
        Self {
            entries: entries
                .into_iter()
                .map(|e| AuditEntryJson {
                    before: parse(&e.before_json),
                    after: parse(&e.after_json),
                    id: e.id,
                    migration_key: e.migration_key,
                    version: e.version,
                    actor: e.actor,
                    at_ms: e.at_ms,
                    action: e.action,
                    reason: e.reason,
                })
                .collect(),
            next_before_id,
        }
    }
}

#[derive(Serialize)]
pub struct InstanceJson {
    service: String,
    instance_id: String,
    applied_version: Version,
    first_seen_ms: i64,
    last_seen_ms: i64,
    live: bool,
}

impl From<(ClientInstance, bool)> for InstanceJson {
    fn from((i, live): (ClientInstance, bool)) -> Self {
        Self {
            service: i.service,
            instance_id: i.instance_id,
            applied_version: i.applied_version,
            first_seen_ms: i.first_seen_ms,
            last_seen_ms: i.last_seen_ms,
            live,
        }
    }
}

#[derive(Serialize)]
pub struct TokenJson {
    id: u64,
    name: String,
    role: switchyard_domain::Role,
    created_at_ms: i64,
    revoked_at_ms: Option<i64>,
}

impl From<TokenRecord> for TokenJson {
    fn from(t: TokenRecord) -> Self {
        Self {
            id: t.id,
            name: t.name,
            role: t.role,
            created_at_ms: t.created_at_ms,
            revoked_at_ms: t.revoked_at_ms,
        }
    }
}

/// One telemetry entry as clients send it: a migration, a minute, and the counts.
#[derive(serde::Deserialize, Serialize)]
pub struct TelemetryEntryJson {
    pub key: String,
    pub minute_ms: i64,
    #[serde(flatten)]
    pub counts: TrafficCounts,
}

#[derive(Serialize)]
pub struct TrafficMinuteJson {
    minute_ms: i64,
    #[serde(flatten)]
    counts: TrafficCounts,
}

#[derive(Serialize)]
pub struct TrafficJson {
    key: String,
    minutes: Vec<TrafficMinuteJson>,
    total: TrafficCounts,
}

impl TrafficJson {
    pub fn new(key: String, minutes: Vec<(i64, TrafficCounts)>, total: TrafficCounts) -> Self {
        Self {
            key,
            minutes: minutes
                .into_iter()
                .map(|(minute_ms, counts)| TrafficMinuteJson { minute_ms, counts })
                .collect(),
            total,
        }
    }
}
