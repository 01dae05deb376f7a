//! The HTTP/JSON API (axum), under `/v1/`, plus health, readiness, metrics, the OpenAPI
//! document and the web dashboard (`/`, `/assets/`). The only module that knows HTTP.

mod dashboard;
pub(crate) mod json;
mod layers;
mod ofrep;
pub mod serve;

use crate::app::{App, CreateMigrationInput, DEFAULT_COMPLETE_FOR_DAYS, MAX_BODY_BYTES};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::hub::{TokenRevoked, WatchItem};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header::{self, ETAG, IF_NONE_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, extract::DefaultBodyLimit};
use futures::StreamExt;
use json::ApiJson;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use switchyard_domain::{BasisPoints, Event, EventKind, Operation, Role, Stage, Version};
use switchyard_proto::json as wire;
use tower::Layer;

pub fn router(app: Arc<App>) -> Api {
    // Every `/v1/` route spelled out in full rather than nested: a nested router rewrites each
    // request's URI to strip its prefix, an allocation and a parse on every call.
    let routes = Router::new()
        .route(
            "/v1/migrations",
            post(create_migration).get(list_migrations),
        )
        .route("/v1/migrations/{key}", get(get_migration))
        .route("/v1/migrations/{key}/rollout", post(set_rollout))
        .route("/v1/migrations/{key}/advance", post(advance))
        .route("/v1/migrations/{key}/retreat", post(retreat))
        .route("/v1/migrations/{key}/events", post(record_event))
        .route("/v1/migrations/{key}/audit", get(audit))
        .route("/v1/migrations/{key}/decide", get(decide))
        .route("/v1/snapshot", get(snapshot))
        .route("/v1/watch", get(watch))
        .route("/v1/clients/heartbeat", post(heartbeat))
        .route("/v1/clients", get(instances))
        .route("/v1/clients/telemetry", post(report_telemetry))
        .route("/v1/migrations/{key}/instances", get(migration_instances))
        .route("/v1/migrations/{key}/traffic", get(traffic))
        .route("/v1/migrations/{key}/actions", get(dry_run))
        .route("/v1/plans", get(list_plans))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/webhooks", post(add_webhook).get(list_webhooks))
        .route("/v1/webhooks/{id}", axum::routing::delete(remove_webhook))
        .route("/v1/webhooks/{id}/test", post(test_webhook))
        .route("/v1/webhooks/{id}/deliveries", get(webhook_deliveries))
        .route("/v1/approvals/{id}", get(get_approval))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/reject", post(reject))
        .route("/v1/plan-templates", get(list_templates))
        .route(
            "/v1/plan-templates/{name}",
            axum::routing::put(set_template).delete(remove_template),
        )
        .route("/v1/migrations/{key}/plan", get(get_plan).put(set_plan))
        .route("/v1/migrations/{key}/plan/pause", post(pause_plan))
        .route("/v1/migrations/{key}/plan/resume", post(resume_plan))
        .route("/v1/migrations/{key}/gate", get(gate))
        .route("/v1/migrations/{key}/usage", get(usage))
        .route("/v1/migrations/{key}/mismatches", get(mismatches))
        .route("/v1/migrations/{key}/backfill", get(backfill))
        .route(
            "/v1/migrations/{key}/backfill/checkpoint",
            axum::routing::put(checkpoint_backfill),
        )
        .route(
            "/v1/migrations/{key}/backfill/settings",
            axum::routing::put(set_backfill_settings),
        )
        .route("/v1/lifecycle", get(lifecycle))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}/revoke", post(revoke_token))
        .route("/v1/whoami", get(whoami))
        .route("/v1/vocabulary", get(vocabulary))
        .route("/", get(dashboard::index))
        .route("/assets/{*path}", get(dashboard::asset))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/openapi.json", get(openapi_document))
        .route("/ofrep/v1/evaluate/flags", post(ofrep::evaluate_flags))
        .route("/ofrep/v1/evaluate/flags/{key}", post(ofrep::evaluate_flag))
        .fallback(|| async { ApiError::NotFound(NO_SUCH_ROUTE.to_owned()) })
        // One layer for both: each layer a router is given wraps every route in another boxed
        // service, cloned and called (a boxed future) per request.
        .layer(
            tower::ServiceBuilder::new()
                .layer(layers::TelemetryLayer)
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .with_state(app);
    // Around the whole router rather than in it: a layer added to a router wraps each route's
    // handlers, inside the code that adds a 405's `Allow` header, and the message names the
    // allowed methods from that header. Wrapped directly rather than as an outer router's
    // fallback, which would route every request twice.
    layers::JsonErrorsLayer.layer(routes)
}

/// The HTTP API as one service: the router inside the layer that gives every error answer its
/// JSON body.
pub type Api = layers::JsonErrors<Router>;

pub(super) const NO_SUCH_ROUTE: &str = "no such route; the API is described at /openapi.json";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists(_) | ApiError::Stale { .. } => StatusCode::CONFLICT,
            ApiError::Refused { .. }
            | ApiError::NotApplicable { .. }
            | ApiError::ApprovalRequired { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut response = (status, axum::Json(json::error_body(&self))).into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
            }
            // The rest of the body may still be on its way: the connection cannot be reused.
            StatusCode::REQUEST_TIMEOUT => {
                headers.insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
            }
            _ => {}
        }
        response
    }
}

/// The authenticated caller of a `/v1/` route.
struct Caller(Principal);

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        Ok(Caller(app.auth.authenticate(header).await?))
    }
}

/// Who the presented token is: the dashboard signs in with it and hides what the role may not do.
async fn whoami(Caller(who): Caller) -> axum::Json<wire::Whoami> {
    axum::Json(wire::Whoami {
        name: who.name,
        permissions: who
            .role
            .permissions()
            .map(|p| p.as_str().to_owned())
            .collect(),
        role: who.role,
        scope: who.scope.texts(),
        token_id: who.token_id,
    })
}

/// The names the API speaks, from their one definition in the domain, so that clients such as
/// the dashboard keep no copy: stages in order, events (label, permission, whether a milestone)
/// and the latency histogram's buckets with their labels.
async fn vocabulary(Caller(_): Caller) -> axum::Json<switchyard_proto::json::Vocabulary> {
    axum::Json(switchyard_proto::json::Vocabulary::of_domain())
}

/// The document states this server's own bounds (soak range, traffic retention).
async fn openapi_document(State(app): State<Arc<App>>) -> axum::Json<serde_json::Value> {
    axum::Json(crate::openapi::document(&app))
}

async fn readyz(State(app): State<Arc<App>>) -> Result<&'static str, ApiError> {
    app.store
        .ping()
        .await
        .map_err(|_| ApiError::Unavailable("database unreachable".to_owned()))?;
    let stale = app.hub.since_last_refresh();
    if stale > app.hub.staleness_bound() {
        return Err(ApiError::Unavailable(format!(
            "this replica has not read the database's changes for {} s",
            stale.as_secs()
        )));
    }
    Ok("ready")
}

async fn create_migration(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    ApiJson(body): ApiJson<wire::CreateMigration>,
) -> Result<Response, ApiError> {
    let created = app
        .create_migration(
            &who,
            CreateMigrationInput {
                key: body.key,
                description: body.description,
                owner: body.owner,
                entity_kind: body.entity_kind,
                soak_seconds: body.soak_seconds,
                expected_services: body.expected_services,
                has_backfill: body.has_backfill,
                shadow_sample_bp: body.shadow_sample_bp,
                reason: body.reason,
                target_database: body.target_database,
                old_shape: body.old_shape,
                retire_probation_seconds: body.retire_probation_seconds,
            },
        )
        .await?;
    let location = format!("/v1/migrations/{}", created.key);
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        json::migration(&created),
    )
        .into_response())
}

async fn list_migrations(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
) -> Result<Response, ApiError> {
    let snapshot = app.snapshot(&who)?;
    Ok(axum::Json(json::snapshot(&snapshot)).into_response())
}

async fn get_migration(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
) -> Result<axum::Json<wire::Migration>, ApiError> {
    Ok(json::migration(&*app.get_migration(&who, &key)?))
}

async fn set_rollout(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<wire::Rollout>,
) -> Result<Response, ApiError> {
    let op = Operation::SetRollout {
        stage: body.stage.as_deref().map(Stage::parse).transpose()?,
        rollout: BasisPoints::new(body.rollout_bp)?,
    };
    let asked = Asked::of(body.request_approval, body.bypass_approval)?;
    change(
        &app,
        &who,
        &key,
        body.expected_version,
        &body.reason,
        op,
        asked,
    )
    .await
}

async fn advance(
    state: State<Arc<App>>,
    caller: Caller,
    key: Path<String>,
    body: ApiJson<wire::Step>,
) -> Result<Response, ApiError> {
    step(state, caller, key, body, Operation::Advance).await
}

async fn retreat(
    state: State<Arc<App>>,
    caller: Caller,
    key: Path<String>,
    body: ApiJson<wire::Step>,
) -> Result<Response, ApiError> {
    step(state, caller, key, body, Operation::Retreat).await
}

async fn step(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<wire::Step>,
    op: Operation,
) -> Result<Response, ApiError> {
    let asked = Asked::of(body.request_approval, body.bypass_approval)?;
    change(
        &app,
        &who,
        &key,
        body.expected_version,
        &body.reason,
        op,
        asked,
    )
    .await
}

/// What a change's body asks of the approval policy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// Apply it (refused if a second operator must approve it).
    Apply,
    /// File it for a second operator's approval.
    Request,
    /// Apply it without the approval (admins).
    Bypass,
}

impl Asked {
    fn of(request: bool, bypass: bool) -> Result<Asked, ApiError> {
        match (request, bypass) {
            (false, false) => Ok(Asked::Apply),
            (true, false) => Ok(Asked::Request),
            (false, true) => Ok(Asked::Bypass),
            (true, true) => Err(ApiError::invalid(
                "request_approval and bypass_approval exclude each other: ask a second operator \
                 or bypass (admins), not both",
            )),
        }
    }
}

/// A change: applied (200 with the migration), or filed for approval (202 with the request
/// and its Location).
async fn change(
    app: &App,
    who: &Principal,
    key: &str,
    expected: u64,
    reason: &str,
    op: Operation,
    asked: Asked,
) -> Result<Response, ApiError> {
    let expected = Version(expected);
    let done = match asked {
        Asked::Apply => app.mutate(who, key, expected, reason, op).await?,
        Asked::Bypass => {
            app.mutate_bypassing_approval(who, key, expected, reason, op)
                .await?
        }
        Asked::Request => {
            let filed = app.request_approval(who, key, expected, reason, op).await?;
            let location = format!("/v1/approvals/{}", filed.id);
            return Ok((
                StatusCode::ACCEPTED,
                [(header::LOCATION, location)],
                axum::Json(json::approval(&filed, None)),
            )
                .into_response());
        }
    };
    Ok(json::migration(&done).into_response())
}

/// Parses an event name as the API and CLI spell it (`expand_applied` or `expand-applied`).
fn parse_event(
    name: &str,
    rows_done: Option<u64>,
    rows_total_estimate: Option<u64>,
) -> Result<Event, ApiError> {
    let rows = rows_done.map(|done| (done, rows_total_estimate.unwrap_or(0)));
    name.parse::<EventKind>()
        .and_then(|kind| kind.with_rows(rows))
        .map_err(|e| ApiError::invalid(e.0))
}

async fn record_event(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<wire::RecordEvent>,
) -> Result<Response, ApiError> {
    let event = parse_event(&body.event, body.rows_done, body.rows_total_estimate)?;
    let asked = Asked::of(body.request_approval, body.bypass_approval)?;
    change(
        &app,
        &who,
        &key,
        body.expected_version,
        &body.reason,
        Operation::Record(event),
        asked,
    )
    .await
}

fn webhook_id(raw: &str) -> Result<u64, ApiError> {
    path_id("webhook", raw)
}

async fn add_webhook(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    ApiJson(body): ApiJson<wire::CreateWebhook>,
) -> Result<Response, ApiError> {
    let (hook, secret) = app
        .add_webhook(
            &who,
            crate::webhooks::NewWebhook {
                url: body.url,
                migrations: body.migrations,
                events: body.events,
                format: body.format,
            },
        )
        .await?;
    let location = format!("/v1/webhooks/{}/deliveries", hook.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(wire::WebhookCreated {
            webhook: json::webhook(&hook),
            secret,
        }),
    )
        .into_response())
}

async fn list_webhooks(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
) -> Result<axum::Json<wire::Webhooks>, ApiError> {
    let hooks = app.webhooks(&who).await?;
    Ok(axum::Json(wire::Webhooks {
        webhooks: hooks.iter().map(json::webhook).collect(),
    }))
}

async fn remove_webhook(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<wire::Webhook>, ApiError> {
    let removed = app.remove_webhook(&who, webhook_id(&id)?).await?;
    Ok(axum::Json(json::webhook(&removed)))
}

async fn test_webhook(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<wire::WebhookTest>, ApiError> {
    let delivery = app.test_webhook(&who, webhook_id(&id)?).await?;
    Ok(axum::Json(wire::WebhookTest { delivery }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveriesQuery {
    limit: Option<u32>,
}

async fn webhook_deliveries(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<axum::Json<wire::WebhookDeliveries>, ApiError> {
    let (hook, deliveries) = app
        .webhook_deliveries(&who, webhook_id(&id)?, q.limit.unwrap_or(50))
        .await?;
    Ok(axum::Json(wire::WebhookDeliveries {
        webhook: json::webhook(&hook),
        deliveries: deliveries.iter().map(json::delivery).collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalsQuery {
    /// Every request, not only the pending ones.
    #[serde(default)]
    all: bool,
    migration: Option<String>,
}

async fn list_approvals(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Query(q): Query<ApprovalsQuery>,
) -> Result<axum::Json<wire::Approvals>, ApiError> {
    let found = app.approvals(&who, q.all, q.migration.as_deref()).await?;
    Ok(axum::Json(wire::Approvals {
        approvals: found.iter().map(|a| json::approval(a, None)).collect(),
    }))
}

/// A numeric id from the path (`what`: "approval", "webhook", "token"), or a clear 400.
fn path_id(what: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::invalid(format!(
            "invalid {what} id {:?}: allowed a number",
            raw.chars().take(40).collect::<String>()
        ))
    })
}

fn approval_id(raw: &str) -> Result<u64, ApiError> {
    path_id("approval", raw)
}

async fn get_approval(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<wire::Approval>, ApiError> {
    let found = app.approval(&who, approval_id(&id)?).await?;
    Ok(axum::Json(json::approval(&found, None)))
}

async fn approve(
    state: State<Arc<App>>,
    caller: Caller,
    id: Path<String>,
    body: ApiJson<wire::ApprovalDecision>,
) -> Result<axum::Json<wire::Approval>, ApiError> {
    decide_approval(state, caller, id, body, true).await
}

async fn reject(
    state: State<Arc<App>>,
    caller: Caller,
    id: Path<String>,
    body: ApiJson<wire::ApprovalDecision>,
) -> Result<axum::Json<wire::Approval>, ApiError> {
    decide_approval(state, caller, id, body, false).await
}

async fn decide_approval(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<wire::ApprovalDecision>,
    approve: bool,
) -> Result<axum::Json<wire::Approval>, ApiError> {
    let (decided, after) = app
        .decide_approval(&who, approval_id(&id)?, approve, &body.reason)
        .await?;
    Ok(axum::Json(json::approval(&decided, after.as_ref())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<u32>,
    before_id: Option<u64>,
}

async fn audit(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<wire::AuditPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
    let (entries, next) = app.audit(&who, &key, q.limit, q.before_id).await?;
    Ok(axum::Json(json::audit_page(entries, next)))
}

/// Server-side evaluation. The busiest route for apps that cannot link the client, so it skips
/// the generic extractors' allocations: the query is read in place, and the answer is written
/// by hand (`Decision::to_json_bytes`, the same bytes serde writes).
async fn decide(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let entity = entity_key(uri.query())?;
    // An empty key means "no entity", as in the proto, so both protocols answer alike.
    let entity = entity.as_deref().filter(|k| !k.is_empty());
    let body = json::decision(app.decide(&who, &key, entity)?).to_json_bytes();
    Ok(([(header::CONTENT_TYPE, JSON_CONTENT)], body).into_response())
}

const JSON_CONTENT: header::HeaderValue = header::HeaderValue::from_static("application/json");

/// Decide's query: `entity_key` at most once, nothing else.
fn entity_key(query: Option<&str>) -> Result<Option<std::borrow::Cow<'_, str>>, ApiError> {
    let mut entity = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if name != "entity_key" {
            return Err(ApiError::invalid(format!(
                "invalid query: unknown parameter `{name}`; allowed: entity_key"
            )));
        }
        if entity.replace(value).is_some() {
            return Err(ApiError::invalid(
                "invalid query: entity_key given more than once; allowed once",
            ));
        }
    }
    Ok(entity)
}

async fn snapshot(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // A poller that holds a newer version than this replica (it polled another one) gets
    // that version or later, never an older state.
    let held = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .filter_map(|t| t.trim().trim_start_matches("W/").strip_prefix("\"v"))
                .filter_map(|t| t.strip_suffix('"')?.parse::<u64>().ok())
                .max()
        });
    let snapshot = app
        .snapshot_at_least(&who, "If-None-Match version", Version(held.unwrap_or(0)))
        .await?;
    let etag = format!("\"v{}\"", snapshot.version);
    if none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag)]).into_response());
    }
    Ok(([(ETAG, etag)], axum::Json(json::snapshot(&snapshot))).into_response())
}

/// `/metrics`: the registry, with the per-migration gauges set from the current state first.
async fn render_metrics(State(app): State<Arc<App>>) -> String {
    // The recorder first: gauges set before it is installed would go nowhere.
    let handle = crate::metrics::handle();
    match app.readings().await {
        Ok((readings, now)) => crate::metrics::record_migrations(
            readings.iter().map(|(m, r)| (&**m, Some(r.clone()))),
            now,
        ),
        // A database that does not answer must not take the metrics with it (that is when
        // they are needed): the state held in memory is still reported, the store's readings
        // keep their last values, and the failure is counted.
        Err(e) => {
            tracing::warn!(error = %e, "reading per-migration metrics from the store failed");
            metrics::counter!("switchyard_metrics_reading_failures_total").increment(1);
            let snapshot = app.hub.snapshot();
            crate::metrics::record_migrations(
                snapshot.migrations.values().map(|m| (&**m, None)),
                app.now(),
            );
        }
    }
    crate::metrics::record_process();
    handle.render()
}

/// Whether the request's `If-None-Match` matches `etag`, by the weak comparison If-None-Match
/// uses (RFC 9110 13.1.2): `W/"v3"` matches `"v3"`.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchQuery {
    since: Option<u64>,
}

/// Server-sent events: `snapshot` first, then `change` per migration change; each event's id is
/// its version, so a reconnecting EventSource resumes with `Last-Event-ID`. A revoked token's
/// stream ends with an `error` event carrying the error body, so the client knows not to
/// reconnect with it.
///
/// Each change's event (and an unscoped snapshot's) is written once, by the first watcher that
/// sends it, and the same bytes go to every other connection (`hub::Encodings`).
async fn watch(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    headers: HeaderMap,
    query: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
    app.snapshot(&who)?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let since = Version(q.since.or(last_event_id).unwrap_or(0));
    app.check_since("since", since).await?;
    let stream = app.hub.watch(since, who.token_id)?;
    // The connection now carries a stream: it counts against the watch cap, not the
    // connection cap, for as long as the stream lives.
    let mark = serve::connection().map(|c| c.mark_watch());
    let frames = stream.filter_map(move |item| {
        let _carrying = &mark;
        let frame = match item {
            // A scoped token's stream carries only what its scope covers.
            Ok(item) => app.visible_item(&who, item).map(|item| sse_event(&item)),
            // The last event: says why the stream ends, in an error body's shape.
            Err(TokenRevoked) => Some(sse_frame("error", None, &json::error_body(&who.revoked()))),
        };
        std::future::ready(frame)
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::new(SseBody::new(Box::pin(frames))),
    )
        .into_response())
}

/// An SSE response body: the watch's frames as they come, and a comment when a whole quiet
/// interval passed with nothing sent, so proxies do not close an idle stream.
struct SseBody {
    frames: std::pin::Pin<Box<dyn futures::Stream<Item = bytes::Bytes> + Send>>,
    quiet: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// Whether an event went out since the quiet timer was last set. Noted rather than timed:
    /// resetting the timer on every event read the clock once per watcher per change.
    sent: bool,
}

impl SseBody {
    fn new(frames: std::pin::Pin<Box<dyn futures::Stream<Item = bytes::Bytes> + Send>>) -> Self {
        Self {
            frames,
            quiet: Box::pin(tokio::time::sleep(SSE_KEEP_ALIVE)),
            sent: false,
        }
    }
}

impl http_body::Body for SseBody {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Infallible>>> {
        use std::task::{Poll, ready};
        let this = &mut *self;
        match this.frames.as_mut().poll_next(cx) {
            Poll::Ready(Some(frame)) => {
                this.sent = true;
                return Poll::Ready(Some(Ok(http_body::Frame::data(frame))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        loop {
            ready!(this.quiet.as_mut().poll(cx));
            this.quiet
                .as_mut()
                .reset(tokio::time::Instant::now() + SSE_KEEP_ALIVE);
            if !std::mem::take(&mut this.sent) {
                return Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(
                    b":\n\n",
                )))));
            }
            // Something went out during the interval: wait a whole new one (polled again to
            // register for it).
        }
    }
}

/// A watch stream gets a keep-alive comment after a whole interval this long in which nothing
/// was sent: it is silent for at most twice this.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A watch item's SSE event, made by the first watcher that sends it.
fn sse_event(item: &WatchItem) -> bytes::Bytes {
    match item {
        WatchItem::Snapshot(s) => s
            .encoded
            .sse(|| sse_frame("snapshot", Some(s.version.0), &json::snapshot(s))),
        WatchItem::Change(p) => p.encoded.sse(|| {
            sse_frame(
                "change",
                Some(p.migration.version.0),
                &wire::Migration::from(&*p.migration),
            )
        }),
    }
}

/// `event: NAME`, `id: ID`, `data: JSON` and the blank line that ends an event. Compact JSON has
/// no line break (serde escapes those inside strings), so the data is one line.
fn sse_frame(event: &str, id: Option<u64>, data: &impl serde::Serialize) -> bytes::Bytes {
    let mut frame = format!("event: {event}\n");
    if let Some(id) = id {
        frame.push_str(&format!("id: {id}\n"));
    }
    match serde_json::to_string(data) {
        Ok(json) => frame.push_str(&format!("data: {json}\n\n")),
        Err(e) => frame = format!("event: error\ndata: {e}\n\n"),
    }
    frame.into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    service: String,
    instance_id: String,
    applied_version: u64,
    #[serde(default)]
    migrations: Vec<String>,
    /// A clean shutdown: forget the instance now.
    #[serde(default)]
    leaving: bool,
}

async fn heartbeat(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> Result<axum::Json<wire::HeartbeatAnswer>, ApiError> {
    let current = app
        .heartbeat(
            &who,
            &body.service,
            &body.instance_id,
            Version(body.applied_version),
            &body.migrations,
            body.leaving,
        )
        .await?;
    Ok(axum::Json(wire::HeartbeatAnswer {
        snapshot_version: current.0,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstancesQuery {
    migration: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

async fn instances(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    query: Result<Query<InstancesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<wire::Instances>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
    let page = app
        .instances(&who, q.migration.as_deref(), q.limit, q.after.as_deref())
        .await?;
    Ok(axum::Json(wire::Instances {
        instances: page
            .instances
            .into_iter()
            .map(|v| json::instance(v.instance, v.live, v.uses_migration))
            .collect(),
        next_after: page.next,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<u32>,
    after: Option<String>,
}

async fn migration_instances(
    state: State<Arc<App>>,
    caller: Caller,
    Path(key): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<wire::Instances>, ApiError> {
    let Query(page) = query.map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
    let query = InstancesQuery {
        migration: Some(key),
        limit: page.limit,
        after: page.after,
    };
    instances(state, caller, Ok(Query(query))).await
}

#[derive(Deserialize)]
struct TelemetryBody {
    service: String,
    instance_id: String,
    entries: Vec<wire::TelemetryEntry>,
}

async fn report_telemetry(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    ApiJson(body): ApiJson<TelemetryBody>,
) -> Result<StatusCode, ApiError> {
    let mut samples = Vec::new();
    let entries = body
        .entries
        .into_iter()
        .map(|e| {
            if !e.mismatch_samples.is_empty() {
                let taken = e.mismatch_samples.into_iter().map(Into::into).collect();
                samples.push((e.key.clone(), taken));
            }
            (e.key, e.minute_ms, e.counts.into())
        })
        .collect();
    app.report_telemetry(&who, &body.service, &body.instance_id, entries, samples)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrafficQuery {
    minutes: Option<u32>,
}

async fn traffic(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
    query: Result<Query<TrafficQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<wire::Traffic>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
    let view = app.traffic(&who, &key, q.minutes).await?;
    Ok(axum::Json(json::traffic(key, view)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    since_ms: Option<i64>,
}

async fn usage(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<wire::UsageReport>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
    Ok(axum::Json(json::usage(
        app.usage(&who, &key, q.since_ms).await?,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MismatchesQuery {
    limit: Option<u32>,
}

async fn mismatches(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
    query: Result<Query<MismatchesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<wire::Mismatches>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
    let (migration, rows, entities) = app.mismatches(&who, &key, q.limit).await?;
    Ok(axum::Json(wire::Mismatches {
        key: migration.key.to_string(),
        entities,
        samples: rows.into_iter().map(json::mismatch).collect(),
    }))
}

async fn create_token(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    ApiJson(body): ApiJson<wire::CreateToken>,
) -> Result<(StatusCode, axum::Json<wire::CreatedToken>), ApiError> {
    let role = Role::parse(&body.role).map_err(ApiError::invalid)?;
    let (record, secret) = app
        .create_token(&who, &body.name, role, &body.scope)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(wire::CreatedToken {
            info: json::token(record),
            token: secret,
        }),
    ))
}

async fn list_tokens(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
) -> Result<axum::Json<wire::Tokens>, ApiError> {
    let tokens = app
        .list_tokens(&who)
        .await?
        .into_iter()
        .map(json::token)
        .collect();
    Ok(axum::Json(wire::Tokens { tokens }))
}

async fn revoke_token(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<wire::Token>, ApiError> {
    let id = path_id("token", &id)?;
    Ok(axum::Json(json::token(app.revoke_token(&who, id).await?)))
}

async fn list_templates(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
) -> Result<axum::Json<wire::PlanTemplates>, ApiError> {
    let templates = app.templates(&who).await?;
    Ok(axum::Json(wire::PlanTemplates {
        templates: templates.iter().map(json::plan_template).collect(),
    }))
}

async fn set_template(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<wire::PlanTemplateBody>,
) -> Result<axum::Json<wire::PlanTemplate>, ApiError> {
    let t = app.set_template(&who, &name, &body).await?;
    Ok(axum::Json(json::plan_template(&t)))
}

async fn remove_template(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<wire::PlanTemplate>, ApiError> {
    let t = app.remove_template(&who, &name).await?;
    Ok(axum::Json(json::plan_template(&t)))
}

async fn list_plans(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
) -> Result<axum::Json<wire::Plans>, ApiError> {
    let now = app.now();
    let plans = app.plans(&who).await?;
    Ok(axum::Json(wire::Plans {
        plans: plans.iter().map(|v| json::plan_view(v, now)).collect(),
    }))
}

async fn get_plan(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
) -> Result<axum::Json<wire::PlanView>, ApiError> {
    let view = app.plan(&who, &key).await?;
    Ok(axum::Json(json::plan_view(&view, app.now())))
}

async fn set_plan(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<wire::PlanBody>,
) -> Result<axum::Json<wire::PlanView>, ApiError> {
    let view = app.set_plan(&who, &key, &body).await?;
    Ok(axum::Json(json::plan_view(&view, app.now())))
}

async fn pause_plan(
    state: State<Arc<App>>,
    caller: Caller,
    key: Path<String>,
    body: ApiJson<wire::PlanChange>,
) -> Result<axum::Json<wire::PlanView>, ApiError> {
    plan_status(state, caller, key, body, true).await
}

async fn resume_plan(
    state: State<Arc<App>>,
    caller: Caller,
    key: Path<String>,
    body: ApiJson<wire::PlanChange>,
) -> Result<axum::Json<wire::PlanView>, ApiError> {
    plan_status(state, caller, key, body, false).await
}

async fn plan_status(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<wire::PlanChange>,
    pause: bool,
) -> Result<axum::Json<wire::PlanView>, ApiError> {
    let view = app.pause_plan(&who, &key, pause, &body.reason).await?;
    Ok(axum::Json(json::plan_view(&view, app.now())))
}

async fn dry_run(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let (m, verdicts) = app.dry_run(&who, &key).await?;
    Ok(axum::Json(json::dry_run(&m, &verdicts)))
}

async fn gate(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
) -> Result<axum::Json<wire::GateReport>, ApiError> {
    Ok(axum::Json(wire::GateReport::from(
        &app.gate(&who, &key).await?,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleQuery {
    complete_for_days: Option<u32>,
}

async fn lifecycle(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    query: Result<Query<LifecycleQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<wire::Lifecycle>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("invalid query: {e}")))?;
    let days = q.complete_for_days.unwrap_or(DEFAULT_COMPLETE_FOR_DAYS);
    let view = app
        .lifecycle(&who, Duration::from_secs(u64::from(days) * 86_400))
        .await?;
    Ok(axum::Json(json::lifecycle(view, days)))
}

async fn backfill(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
) -> Result<axum::Json<wire::BackfillProgress>, ApiError> {
    Ok(axum::Json(json::backfill(app.backfill(&who, &key).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointBody {
    #[serde(default)]
    cursor: String,
    rows_done: u64,
    #[serde(default)]
    rows_total_estimate: u64,
    #[serde(default)]
    runner: String,
    /// The run this runner belongs to (`backfill.started_version`); a stale run is refused.
    started_version: Option<u64>,
    /// Whether the runner holds between batches for the database's health.
    #[serde(default)]
    throttle: Option<ThrottleBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThrottleBody {
    /// Why it holds; empty: it does not.
    #[serde(default)]
    reason: String,
    /// How long the current hold has lasted.
    #[serde(default)]
    held_ms: u64,
    /// Time held over the whole backfill.
    #[serde(default)]
    throttled_ms: u64,
}

async fn set_backfill_settings(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<wire::BackfillSettingsChange>,
) -> Result<axum::Json<wire::BackfillProgress>, ApiError> {
    Ok(axum::Json(json::backfill(
        app.set_backfill_settings(&who, &key, &body).await?,
    )))
}

async fn checkpoint_backfill(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<CheckpointBody>,
) -> Result<axum::Json<wire::BackfillProgress>, ApiError> {
    Ok(axum::Json(json::backfill(
        app.checkpoint_backfill(
            &who,
            &key,
            crate::app::RunnerPosition {
                cursor: &body.cursor,
                rows_done: body.rows_done,
                rows_total_estimate: body.rows_total_estimate,
                runner: &body.runner,
                started_version: body.started_version.map(Version),
                throttle: body.throttle.as_ref().map(|t| crate::app::RunnerThrottle {
                    reason: &t.reason,
                    held_ms: t.held_ms,
                    throttled_ms: t.throttled_ms,
                }),
            },
        )
        .await?,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use std::time::Duration;

    async fn next_frame(body: &mut SseBody) -> bytes::Bytes {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx))
            .await
            .expect("the stream goes on")
            .expect("infallible");
        frame.into_data().expect("a data frame")
    }

    /// A stream is never silent for more than two intervals, and gets a comment only after a
    /// whole interval in which nothing went out.
    #[tokio::test(start_paused = true)]
    async fn sse_keep_alive_follows_a_whole_quiet_interval() {
        let start = tokio::time::Instant::now();
        let (events, frames) = futures::channel::mpsc::unbounded::<bytes::Bytes>();
        let mut body = SseBody::new(Box::pin(frames));
        tokio::time::advance(Duration::from_secs(10)).await;
        events
            .unbounded_send(bytes::Bytes::from_static(b"event: change\n\n"))
            .unwrap();
        assert_eq!(&next_frame(&mut body).await[..], b"event: change\n\n");
        // The first interval had an event: no comment at 15 s, but at 30 s.
        assert_eq!(&next_frame(&mut body).await[..], b":\n\n");
        assert_eq!(start.elapsed(), SSE_KEEP_ALIVE * 2);
        // Quiet since: the next one a single interval later.
        assert_eq!(&next_frame(&mut body).await[..], b":\n\n");
        assert_eq!(start.elapsed(), SSE_KEEP_ALIVE * 3);
        drop(events);
        let end = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        assert!(end.is_none(), "the stream ends with its frames");
    }
}
