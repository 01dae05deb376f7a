//! The authorization matrix: every role, unscoped and scoped to `orders.*`, against every HTTP
//! route in the OpenAPI document and every gRPC method in the proto, on a migration inside the
//! scope and one outside it. What each role may do is written out here from the roles'
//! definitions, not read from the server's code, so the two are checked against each other.
//!
//! Changes are sent at a version no migration is at: an allowed one passes authorization and is
//! then refused by rule 8 (409 / ABORTED), so the matrix moves nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use switchyard_proto::v1 as pb;
use switchyard_tests::{Db, TestServer, both_databases, request_as};
use tonic::Code;

/// Inside the scoped tokens' scope, and outside it.
const IN: &str = "orders.split";
const OUT: &str = "users.email";
const SCOPE: &str = "orders.*";
/// A version no migration is at.
const STALE: u64 = 1_000_000;
/// A token id that does not exist.
const NO_TOKEN_ID: u64 = 999_999;
/// A webhook id that does not exist.
const NO_WEBHOOK_ID: u64 = 999_999;

/// The approval request filed on each migration at the start (a fresh store numbers them
/// from 1): at a stale version, by a token that does not exist, so approving one applies
/// nothing.
fn approval_of(key: &str) -> u64 {
    if key == IN { 1 } else { 2 }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// No token at all (health, metrics, the document, the dashboard).
    Public,
    Read,
    RecordSchema,
    RunBackfill,
    Operate,
    ManageTokens,
}

/// What a role holds, as the roles are defined: a reader reads; a pipeline (gate) also records
/// schema events; a backfill runner also runs backfills; an operator does all of that and
/// changes migrations; an admin also manages tokens.
fn holds(role: &str, needs: Needs) -> bool {
    match needs {
        Needs::Public | Needs::Read => true,
        Needs::RecordSchema => matches!(role, "gate" | "operator" | "admin"),
        Needs::RunBackfill => matches!(role, "backfill" | "operator" | "admin"),
        Needs::Operate => matches!(role, "operator" | "admin"),
        Needs::ManageTokens => role == "admin",
    }
}

/// What an operation concerns, for the scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// One migration, named in the request: refused outside the scope.
    Migration,
    /// A list of migrations: cut to the scope.
    Listing,
    /// No migration in particular (the fleet, tokens, reports whose out-of-scope names are
    /// ignored): the scope does not apply.
    None,
}

struct Op {
    /// `GET /v1/migrations/{key}`, or a gRPC method's name.
    name: &'static str,
    needs: Needs,
    target: Target,
}

const fn op(name: &'static str, needs: Needs, target: Target) -> Op {
    Op {
        name,
        needs,
        target,
    }
}

use Needs::*;
use Target::{Listing, Migration, None as Unscoped};

const HTTP: &[Op] = &[
    op("POST /v1/migrations", Operate, Migration),
    op("GET /v1/migrations", Read, Listing),
    op("GET /v1/migrations/{key}", Read, Migration),
    op("POST /v1/migrations/{key}/rollout", Operate, Migration),
    op("POST /v1/migrations/{key}/advance", Operate, Migration),
    op("POST /v1/migrations/{key}/retreat", Operate, Migration),
    // One row per kind of event: who may record it depends on the event.
    op(
        "POST /v1/migrations/{key}/events#expand_applied",
        RecordSchema,
        Migration,
    ),
    op(
        "POST /v1/migrations/{key}/events#contracted",
        RecordSchema,
        Migration,
    ),
    op(
        "POST /v1/migrations/{key}/events#backfill_started",
        RunBackfill,
        Migration,
    ),
    op(
        "POST /v1/migrations/{key}/events#backfill_complete",
        RunBackfill,
        Migration,
    ),
    op(
        "POST /v1/migrations/{key}/events#backfill_paused",
        Operate,
        Migration,
    ),
    op(
        "POST /v1/migrations/{key}/events#backfill_cancelled",
        Operate,
        Migration,
    ),
    op("GET /v1/migrations/{key}/audit", Read, Migration),
    op("GET /v1/migrations/{key}/decide", Read, Migration),
    op("GET /v1/migrations/{key}/instances", Read, Migration),
    op("GET /v1/migrations/{key}/traffic", Read, Migration),
    op("GET /v1/migrations/{key}/gate", Read, Migration),
    op("GET /v1/migrations/{key}/actions", Read, Migration),
    op("GET /v1/plans", Read, Listing),
    op("GET /v1/approvals", Read, Listing),
    op("GET /v1/webhooks", Operate, Unscoped),
    op("POST /v1/webhooks", Operate, Unscoped),
    op("DELETE /v1/webhooks/{id}", Operate, Unscoped),
    op("POST /v1/webhooks/{id}/test", Operate, Unscoped),
    op("GET /v1/webhooks/{id}/deliveries", Operate, Unscoped),
    op("GET /v1/approvals/{id}", Read, Migration),
    op("POST /v1/approvals/{id}/approve", Operate, Migration),
    op("POST /v1/approvals/{id}/reject", Operate, Migration),
    op("GET /v1/plan-templates", Read, Unscoped),
    op("PUT /v1/plan-templates/{name}", Operate, Unscoped),
    op("DELETE /v1/plan-templates/{name}", Operate, Unscoped),
    op("GET /v1/migrations/{key}/plan", Read, Migration),
    op("PUT /v1/migrations/{key}/plan", Operate, Migration),
    op("POST /v1/migrations/{key}/plan/pause", Operate, Migration),
    op("POST /v1/migrations/{key}/plan/resume", Operate, Migration),
    op("GET /v1/migrations/{key}/usage", Read, Migration),
    op("GET /v1/migrations/{key}/mismatches", Read, Migration),
    op("GET /v1/migrations/{key}/backfill", Read, Migration),
    op(
        "PUT /v1/migrations/{key}/backfill/checkpoint",
        RunBackfill,
        Migration,
    ),
    op(
        "PUT /v1/migrations/{key}/backfill/settings",
        Operate,
        Migration,
    ),
    op("GET /v1/snapshot", Read, Listing),
    op("GET /v1/watch", Read, Listing),
    op("POST /v1/clients/heartbeat", Read, Unscoped),
    op("GET /v1/clients", Read, Unscoped),
    op("POST /v1/clients/telemetry", Read, Unscoped),
    op("GET /v1/lifecycle", Read, Listing),
    op("POST /v1/tokens", ManageTokens, Unscoped),
    op("GET /v1/tokens", ManageTokens, Unscoped),
    op("POST /v1/tokens/{id}/revoke", ManageTokens, Unscoped),
    op("GET /v1/whoami", Read, Unscoped),
    op("GET /v1/vocabulary", Read, Unscoped),
    op("POST /ofrep/v1/evaluate/flags/{key}", Read, Migration),
    op("POST /ofrep/v1/evaluate/flags", Read, Listing),
    op("GET /healthz", Public, Unscoped),
    op("GET /readyz", Public, Unscoped),
    op("GET /metrics", Public, Unscoped),
    op("GET /openapi.json", Public, Unscoped),
];

const GRPC: &[Op] = &[
    op("CreateMigration", Operate, Migration),
    op("GetMigration", Read, Migration),
    op("ListMigrations", Read, Listing),
    op("SetRollout", Operate, Migration),
    op("Advance", Operate, Migration),
    op("Retreat", Operate, Migration),
    op("RecordEvent#expand_applied", RecordSchema, Migration),
    op("RecordEvent#backfill_started", RunBackfill, Migration),
    op("RecordEvent#backfill_paused", Operate, Migration),
    op("Audit", Read, Migration),
    op("GetSnapshot", Read, Listing),
    op("Watch", Read, Listing),
    op("Decide", Read, Migration),
    op("Heartbeat", Read, Unscoped),
    op("ListInstances", Read, Migration),
    op("ReportTelemetry", Read, Unscoped),
    op("Traffic", Read, Migration),
    op("Gate", Read, Migration),
    op("GetBackfill", Read, Migration),
    op("CheckpointBackfill", RunBackfill, Migration),
    op("Lifecycle", Read, Listing),
    op("CreateToken", ManageTokens, Unscoped),
    op("ListTokens", ManageTokens, Unscoped),
    op("RevokeToken", ManageTokens, Unscoped),
    op("GetPlan", Read, Migration),
    op("SetPlan", Operate, Migration),
    op("PausePlan", Operate, Migration),
    op("ResumePlan", Operate, Migration),
    op("RequestApproval", Operate, Migration),
    op("ListApprovals", Read, Listing),
    op("GetApproval", Read, Migration),
    op("ApproveChange", Operate, Migration),
    op("RejectChange", Operate, Migration),
    op("ListPlans", Read, Listing),
    op("ListPlanTemplates", Read, Unscoped),
    op("SetPlanTemplate", Operate, Unscoped),
    op("RemovePlanTemplate", Operate, Unscoped),
    op("AddWebhook", Operate, Unscoped),
    op("ListWebhooks", Operate, Unscoped),
    op("RemoveWebhook", Operate, Unscoped),
    op("TestWebhook", Operate, Unscoped),
    op("ListWebhookDeliveries", Operate, Unscoped),
];

/// A caller: a role's token, scoped or not, or no token.
struct Caller {
    name: String,
    role: &'static str,
    scoped: bool,
    token: Option<String>,
}

impl Caller {
    fn sees(&self, key: &str) -> bool {
        !self.scoped || key.starts_with("orders.")
    }
}

/// What came back: allowed (with the migrations a listing showed), or refused with a status.
#[derive(Debug)]
enum Outcome {
    Allowed(Option<BTreeSet<String>>),
    Unauthenticated,
    Denied(String),
}

fn listed_by(items: &[Value], field: &str) -> BTreeSet<String> {
    items
        .iter()
        .map(|m| m[field].as_str().unwrap().to_owned())
        .collect()
}

fn listed(migrations: &[Value]) -> BTreeSet<String> {
    migrations
        .iter()
        .map(|m| m["key"].as_str().unwrap().to_owned())
        .collect()
}

/// Sends one HTTP operation as `caller` on migration `key`.
async fn http(srv: &TestServer, caller: &Caller, name: &str, key: &str) -> Outcome {
    let (method_path, event) = name.split_once('#').unwrap_or((name, ""));
    let (method, template) = method_path.split_once(' ').unwrap();
    let id = if template.starts_with("/v1/approvals/") {
        approval_of(key)
    } else {
        NO_TOKEN_ID
    };
    let path = template
        .replace("{key}", key)
        .replace("{id}", &id.to_string())
        .replace("{name}", "no-such-template");
    let change = json!({ "expected_version": STALE, "reason": "authorization matrix" });
    let body = match method_path {
        "POST /v1/migrations" => Some(json!({
            "key": key, "entity_kind": "order_id", "has_backfill": true, "reason": "again",
        })),
        "POST /v1/migrations/{key}/rollout" => Some(json!({
            "rollout_bp": 100, "expected_version": STALE, "reason": "authorization matrix",
        })),
        "POST /v1/migrations/{key}/advance" | "POST /v1/migrations/{key}/retreat" => {
            Some(change.clone())
        }
        "POST /v1/migrations/{key}/events" => Some(json!({
            "event": event, "expected_version": STALE, "reason": "authorization matrix",
        })),
        "PUT /v1/migrations/{key}/backfill/checkpoint" => {
            Some(json!({ "cursor": "", "rows_done": 0, "started_version": STALE }))
        }
        // No stage: allowed callers are refused by the plan's validation, so nothing is set.
        "PUT /v1/migrations/{key}/plan" => {
            Some(json!({ "stages": [], "reason": "authorization matrix" }))
        }
        // No stage: allowed callers are refused by validation, so no template is made.
        "PUT /v1/plan-templates/{name}" => {
            Some(json!({ "stages": [], "reason": "authorization matrix" }))
        }
        // The plans set above are done: allowed callers are refused (422), nothing moves.
        "POST /v1/migrations/{key}/plan/pause" | "POST /v1/migrations/{key}/plan/resume" => {
            Some(json!({ "reason": "authorization matrix" }))
        }
        "PUT /v1/migrations/{key}/backfill/settings" => {
            Some(json!({ "reset": true, "reason": "authorization matrix" }))
        }
        "POST /v1/clients/heartbeat" => Some(json!({
            "service": "matrix", "instance_id": caller.name, "applied_version": 0,
            "migrations": [IN, OUT],
        })),
        "POST /v1/clients/telemetry" => Some(json!({
            "service": "matrix", "instance_id": caller.name, "entries": [],
        })),
        "POST /v1/tokens" => {
            Some(json!({ "name": format!("made-by-{}", caller.name), "role": "reader" }))
        }
        "POST /v1/tokens/{id}/revoke" => Some(json!({})),
        // Subscribed to the migrations in every caller's scope, at an address nothing listens
        // on; removing and testing go to a subscription that does not exist.
        "POST /v1/webhooks" => Some(json!({
            "url": "http://127.0.0.1:9/matrix", "migrations": [SCOPE], "events": ["change"],
        })),
        "POST /v1/approvals/{id}/approve" | "POST /v1/approvals/{id}/reject" => {
            Some(json!({ "reason": "authorization matrix" }))
        }
        "POST /ofrep/v1/evaluate/flags/{key}" | "POST /ofrep/v1/evaluate/flags" => {
            Some(json!({ "context": { "targetingKey": "e-1" } }))
        }
        _ => None,
    };
    let path = match method_path {
        "GET /v1/migrations/{key}/decide" => format!("{path}?entity_key=e-1"),
        // Decided ones too: callers before this one may have closed them.
        "GET /v1/approvals" => format!("{path}?all=true"),
        _ => path,
    };
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = srv.http.request(method, format!("{}{path}", srv.base));
    if let Some(token) = &caller.token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let mut response = request.send().await.expect("HTTP request");
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        return Outcome::Unauthenticated;
    }
    if status == StatusCode::FORBIDDEN {
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "permission_denied", "{name}: {body}");
        return Outcome::Denied(body["message"].as_str().unwrap().to_owned());
    }
    assert!(
        !status.is_server_error(),
        "{name} as {}: {status}",
        caller.name
    );
    if method_path == "GET /v1/watch" {
        // The first event is the snapshot: read up to its end.
        let mut text = String::new();
        while !text.contains("\n\n") {
            let chunk = response.chunk().await.unwrap().expect("a snapshot event");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let data = text
            .lines()
            .find_map(|l| l.strip_prefix("data:"))
            .expect("the snapshot's data");
        let snapshot: Value = serde_json::from_str(data.trim()).unwrap();
        return Outcome::Allowed(Some(listed(snapshot["migrations"].as_array().unwrap())));
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let shown = match method_path {
        "GET /v1/migrations" | "GET /v1/snapshot" => {
            Some(listed(body["migrations"].as_array().unwrap()))
        }
        "POST /ofrep/v1/evaluate/flags" => Some(listed(body["flags"].as_array().unwrap())),
        "GET /v1/plans" => Some(listed(body["plans"].as_array().unwrap())),
        "GET /v1/approvals" => Some(listed_by(body["approvals"].as_array().unwrap(), "key")),
        "GET /v1/lifecycle" => Some(
            body["complete_not_contracted"]
                .as_array()
                .unwrap()
                .iter()
                .chain(body["contracted_in_use"].as_array().unwrap())
                .map(|m| m["key"].as_str().unwrap().to_owned())
                .collect(),
        ),
        _ => None,
    };
    Outcome::Allowed(shown)
}

fn event_kind(name: &str) -> pb::EventKind {
    match name {
        "expand_applied" => pb::EventKind::ExpandApplied,
        "backfill_started" => pb::EventKind::BackfillStarted,
        "backfill_paused" => pb::EventKind::BackfillPaused,
        other => panic!("no event {other} in the matrix"),
    }
}

/// A gRPC request with the token, if any.
fn req<T>(token: Option<&str>, message: T) -> tonic::Request<T> {
    match token {
        Some(token) => request_as(token, message),
        None => tonic::Request::new(message),
    }
}

/// Sends one gRPC call as `caller` on migration `key`.
async fn grpc(srv: &TestServer, caller: &Caller, name: &str, key: &str) -> Outcome {
    let (method, event) = name.split_once('#').unwrap_or((name, ""));
    let mut client = srv.grpc.clone();
    let key = key.to_owned();
    let t = caller.token.as_deref();
    let step = pb::StepRequest {
        key: key.clone(),
        expected_version: STALE,
        reason: "authorization matrix".into(),
        ..Default::default()
    };
    let listing = |s: &pb::Snapshot| Some(s.migrations.iter().map(|m| m.key.clone()).collect());
    let result: Result<Option<BTreeSet<String>>, tonic::Status> = match method {
        "CreateMigration" => client
            .create_migration(req(
                t,
                pb::CreateMigrationRequest {
                    key,
                    entity_kind: "order_id".into(),
                    reason: "again".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(|_| None),
        "GetMigration" => client
            .get_migration(req(t, pb::GetMigrationRequest { key }))
            .await
            .map(|_| None),
        "ListMigrations" => client
            .list_migrations(req(t, pb::ListMigrationsRequest {}))
            .await
            .map(|r| {
                Some(
                    r.get_ref()
                        .migrations
                        .iter()
                        .map(|m| m.key.clone())
                        .collect(),
                )
            }),
        "SetRollout" => client
            .set_rollout(req(
                t,
                pb::SetRolloutRequest {
                    key,
                    rollout_bp: 100,
                    expected_version: STALE,
                    reason: "authorization matrix".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(|_| None),
        "Advance" => client.advance(req(t, step)).await.map(|_| None),
        "Retreat" => client.retreat(req(t, step)).await.map(|_| None),
        "RecordEvent" => client
            .record_event(req(
                t,
                pb::RecordEventRequest {
                    key,
                    event: event_kind(event) as i32,
                    expected_version: STALE,
                    reason: "authorization matrix".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(|_| None),
        "Audit" => client
            .audit(req(
                t,
                pb::AuditRequest {
                    key,
                    ..Default::default()
                },
            ))
            .await
            .map(|_| None),
        "GetSnapshot" => client
            .get_snapshot(req(t, pb::GetSnapshotRequest {}))
            .await
            .map(|r| listing(r.get_ref())),
        "Watch" => match client.watch(req(t, pb::WatchRequest::default())).await {
            Ok(stream) => {
                let first = stream.into_inner().message().await;
                match first {
                    Ok(Some(pb::WatchEvent {
                        event: Some(pb::watch_event::Event::Snapshot(s)),
                    })) => Ok(listing(&s)),
                    Ok(other) => panic!("the first watch event is not a snapshot: {other:?}"),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        },
        "Decide" => client
            .decide(req(
                t,
                pb::DecideRequest {
                    key,
                    entity_key: "e-1".into(),
                },
            ))
            .await
            .map(|_| None),
        "Heartbeat" => client
            .heartbeat(req(
                t,
                pb::HeartbeatRequest {
                    service: "matrix-grpc".into(),
                    instance_id: caller.name.clone(),
                    migrations: vec![IN.into(), OUT.into()],
                    ..Default::default()
                },
            ))
            .await
            .map(|_| None),
        "ListInstances" => client
            .list_instances(req(
                t,
                pb::ListInstancesRequest {
                    migration: key,
                    ..Default::default()
                },
            ))
            .await
            .map(|_| None),
        "ReportTelemetry" => client
            .report_telemetry(req(
                t,
                pb::ReportTelemetryRequest {
                    service: "matrix-grpc".into(),
                    instance_id: caller.name.clone(),
                    entries: vec![],
                },
            ))
            .await
            .map(|_| None),
        "Traffic" => client
            .traffic(req(t, pb::TrafficRequest { key, minutes: 0 }))
            .await
            .map(|_| None),
        "Gate" => client
            .gate(req(t, pb::GateRequest { key }))
            .await
            .map(|_| None),
        "GetBackfill" => client
            .get_backfill(req(t, pb::GetBackfillRequest { key }))
            .await
            .map(|_| None),
        "CheckpointBackfill" => client
            .checkpoint_backfill(req(
                t,
                pb::BackfillCheckpointRequest {
                    key,
                    ..Default::default()
                },
            ))
            .await
            .map(|_| None),
        "Lifecycle" => client
            .lifecycle(req(t, pb::LifecycleRequest::default()))
            .await
            .map(|r| {
                let r = r.get_ref();
                Some(
                    r.complete_not_contracted
                        .iter()
                        .map(|m| m.key.clone())
                        .chain(r.contracted_in_use.iter().map(|m| m.key.clone()))
                        .collect(),
                )
            }),
        "CreateToken" => client
            .create_token(req(
                t,
                pb::CreateTokenRequest {
                    name: format!("grpc-made-by-{}", caller.name),
                    role: pb::Role::Reader as i32,
                    scope: vec![],
                },
            ))
            .await
            .map(|_| None),
        "ListTokens" => client
            .list_tokens(req(t, pb::ListTokensRequest {}))
            .await
            .map(|_| None),
        "RevokeToken" => client
            .revoke_token(req(t, pb::RevokeTokenRequest { id: NO_TOKEN_ID }))
            .await
            .map(|_| None),
        "GetPlan" => client
            .get_plan(req(t, pb::GetPlanRequest { key }))
            .await
            .map(|_| None),
        // No stage: allowed callers are refused by the plan's validation, so nothing is set.
        "SetPlan" => client
            .set_plan(req(
                t,
                pb::SetPlanRequest {
                    key,
                    reason: "authorization matrix".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(|_| None),
        // The plans set at the start are done: allowed callers are refused, nothing moves.
        "PausePlan" => client
            .pause_plan(req(
                t,
                pb::PlanChangeRequest {
                    key,
                    reason: "authorization matrix".into(),
                },
            ))
            .await
            .map(|_| None),
        "ResumePlan" => client
            .resume_plan(req(
                t,
                pb::PlanChangeRequest {
                    key,
                    reason: "authorization matrix".into(),
                },
            ))
            .await
            .map(|_| None),
        "RequestApproval" => client
            .request_approval(req(
                t,
                pb::RequestApprovalRequest {
                    change: Some(pb::request_approval_request::Change::Advance(step)),
                },
            ))
            .await
            .map(|_| None),
        "ListApprovals" => client
            .list_approvals(req(
                t,
                pb::ListApprovalsRequest {
                    all: true,
                    key: String::new(),
                },
            ))
            .await
            .map(|r| {
                Some(
                    r.get_ref()
                        .approvals
                        .iter()
                        .map(|a| a.key.clone())
                        .collect(),
                )
            }),
        "GetApproval" => client
            .get_approval(req(
                t,
                pb::GetApprovalRequest {
                    id: approval_of(&key),
                },
            ))
            .await
            .map(|_| None),
        "ApproveChange" | "RejectChange" => {
            let decision = req(
                t,
                pb::DecideApprovalRequest {
                    id: approval_of(&key),
                    reason: "authorization matrix".into(),
                },
            );
            if method == "ApproveChange" {
                client.approve_change(decision).await.map(|_| None)
            } else {
                client.reject_change(decision).await.map(|_| None)
            }
        }
        "ListPlans" => client
            .list_plans(req(t, pb::ListPlansRequest {}))
            .await
            .map(|r| Some(r.get_ref().plans.iter().map(|p| p.key.clone()).collect())),
        "ListPlanTemplates" => client
            .list_plan_templates(req(t, pb::ListPlanTemplatesRequest {}))
            .await
            .map(|_| None),
        // No stage: allowed callers are refused by validation, so no template is made.
        "SetPlanTemplate" => client
            .set_plan_template(req(
                t,
                pb::SetPlanTemplateRequest {
                    name: "matrix".into(),
                    reason: "authorization matrix".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(|_| None),
        "RemovePlanTemplate" => client
            .remove_plan_template(req(
                t,
                pb::RemovePlanTemplateRequest {
                    name: "no-such-template".into(),
                },
            ))
            .await
            .map(|_| None),
        // As over HTTP: the migrations in every caller's scope, an address nothing listens on;
        // the others go to a subscription that does not exist.
        "AddWebhook" => client
            .add_webhook(req(
                t,
                pb::AddWebhookRequest {
                    url: "http://127.0.0.1:9/matrix".into(),
                    migrations: vec![SCOPE.into()],
                    events: vec!["change".into()],
                    format: String::new(),
                },
            ))
            .await
            .map(|_| None),
        "ListWebhooks" => client
            .list_webhooks(req(t, pb::ListWebhooksRequest {}))
            .await
            .map(|_| None),
        "RemoveWebhook" => client
            .remove_webhook(req(t, pb::WebhookRequest { id: NO_WEBHOOK_ID }))
            .await
            .map(|_| None),
        "TestWebhook" => client
            .test_webhook(req(t, pb::WebhookRequest { id: NO_WEBHOOK_ID }))
            .await
            .map(|_| None),
        "ListWebhookDeliveries" => client
            .list_webhook_deliveries(req(
                t,
                pb::ListWebhookDeliveriesRequest {
                    id: NO_WEBHOOK_ID,
                    limit: 0,
                },
            ))
            .await
            .map(|_| None),
        other => panic!("no gRPC call for {other} in the matrix"),
    };
    match result {
        Ok(shown) => Outcome::Allowed(shown),
        Err(s) if s.code() == Code::Unauthenticated => Outcome::Unauthenticated,
        Err(s) if s.code() == Code::PermissionDenied => Outcome::Denied(s.message().to_owned()),
        Err(s) => {
            assert!(
                !matches!(s.code(), Code::Internal | Code::Unknown),
                "{name} as {}: {s:?}",
                caller.name
            );
            Outcome::Allowed(None)
        }
    }
}

/// Checks one outcome against the matrix.
fn judge(via: &str, op: &Op, caller: &Caller, key: &str, outcome: Outcome) {
    let what = format!("{via} {} as {} on {key}", op.name, caller.name);
    if caller.token.is_none() {
        match (op.needs, outcome) {
            (Public, Outcome::Allowed(_)) | (_, Outcome::Unauthenticated) => {}
            (_, other) => panic!("{what}: without a token expected 401, got {other:?}"),
        }
        return;
    }
    let in_scope = op.target != Migration || caller.sees(key);
    let allowed = holds(caller.role, op.needs) && in_scope;
    match outcome {
        Outcome::Allowed(shown) => {
            assert!(allowed, "{what}: allowed, but the matrix says refused");
            if op.target == Listing {
                let shown = shown.unwrap_or_else(|| panic!("{what}: no listing read"));
                for key in &shown {
                    assert!(caller.sees(key), "{what}: listed {key} outside the scope");
                }
                // The lifecycle lists only migrations needing attention; the others list all.
                if !op.name.contains("ifecycle") {
                    let expected: BTreeSet<String> = [IN, OUT]
                        .into_iter()
                        .filter(|k| caller.sees(k))
                        .map(str::to_owned)
                        .collect();
                    assert_eq!(shown, expected, "{what}");
                }
            }
        }
        Outcome::Denied(message) => {
            assert!(
                !allowed,
                "{what}: refused ({message}), but the matrix allows it"
            );
            assert!(
                message.contains(&caller.name),
                "{what}: names the token: {message}"
            );
            if holds(caller.role, op.needs) {
                // The role would do; the scope does not cover the migration.
                assert!(
                    message.contains(&format!("scoped to {SCOPE}")) && message.contains(key),
                    "{what}: says the scope: {message}"
                );
            } else {
                assert!(
                    message.contains(&format!("has role {}", caller.role)),
                    "{what}: says the role: {message}"
                );
            }
        }
        Outcome::Unauthenticated => panic!("{what}: a valid token was not recognised"),
    }
}

both_databases!(every_role_and_scope_against_every_route_and_method);

async fn every_role_and_scope_against_every_route_and_method(db: Db) {
    let srv = TestServer::start(db).await;
    // Both migrations at dual_write 100%: in a stage where most operations apply.
    srv.at_full_with(
        IN,
        switchyard_domain::Stage::DualWrite,
        json!({"has_backfill": true}),
    )
    .await;
    srv.at_full_with(
        OUT,
        switchyard_domain::Stage::DualWrite,
        json!({"has_backfill": true}),
    )
    .await;
    // Each with a plan that is done where it stands (dual_write 100%, then stop), so plan
    // listings have both to show and no plan moves anything.
    for key in [IN, OUT] {
        let (status, body) = srv
            .call(
                Method::PUT,
                &format!("/v1/migrations/{key}/plan"),
                Some(
                    json!({ "stages": [{ "stage": "dual_write", "steps": [{ "rollout_bp": 10000 }],
                    "then": "stop" }], "reason": "authorization matrix" }),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // One approval request on each, filed as the store files them (this server gates nothing).
    for key in [IN, OUT] {
        let filed = srv
            .server
            .app
            .store
            .request_approval(&switchyard_server::store::NewApproval {
                key: key.to_owned(),
                operation: switchyard_domain::Operation::Advance,
                gated: None,
                description: "advance dual_write 100% → shadow 0%".to_owned(),
                expected_version: switchyard_domain::Version(STALE),
                reason: "authorization matrix".to_owned(),
                requested_by_token: NO_TOKEN_ID - 1,
                requested_by: "someone (token 999998)".to_owned(),
                requested_at_ms: 0,
                by_plan: false,
            })
            .await
            .unwrap();
        assert_eq!(filed, Ok(approval_of(key)));
    }
    let versions = [srv.version_of(IN).await, srv.version_of(OUT).await];

    // Admin tokens cannot be scoped: refused, and nothing is created.
    let (status, body) = srv
        .post(
            "/v1/tokens",
            json!({"name": "scoped-admin", "role": "admin", "scope": [SCOPE]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot be scoped"),
        "{body}"
    );
    let (status, body) = srv
        .post(
            "/v1/tokens",
            json!({"name": "bad-scope", "role": "reader", "scope": ["orders.*.x"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("invalid scope pattern"),
        "{body}"
    );
    let (_, tokens) = srv.get("/v1/tokens").await;
    assert!(
        !tokens.to_string().contains("scoped-admin") && !tokens.to_string().contains("bad-scope"),
        "{tokens}"
    );

    let mut callers = vec![Caller {
        name: "nobody".into(),
        role: "none",
        scoped: false,
        token: None,
    }];
    for role in ["reader", "gate", "backfill", "operator", "admin"] {
        for scoped in [false, true] {
            if scoped && role == "admin" {
                continue;
            }
            let name = if scoped {
                format!("{role}-orders")
            } else {
                format!("{role}-all")
            };
            let scope: Vec<&str> = if scoped { vec![SCOPE] } else { vec![] };
            let (status, body) = srv
                .post(
                    "/v1/tokens",
                    json!({"name": name, "role": role, "scope": scope}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            assert_eq!(body["info"]["scope"], json!(scope));
            let token = body["token"].as_str().unwrap().to_owned();
            // whoami says the scope the token carries.
            let (_, me) = srv.call_as(&token, Method::GET, "/v1/whoami", None).await;
            assert_eq!(me["scope"], json!(scope), "{me}");
            callers.push(Caller {
                name,
                role,
                scoped,
                token: Some(token),
            });
        }
    }

    // The matrix covers every operation the API has: every path and method in the OpenAPI
    // document, every method of the gRPC service.
    let doc = srv.openapi().await;
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    let covered: BTreeSet<String> = HTTP
        .iter()
        .map(|o| o.name.split('#').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        covered, documented,
        "the HTTP matrix and the OpenAPI document"
    );
    let proto = include_str!("../../proto/switchyard/v1/switchyard.proto");
    let methods: BTreeSet<&str> = proto
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .map(|l| l.split('(').next().unwrap().trim())
        .collect();
    let covered: BTreeSet<&str> = GRPC
        .iter()
        .map(|o| o.name.split('#').next().unwrap())
        .collect();
    assert_eq!(covered, methods, "the gRPC matrix and the proto's service");

    let mut checked = 0;
    for caller in &callers {
        for op in HTTP {
            for key in [IN, OUT] {
                if op.target != Migration && key == OUT {
                    continue;
                }
                judge(
                    "HTTP",
                    op,
                    caller,
                    key,
                    http(&srv, caller, op.name, key).await,
                );
                checked += 1;
            }
        }
        for op in GRPC {
            for key in [IN, OUT] {
                if op.target != Migration && key == OUT {
                    continue;
                }
                judge(
                    "gRPC",
                    op,
                    caller,
                    key,
                    grpc(&srv, caller, op.name, key).await,
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 900, "{checked} cases");

    // Nothing moved: every allowed change was refused by rule 8.
    assert_eq!(
        [srv.version_of(IN).await, srv.version_of(OUT).await],
        versions
    );
    // A scoped instance named both migrations; only the one its scope covers was kept.
    for (key, expected) in [(IN, true), (OUT, false)] {
        let (_, page) = srv.get(&format!("/v1/migrations/{key}/instances")).await;
        let instance = page["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["service"] == "matrix" && i["instance_id"] == "reader-orders")
            .map(|i| i["uses_migration"].clone());
        assert_eq!(
            instance,
            expected.then_some(json!(true)),
            "{key}: the scoped reader's instance is counted only for its scope: {page}"
        );
    }
    srv.stop().await;
}

/// A client on a scoped token: its snapshot and stream hold only its migrations, at the
/// server's versions; a change outside its scope never reaches it and nothing waits for it to
/// acknowledge one (the rules' fleet for that migration leaves it out), while a change inside
/// is applied and acknowledged as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_client_sees_and_is_counted_for_its_migrations_only() {
    use std::time::Duration;
    use switchyard_client::{Client, Stage};
    use switchyard_tests::{CLIENT_TTL, eventually};
    const WAIT: Duration = Duration::from_secs(15);

    let srv = TestServer::start(Db::Sqlite).await;
    srv.at_full(IN, Stage::DualWrite).await;
    srv.at_full(OUT, Stage::DualWrite).await;
    let (status, body) = srv
        .post(
            "/v1/tokens",
            json!({"name": "orders-api", "role": "reader", "scope": [SCOPE]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    // The CLI takes a scope as repeated or comma-separated patterns.
    let code = srv
        .cli(&[
            "token",
            "create",
            "runner",
            "--role",
            "backfill",
            "--scope",
            "orders.*,users.email",
        ])
        .await;
    assert_eq!(code, 0);
    let code = srv
        .cli(&[
            "token", "create", "root-2", "--role", "admin", "--scope", "orders.*",
        ])
        .await;
    assert_ne!(code, 0, "an admin token cannot be scoped");
    let (_, tokens) = srv.get("/v1/tokens").await;
    let scopes: Vec<(&str, &Value)> = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), &t["scope"]))
        .collect();
    assert!(
        scopes.contains(&("runner", &json!(["orders.*", "users.email"]))),
        "{tokens}"
    );
    assert!(
        !scopes.iter().any(|(name, _)| *name == "root-2"),
        "{tokens}"
    );
    let client = Client::builder(
        format!("http://{}", srv.server.grpc_addr),
        token,
        "orders-api",
    )
    .instance_id("orders-api-1")
    .heartbeat_interval(Duration::from_millis(100))
    .connect()
    .await
    .expect("a scoped token connects");
    assert_eq!(client.stage_without_entity(IN), Stage::DualWrite);
    // Outside the scope: unknown to the client, so on its fallback.
    assert_eq!(client.stage_without_entity(OUT), Stage::Off);

    let fleet = |key: &'static str| {
        let app = srv.server.app.clone();
        let now = srv.clock.clock()();
        async move {
            app.store
                .fleet(key, now, CLIENT_TTL)
                .await
                .unwrap()
                .live
                .into_iter()
                .map(|i| i.instance_id)
                .collect::<Vec<_>>()
        }
    };
    eventually(WAIT, "the scoped instance to be live", || async {
        fleet(IN).await == ["orders-api-1"]
    })
    .await;
    assert!(fleet(OUT).await.is_empty(), "not counted for {OUT}");

    // A change outside the scope: the client neither receives it nor is waited for.
    let out_version = srv.version_of(OUT).await;
    let (status, body) = srv
        .post(
            &format!("/v1/migrations/{OUT}/rollout"),
            json!({"rollout_bp": 5_000, "expected_version": out_version, "reason": "step back"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A change inside it reaches the client and is acknowledged.
    let in_version = srv.version_of(IN).await;
    let (status, body) = srv
        .post(
            &format!("/v1/migrations/{IN}/advance"),
            json!({"expected_version": in_version, "reason": "next stage"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = srv
        .post(
            &format!("/v1/migrations/{IN}/rollout"),
            json!({"rollout_bp": 10_000, "expected_version": body["version"], "reason": "all in"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let advanced = body["version"].as_u64().unwrap();
    client.wait_for_version(advanced).await;
    assert_eq!(client.stage_without_entity(IN), Stage::Shadow);
    eventually(WAIT, "the instance to acknowledge the change", || async {
        let (_, page) = srv.get(&format!("/v1/migrations/{IN}/instances")).await;
        page["instances"][0]["applied_version"] == advanced
    })
    .await;
    client.shutdown().await;
    srv.stop().await;
}
