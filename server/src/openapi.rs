//! The OpenAPI 3.1 document of the HTTP API, served at `/openapi.json`. Written by hand next to
//! the routes it describes; `tests/tests/ops.rs` checks that every route of the router appears,
//! and `scripts/api-fuzz` checks with schemathesis that the server answers as it says.

use crate::app::{
    App, DEFAULT_COMPLETE_FOR_DAYS, MAX_AUDIT_PAGE, MAX_BODY_BYTES, MAX_ENTITY_KEY_CHARS,
    MAX_MISMATCH_DESCRIPTION_CHARS, MAX_MISMATCH_SAMPLES, MAX_REPORTED_MIGRATIONS,
    MAX_RETIRE_PROBATION_SECONDS, MAX_TELEMETRY_ENTRIES,
};
use crate::plans::MAX_TEMPLATE_DESCRIPTION;
use serde_json::{Value, json};
use switchyard_domain::gate::CheckId;
use switchyard_domain::guardrail::OnBreach;
use switchyard_domain::migration::DEFAULT_SOAK_SECONDS;
use switchyard_domain::plan::{MAX_HOLD_MS, MAX_STEPS_PER_STAGE, Then};
use switchyard_domain::traffic::{LATENCY_BOUNDS_US, minute_of};
use switchyard_domain::types::MAX_STORED_NUMBER;
use switchyard_domain::{EventKind, MigrationKey, Permission, Reason, Role, Scope, Stage};
use switchyard_proto::json::{BackfillStatus, Side, TelemetryEntry};

/// What `char::is_control` refuses (Unicode Cc), as a regex class body: the text fields' rule.
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";
/// Prose also takes tabs and line breaks.
const PROSE_CONTROL: &str = r"\u0000-\u0008\u000b-\u001f\u007f-\u009f";
/// What `str::trim` strips (Unicode White_Space): text that is only this counts as empty.
const BLANK: &str = r"\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// The most telemetry entries an HTTP body can carry: the smallest entry (every field is
/// required) repeated up to the body limit. The server's own entry limit is for gRPC, whose
/// messages encode zeros in no bytes; over HTTP the body limit (413) binds first.
fn max_telemetry_entries_per_body() -> usize {
    let smallest = TelemetryEntry {
        key: "a".to_owned(),
        minute_ms: 0,
        counts: Default::default(),
        mismatch_samples: Vec::new(),
    };
    let entry = serde_json::to_string(&smallest).map_or(1, |t| t.len());
    let envelope = r#"{"service":"a","instance_id":"a","entries":[]}"#.len();
    ((MAX_BODY_BYTES - envelope) / (entry + 1)).min(MAX_TELEMETRY_ENTRIES)
}

pub fn document(app: &App) -> Value {
    // Names come from their one definition in the domain.
    let stages: Vec<&str> = Stage::ALL.into_iter().map(Stage::as_str).collect();
    let planned_stages: Vec<&str> = Stage::ALL
        .into_iter()
        .filter(|s| (Stage::DualWrite..=Stage::Complete).contains(s))
        .map(Stage::as_str)
        .collect();
    let events: Vec<&str> = EventKind::ALL.into_iter().map(EventKind::as_str).collect();
    let roles: Vec<&str> = Role::ALL.into_iter().map(Role::as_str).collect();
    let permissions: Vec<&str> = Permission::ALL
        .into_iter()
        .map(Permission::as_str)
        .collect();
    // The wire's own spellings, from the typed bodies that serialize them.
    let sides: Vec<&str> = Side::ALL.into_iter().map(Side::as_str).collect();
    let backfill_statuses: Vec<&str> = BackfillStatus::ALL
        .into_iter()
        .map(BackfillStatus::as_str)
        .collect();
    let bounds: Vec<String> = LATENCY_BOUNDS_US.iter().map(u64::to_string).collect();
    let latency_description = format!(
        "Counts per latency bucket; upper bounds (µs) {}, +inf (GET /v1/vocabulary labels them)",
        bounds.join(", ")
    );
    // A count a runner reports; the bound is the domain's (the databases' BIGINT).
    let count = json!({ "type": "integer", "minimum": 0, "maximum": MAX_STORED_NUMBER });
    // A backfill's settings, as stored and returned, and as sent to change them (with `reset`).
    let settings = json!({
        "batch_size": { "type": "integer", "minimum": 1, "maximum": 1_000_000 },
        "max_rows_per_second": { "type": "number", "minimum": 0, "maximum": 1e9, "description": "0: no limit" },
        "max_replica_lag_ms": { "type": "integer", "minimum": 0, "maximum": 86_400_000u64 },
        "max_replica_lag_bytes": { "type": "integer", "minimum": 0, "maximum": 1u64 << 40 },
        "max_wal_bytes_per_second": { "type": "integer", "minimum": 0, "maximum": 1u64 << 40 },
        "batch_target_ms": { "type": "integer", "minimum": 0, "maximum": 3_600_000 },
        "yield_to_blocked_sessions": { "type": "boolean" },
        "hold_during_autovacuum": { "type": "boolean" }
    });
    // In a change, every setting may be null or absent: left as it is.
    let mut settings_change = settings.clone();
    if let Some(properties) = settings_change.as_object_mut() {
        for property in properties.values_mut() {
            if let Some(kind) = property.get("type").cloned() {
                property["type"] = json!([kind, "null"]);
            }
        }
    }
    settings_change["reset"] =
        json!({ "type": "boolean", "description": "clear every stored setting first" });
    // The optional fields the server reads as `Option`s take null as absent.
    let nullable_count =
        json!({ "type": ["integer", "null"], "minimum": 0, "maximum": MAX_STORED_NUMBER });
    let nullable = |schema: &str| json!({ "anyOf": [{ "$ref": format!("#/components/schemas/{schema}") }, { "type": "null" }] });
    // Numbers the server reads as u64 / u32: anything else does not parse (400).
    let uint64 = json!({ "type": "integer", "minimum": 0, "maximum": u64::MAX });
    let uint32 = |default: Option<u32>| {
        let mut schema = json!({ "type": "integer", "minimum": 0, "maximum": u32::MAX });
        if let Some(d) = default {
            schema["default"] = json!(d);
        }
        schema
    };
    // Free text as the server checks it (types::check_text, parse_label, parse_reason). Lengths
    // are the server's in bytes: JSON Schema counts characters, so text beyond ASCII may be
    // refused below these lengths.
    let line = |max: usize| {
        json!({ "type": "string", "maxLength": max, "pattern": format!("^[^{CONTROL}]*$"),
            "description": format!("one line of printable text, up to {max} bytes") })
    };
    let solid_line = format!("^[^{CONTROL}]*[^{CONTROL}{BLANK}][^{CONTROL}]*$");
    let label = json!({ "type": "string", "minLength": 1, "maxLength": 128, "pattern": solid_line,
        "description": "1 to 128 bytes of printable text on one line, not only spaces (trimmed)" });
    let scope = json!({ "type": "array", "maxItems": Scope::MAX_PATTERNS,
        "items": { "type": "string", "maxLength": MigrationKey::MAX_LEN + 1,
            "pattern": "^[a-z0-9][a-z0-9._-]*\\*?$" },
        "description": "the migrations the token may see and act on: migration keys, or key prefixes ending in '*' (orders.*); empty or absent: every migration. Admin tokens cannot be scoped" });
    let reason = json!({ "type": "string", "minLength": 1, "maxLength": Reason::MAX_LEN,
        "pattern": format!("^[^{PROSE_CONTROL}]*[^{CONTROL}{BLANK}][^{PROSE_CONTROL}]*$"),
        "description": format!("Why (rule 9): 1 to {} bytes of text, not only spaces; tabs and line breaks allowed", Reason::MAX_LEN) });
    // A change of settings says why, like every change.
    settings_change["reason"] = reason.clone();
    // The databases this server may observe, by name (their URLs are never shown).
    let mut targets: Vec<Value> = app
        .target_names
        .iter()
        .map(|t| Value::from(t.as_str()))
        .collect();
    targets.push(Value::Null);
    let mut check_ids: Vec<&str> = CheckId::ALL.iter().map(|c| c.as_str()).collect();
    check_ids.push(CheckId::Contracted.as_str());
    let usage_report = json!({ "type": "object",
                    "required": ["key", "target_database", "old_shape", "since_ms", "window_from_ms", "covered_since_ms",
                        "coverage_reason", "last_pass_ms", "last_pass_duration_ms", "statements_on_target", "failing", "check", "statements"],
                    "properties": {
                    "key": { "type": "string" },
                    "target_database": { "type": ["string", "null"], "description": "null: the migration names no database, which is then not observed" },
                    "old_shape": { "type": "array", "items": { "type": "string" } },
                    "since_ms": { "type": "integer", "description": "evidence shown from here on" },
                    "window_from_ms": { "type": ["integer", "null"], "description": "where the gate's window (the soak's) starts; null before the soak" },
                    "covered_since_ms": { "type": ["integer", "null"], "description": "since when the target has been observed without a gap (a statistics reset or eviction restarts it)" },
                    "coverage_reason": { "type": ["string", "null"] },
                    "last_pass_ms": { "type": ["integer", "null"] },
                    "last_pass_duration_ms": { "type": ["integer", "null"] },
                    "statements_on_target": { "type": ["integer", "null"], "description": "statements of the target database in pg_stat_statements at the last pass" },
                    "failing": { "type": ["object", "null"], "required": ["reason", "since_ms"],
                        "description": "why the target cannot be observed (unreachable, authentication, pg_stat_statements missing, permission); null while it can",
                        "properties": { "reason": { "type": "string" }, "since_ms": { "type": "integer" } } },
                    "check": { "$ref": "#/components/schemas/GateCheck" },
                    "statements": { "type": "array", "description": "statements touching the old shape, newest first",
                        "items": { "type": "object",
                        "required": ["statement", "role", "objects", "calls", "rows", "first_seen_ms", "last_seen_ms", "calls_in_window", "verdict", "sessions"],
                        "properties": {
                        "statement": { "type": "string", "description": "normalized text: constants as $n" },
                        "role": { "type": "string" },
                        "objects": { "type": "array", "items": { "type": "object", "required": ["object", "possible"], "properties": {
                            "object": { "type": "string" },
                            "possible": { "type": ["string", "null"], "description": "null: the statement names the object; otherwise why it may use it (SELECT *, an unqualified name)" } } } },
                        "calls": { "type": "integer" }, "rows": { "type": "integer" },
                        "first_seen_ms": { "type": "integer" }, "last_seen_ms": { "type": "integer" },
                        "calls_in_window": { "type": "integer", "description": "calls inside the gate's window: any fails the check" },
                        "verdict": { "type": "string", "enum": ["blocks", "expected", "unexpected"],
                            "description": "blocks: used in the gate's window; expected: before it, by Switchyard clients only (the migrator's old side, a backfill); unexpected: before it, by another caller" },
                        "sessions": { "type": "array", "description": "sessions seen with it as their current or last statement (sampled)",
                            "items": { "type": "object", "required": ["role", "application_name", "client_addr"], "properties": {
                            "role": { "type": "string" }, "application_name": { "type": "string" }, "client_addr": { "type": "string" } } } } } } } } });
    let ident = "[A-Za-z_][A-Za-z0-9_$]{0,62}";
    let old_shape = json!({ "type": "array", "maxItems": switchyard_domain::schema::MAX_OLD_SHAPE,
        "items": { "type": "string", "pattern": format!(
            "^(column:({ident}\\.){{1,2}}{ident}|table:({ident}\\.)?{ident}|index:({ident}\\.)?{ident})$") },
        "description": "Objects the contract drops: column:[schema.]table.column, table:[schema.]table, index:[schema.]index (duplicates count once)" });
    let key_pattern = format!("^[a-z0-9][a-z0-9._-]{{0,{}}}$", MigrationKey::MAX_LEN - 1);
    let key_schema = json!({ "type": "string", "pattern": key_pattern });
    // This server's soak bounds: its --min-soak, and its --traffic-retention (the gate reads
    // the soak's telemetry).
    let min_soak = app.gate_policy.min_soak_seconds;
    let max_soak = app.traffic_retention.as_secs();
    let retained_minutes = (app.traffic_retention.as_secs() / 60).max(1);
    // The server refuses minutes after the next one; as of serving this document.
    let newest_minute = minute_of((app.clock)()) + 60_000;
    // The instance lists' paging (a fleet of thousands would otherwise be one huge answer).
    let page_limit = json!({ "name": "limit", "in": "query",
        "schema": { "type": "integer", "minimum": 0, "maximum": crate::app::MAX_INSTANCE_PAGE,
            "default": crate::app::DEFAULT_INSTANCE_PAGE },
        "description": "Instances per page; 0 or absent: the default (as in the gRPC API, where 0 is unset)" });
    let page_after = json!({ "name": "after", "in": "query", "schema": { "type": "string", "pattern": "^$|\\t" },
        "description": "The previous page's `next_after` (an opaque cursor); absent or empty for the first page" });
    let key = json!({ "name": "key", "in": "path", "required": true,
        "schema": key_schema.clone(), "example": "orders.email-split" });
    let approval_id = json!({ "name": "id", "in": "path", "required": true,
        "schema": { "type": "integer", "minimum": 1, "maximum": i64::MAX }, "example": 7 });
    let template_name = json!({ "name": "name", "in": "path", "required": true,
        "schema": { "type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$" },
        "example": "standard-column-rename" });
    let errors = |codes: &[&str]| -> Value {
        let mut map = serde_json::Map::new();
        for code in codes {
            let description = match *code {
                "400" => {
                    "Invalid input (code invalid_argument; rule 9 for a missing reason): a body that is not the JSON described, a parameter out of range"
                }
                "401" => "Missing, malformed, unknown or revoked token",
                "403" => "The token's role does not allow this",
                "404" => "Unknown migration",
                "409" => {
                    "Stale expected version (stale_version, rule 8, with `current`) or already exists"
                }
                "408" => {
                    "The body did not arrive whole within the server's --request-body-timeout; the connection is closed"
                }
                "413" => "Body larger than 64 KiB (65536 bytes)",
                "503" => {
                    "At capacity (e.g. --max-watch-streams reached); retry after `Retry-After` seconds"
                }
                "422" => {
                    "Refused by a safety rule (rule_refused, with `rule` and `current`) or not applicable to the current state"
                }
                _ => "Error",
            };
            map.insert(
                (*code).to_owned(),
                json!({ "description": description,
                        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }),
            );
        }
        Value::Object(map)
    };
    let ok = |schema: &str, extra: &[&str]| -> Value {
        let mut responses = errors(extra);
        responses["200"] = json!({ "description": "OK",
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } });
        responses
    };
    let body = |schema: &str| {
        json!({ "required": true,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
    };
    let mutation = |summary: &str, schema: &str| {
        let mut responses = ok(
            "Migration",
            &["400", "401", "403", "404", "408", "409", "413", "422"],
        );
        responses["202"] = json!({ "description": "Filed for a second operator's approval (request_approval): the request",
            "headers": { "Location": { "schema": { "type": "string" }, "description": "the request: /v1/approvals/{id}" } },
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Approval" } } } });
        json!({
            "summary": format!("{summary}. Where the server requires a second operator's approval for the change (--require-approval), it is refused with 422 approval_required unless filed for approval (request_approval: 202) or bypassed by an admin (bypass_approval)"),
            "parameters": [key.clone()], "requestBody": body(schema),
            "responses": responses,
        })
    };
    // Asking a second operator and bypassing one exclude each other.
    let both_approval_flags = json!({ "required": ["request_approval", "bypass_approval"], "properties": {
        "request_approval": { "const": true }, "bypass_approval": { "const": true } } });
    let approval_flags = json!({
        "request_approval": { "type": "boolean", "default": false, "description": "File the change for a second operator's approval instead of applying it (answered 202 with the request)" },
        "bypass_approval": { "type": "boolean", "default": false, "description": "Apply a change that needs a second operator's approval without it (admin role; the audit record says so)" } });
    let read = ["401", "403"];

    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchyard",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Feature flags for expand/contract database migrations. Every mutation names the version it expects and a reason; refusals name the safety rule and what would allow the change."
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/v1/migrations": {
                "get": { "summary": "List all migrations (the current snapshot)", "responses": ok("Snapshot", &read) },
                "post": { "summary": "Create a migration (at `off`)", "requestBody": body("CreateMigration"),
                    "responses": {
                        "201": { "description": "Created",
                            "headers": { "Location": { "schema": { "type": "string" }, "description": "the new migration: /v1/migrations/{key}" } },
                            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Migration" } } } },
                        "400": errors(&["400"])["400"], "401": errors(&["401"])["401"], "403": errors(&["403"])["403"],
                        "409": errors(&["409"])["409"], "408": errors(&["408"])["408"], "413": errors(&["413"])["413"],
                        "422": { "description": "not_applicable: valid fields that do not apply together (a retire probation without a target database and a column or table to retire)",
                            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
                    } }
            },
            "/v1/migrations/{key}": {
                "get": { "summary": "Get one migration", "parameters": [key.clone()], "responses": ok("Migration", &["400", "401", "403", "404"]) }
            },
            "/v1/migrations/{key}/rollout": { "post": mutation("Move the rollout front (stage and basis points)", "SetRollout") },
            "/v1/migrations/{key}/advance": { "post": mutation("Advance to the next stage (needs 100%)", "Step") },
            "/v1/migrations/{key}/retreat": { "post": mutation("Step back to the previous stage (needs 0%)", "Step") },
            "/v1/migrations/{key}/events": { "post": mutation("Record an event (expand applied, backfill, old shape repaired, contracted)", "RecordEvent") },
            "/v1/migrations/{key}/audit": {
                "get": { "summary": "The migration's audit log, newest first", "parameters": [key.clone(),
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": MAX_AUDIT_PAGE, "default": 50 },
                      "description": "Entries per page; 0 or absent: the default" },
                    { "name": "before_id", "in": "query", "schema": uint64.clone(),
                      "description": "The previous page's `next_before_id`" }],
                    "responses": ok("AuditPage", &["400", "401", "403", "404"]) }
            },
            "/v1/migrations/{key}/decide": {
                "get": { "summary": "Server-side evaluation: stage and read/write plan for one entity", "parameters": [key.clone(),
                    { "name": "entity_key", "in": "query", "schema": { "type": "string", "maxLength": 1024 },
                      "description": "Omit for an operation without an entity: it gets the trailing stage." }],
                    "responses": ok("Decision", &["400", "401", "403", "404"]) }
            },
            "/v1/snapshot": {
                "get": { "summary": "All migrations with the snapshot version; ETag \"v<version>\", If-None-Match gives 304",
                    "parameters": [{ "name": "If-None-Match", "in": "header", "schema": { "type": "string" } }],
                    "responses": {
                        "200": { "description": "OK", "headers": { "ETag": { "schema": { "type": "string" }, "description": "\"v<version>\"" } },
                            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Snapshot" } } } },
                        "304": { "description": "Not modified", "headers": { "ETag": { "schema": { "type": "string" } } } },
                        "400": errors(&["400"])["400"], "401": errors(&["401"])["401"], "403": errors(&["403"])["403"] } }
            },
            "/v1/watch": {
                "get": { "summary": "Server-sent events: `snapshot` first, then `change` per change, each with id = version; if the token is revoked, a last `error` event (an error body) and the stream ends",
                    "parameters": [{ "name": "since", "in": "query", "schema": uint64.clone(),
                        "description": "Last version applied; the server never sends an older state, and refuses a version newer than its newest (400). `Last-Event-ID` works too." }],
                    "responses": { "200": { "description": "text/event-stream: events `snapshot` (data: a Snapshot, id: its version), `change` (data: a Migration, id: its version) and, when the token is revoked, a last `error` (data: an Error); x-events gives each payload's schema",
                        "content": { "text/event-stream": { "schema": { "type": "object", "required": ["data"],
                            "description": "one server-sent event",
                            "properties": {
                                "event": { "type": "string", "enum": ["snapshot", "change", "error"] },
                                "id": { "type": "string", "description": "the version the event brings (absent on error)" },
                                "data": { "type": "string", "contentMediaType": "application/json",
                                    "description": "the event's JSON: a Snapshot, a Migration or an Error (x-events)" },
                                "retry": { "type": "integer", "minimum": 0 } } } } },
                        "x-events": { "snapshot": { "$ref": "#/components/schemas/Snapshot" },
                            "change": { "$ref": "#/components/schemas/Migration" },
                            "error": { "$ref": "#/components/schemas/Error" } } },
                        "400": errors(&["400"])["400"], "401": errors(&["401"])["401"], "403": errors(&["403"])["403"],
                        "503": errors(&["503"])["503"] } }
            },
            "/v1/clients/heartbeat": {
                "post": { "summary": "A client instance reports it is live and which snapshot version it applied",
                    "requestBody": body("Heartbeat"),
                    "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": {
                        "type": "object", "properties": { "snapshot_version": { "type": "integer" } } } } } },
                        "400": errors(&["400"])["400"], "401": errors(&["401"])["401"],
                        "403": { "description": "The instance belongs to another token (the one that registered it); an admin token may remove any instance", "content": errors(&["403"])["403"]["content"] },
                        "408": errors(&["408"])["408"], "413": errors(&["413"])["413"] } }
            },
            "/v1/clients/telemetry": {
                "post": { "summary": "A client instance reports per-minute counts per migration (batched)",
                    "requestBody": body("Telemetry"),
                    "responses": { "204": { "description": "Added to the rollups (entries for keys that name no migration are ignored and counted in a metric)" },
                        "400": errors(&["400"])["400"], "401": errors(&["401"])["401"], "408": errors(&["408"])["408"], "413": errors(&["413"])["413"] } }
            },
            "/v1/migrations/{key}/traffic": {
                "get": { "summary": "What clients reported for the migration, per minute, summed over instances",
                    "parameters": [key.clone(), { "name": "minutes", "in": "query",
                        "schema": { "type": "integer", "minimum": 0, "maximum": retained_minutes, "default": 60 },
                        "description": "How many minutes back; 0 or absent: 60. At most this server's --traffic-retention" }],
                    "responses": ok("Traffic", &["400", "401", "403", "404"]) }
            },
            "/v1/migrations/{key}/instances": {
                "get": { "summary": "The client instances (last hour) rules 3 and 5 count for this migration: every one, since any live instance may evaluate it, each marked with whether its heartbeats name it; a page at a time",
                    "parameters": [key.clone(), page_limit.clone(), page_after.clone()],
                    "responses": { "200": { "description": "OK",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/InstancePage" } } } },
                    "400": errors(&["400"])["400"], "401": errors(&["401"])["401"] } }
            },
            "/v1/plan-templates": {
                "get": { "summary": "The plan templates: named plans migrations start from",
                    "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["templates"], "properties": {
                            "templates": { "type": "array", "items": { "$ref": "#/components/schemas/PlanTemplate" } } } } } } },
                        "401": errors(&["401"])["401"] } }
            },
            "/v1/plan-templates/{name}": {
                "put": { "summary": "Set or replace a plan template (operator role); migrations already started from it keep their own copy",
                    "parameters": [template_name.clone()], "requestBody": body("PlanTemplateBody"),
                    "responses": ok("PlanTemplate", &["400", "401", "403", "408", "413"]) },
                "delete": { "summary": "Remove a plan template (operator role); answers what it was",
                    "parameters": [template_name.clone()],
                    "responses": ok("PlanTemplate", &["400", "401", "403", "404"]) }
            },
            "/v1/plans": {
                "get": { "summary": "Every plan of the migrations the token sees, with what each does next",
                    "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["plans"], "properties": {
                            "plans": { "type": "array", "items": { "$ref": "#/components/schemas/PlanView" } } } } } } },
                        "401": errors(&["401"])["401"] } }
            },
            "/v1/approvals": {
                "get": { "summary": "Changes filed for a second operator's approval, newest first: pending ones, or with all=true every one (at most 500)",
                    "parameters": [
                        { "name": "all", "in": "query", "schema": { "type": "boolean", "default": false } },
                        { "name": "migration", "in": "query", "schema": key_schema.clone(), "description": "only this migration's" }],
                    "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["approvals"], "properties": {
                            "approvals": { "type": "array", "items": { "$ref": "#/components/schemas/Approval" } } } } } } },
                        "400": errors(&["400"])["400"], "401": errors(&["401"])["401"] } }
            },
            "/v1/webhooks": {
                "get": { "summary": "Webhook subscriptions (operator role); secrets are never shown after creation",
                    "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["webhooks"], "properties": {
                            "webhooks": { "type": "array", "items": { "$ref": "#/components/schemas/Webhook" } } } } } } },
                        "401": errors(&["401"])["401"], "403": errors(&["403"])["403"] } },
                "post": { "summary": "Subscribe a URL to events (operator role). Each event is POSTed at least once, in order per subscription, from a durable outbox (a change's event is written in the change's transaction), retried with backoff for a day; signed with Switchyard-Signature: v1=<hex HMAC-SHA256(secret, \"<Switchyard-Timestamp>.<body>\")>. The secret is in this answer only",
                    "requestBody": body("CreateWebhook"),
                    "responses": {
                        "201": { "description": "Created: the subscription and its secret",
                            "headers": { "Location": { "schema": { "type": "string" }, "description": "its delivery log: /v1/webhooks/{id}/deliveries" } },
                            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/WebhookCreated" } } } },
                        "400": errors(&["400"])["400"], "401": errors(&["401"])["401"], "403": errors(&["403"])["403"],
                        "408": errors(&["408"])["408"], "413": errors(&["413"])["413"] } }
            },
            "/v1/webhooks/{id}": {
                "delete": { "summary": "Remove a subscription (operator role): nothing more is sent to it; its log stays",
                    "parameters": [approval_id.clone()], "responses": ok("Webhook", &["400", "401", "403", "404"]) }
            },
            "/v1/webhooks/{id}/test": {
                "post": { "summary": "Send a test event to one subscription, through the outbox as any event (operator role)",
                    "parameters": [approval_id.clone()], "responses": ok("WebhookTest", &["400", "401", "403", "404"]) }
            },
            "/v1/webhooks/{id}/deliveries": {
                "get": { "summary": "A subscription's delivery log, newest first: status, attempts, the receiver's last status and error (operator role)",
                    "parameters": [approval_id.clone(), { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": u32::MAX },
                        "description": "at most this many (1 to 500; default 50)" }],
                    "responses": ok("WebhookDeliveries", &["400", "401", "403", "404"]) }
            },
            "/v1/approvals/{id}": {
                "get": { "summary": "One approval request", "parameters": [approval_id.clone()],
                    "responses": ok("Approval", &["400", "401", "403", "404"]) }
            },
            "/v1/approvals/{id}/approve": {
                "post": { "summary": "Approve a request (operator role, another token than the requester's): the change is applied as the requester's, through the safety rules at the version it was asked at, and audited with both names. 409 stale_version: the migration changed since (the request is then stale); 422: a rule refuses it now (it stays pending) or it is no longer pending",
                    "parameters": [approval_id.clone()], "requestBody": body("ApprovalDecision"),
                    "responses": ok("Approval", &["400", "401", "403", "404", "408", "409", "413", "422"]) }
            },
            "/v1/approvals/{id}/reject": {
                "post": { "summary": "Reject a request (operator role; the requester's own token withdraws it). A plan's request rejected pauses the plan",
                    "parameters": [approval_id.clone()], "requestBody": body("ApprovalDecision"),
                    "responses": ok("Approval", &["400", "401", "403", "404", "408", "413", "422"]) }
            },
            "/v1/migrations/{key}/plan": {
                "get": { "summary": "The migration's plan: its steps, who set it, whether it runs, why its next step waits (a hold, a rule's refusal) and what that step is",
                    "parameters": [key.clone()], "responses": ok("PlanView", &["400", "401", "403", "404", "422"]) },
                "put": { "summary": "Set or replace the migration's plan (operator role): per stage from dual_write to complete, rollout steps each held a minimum time, then advance, advance once approved, or stop. One replica takes each step as an ordinary change through the safety rules, in the setting token's name; a refused step waits and says why; a manual traffic change pauses the plan",
                    "parameters": [key.clone()], "requestBody": body("PlanBody"),
                    "responses": ok("PlanView", &["400", "401", "403", "404", "408", "413"]) }
            },
            "/v1/migrations/{key}/plan/pause": {
                "post": { "summary": "Pause a running plan (operator role): no step is taken until it is resumed",
                    "parameters": [key.clone()], "requestBody": body("PlanChange"),
                    "responses": ok("PlanView", &["400", "401", "403", "404", "408", "413", "422"]) }
            },
            "/v1/migrations/{key}/plan/resume": {
                "post": { "summary": "Resume a paused plan (operator role): it carries on from wherever the migration's front is now",
                    "parameters": [key.clone()], "requestBody": body("PlanChange"),
                    "responses": ok("PlanView", &["400", "401", "403", "404", "408", "413", "422"]) }
            },
            "/v1/migrations/{key}/actions": {
                "get": { "summary": "Would each traffic change be allowed now? The safety rules run on the current state and live fleet without writing anything: advance, retreat (step back), ramp_full (the current stage to 100%), ramp_zero (to 0%), each allowed or refused with the rule and its message. The change is judged again when made",
                    "parameters": [key.clone()], "responses": ok("DryRun", &["400", "401", "403", "404"]) }
            },
            "/v1/migrations/{key}/gate": {
                "get": { "summary": "The contract gate: may the old shape be dropped now? Every check with evidence and remedy",
                    "parameters": [key.clone()], "responses": ok("GateReport", &["400", "401", "403", "404"]) }
            },
            "/v1/migrations/{key}/usage": {
                "get": { "summary": "What the migration's target database ran against its old shape (from pg_stat_statements and pg_stat_activity), with the gate's database check",
                    "parameters": [key.clone(), { "name": "since_ms", "in": "query", "schema": { "type": "integer", "minimum": i64::MIN, "maximum": i64::MAX },
                        "description": "Evidence from this time on (Unix ms); absent: the last day, or the soak period if longer" }],
                    "responses": ok("UsageReport", &["400", "401", "403", "404"]) }
            },
            "/v1/migrations/{key}/mismatches": {
                "get": { "summary": "Entities whose shadow reads differed (as clients sampled them), most recently seen first",
                    "parameters": [key.clone(), { "name": "limit", "in": "query",
                        "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } }],
                    "responses": ok("Mismatches", &["400", "401", "403", "404"]) }
            },
            "/v1/migrations/{key}/backfill": {
                "get": { "summary": "The backfill's progress: status, paused, rows done, estimated total, rate, ETA, runner",
                    "parameters": [key.clone()], "responses": ok("BackfillProgress", &["400", "401", "403", "404"]) }
            },
            "/v1/migrations/{key}/backfill/checkpoint": {
                "put": { "summary": "A backfill runner saves its position after a batch (backfill or operator role)",
                    "parameters": [key.clone()], "requestBody": body("BackfillCheckpoint"),
                    "responses": ok("BackfillProgress", &["400", "401", "403", "404", "408", "413", "422"]) }
            },
            "/v1/migrations/{key}/backfill/settings": {
                "put": { "summary": "Change a backfill's thresholds and pace while it runs (operator role); its runner applies them at its next batch",
                    "parameters": [key.clone()], "requestBody": body("BackfillSettingsChange"),
                    "responses": ok("BackfillProgress", &["400", "401", "403", "404", "408", "413", "422"]) }
            },
            "/v1/whoami": {
                "get": { "summary": "The presented token's name and role (any role; the dashboard signs in with it)",
                    "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": {
                        "$ref": "#/components/schemas/WhoAmI" } } } },
                        "401": errors(&["401"])["401"] } }
            },
            "/v1/vocabulary": {
                "get": { "summary": "The names the API speaks: stages in order, events with labels and the permission each needs, latency histogram buckets with labels (any role)",
                    "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": {
                        "$ref": "#/components/schemas/Vocabulary" } } } },
                        "401": errors(&["401"])["401"] } }
            },
            "/v1/lifecycle": {
                "get": { "summary": "Contracted migrations still evaluated by live clients, and migrations at complete 100% for long without being contracted",
                    "parameters": [{ "name": "complete_for_days", "in": "query", "schema": uint32(Some(DEFAULT_COMPLETE_FOR_DAYS)) }],
                    "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": { "type": "object", "properties": {
                        "complete_for_days": { "type": "integer" },
                        "contracted_in_use": { "type": "array", "items": { "type": "object", "properties": {
                            "key": { "type": "string" }, "instances": { "type": "array", "items": { "$ref": "#/components/schemas/Instance" } } } } },
                        "complete_not_contracted": { "type": "array", "items": { "type": "object", "properties": {
                            "key": { "type": "string" }, "complete_since_ms": { "type": "integer" } } } } } } } } },
                        "400": errors(&["400"])["400"], "401": errors(&["401"])["401"] } }
            },
            "/v1/clients": {
                "get": { "summary": "Client instances seen in the last hour, a page at a time (by service and instance id)",
                    "parameters": [{ "name": "migration", "in": "query", "schema": key_schema.clone(),
                        "description": "A migration's list: every instance rules 3 and 5 wait on (each whose token's scope covers the migration), with uses_migration set" },
                        page_limit.clone(), page_after.clone()],
                    "responses": { "200": { "description": "OK",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/InstancePage" } } } },
                    "400": errors(&["400"])["400"], "401": errors(&["401"])["401"] } }
            },
            "/v1/tokens": {
                "get": { "summary": "List tokens (admin)", "responses": { "200": { "description": "OK" },
                    "401": errors(&["401"])["401"], "403": errors(&["403"])["403"] } },
                "post": { "summary": "Create a token (admin); the secret is returned once", "requestBody": body("CreateToken"),
                    "responses": { "201": { "description": "Created: {info, token}" }, "400": errors(&["400"])["400"],
                        "401": errors(&["401"])["401"], "403": errors(&["403"])["403"], "409": errors(&["409"])["409"],
                        "408": errors(&["408"])["408"], "413": errors(&["413"])["413"] } }
            },
            "/v1/tokens/{id}/revoke": {
                "post": { "summary": "Revoke a token (admin)",
                    "parameters": [{ "name": "id", "in": "path", "required": true, "schema": uint64.clone() }],
                    "responses": { "200": { "description": "Revoked" }, "400": errors(&["400"])["400"], "401": errors(&["401"])["401"],
                        "403": errors(&["403"])["403"], "404": { "description": "Unknown token", "content": errors(&["404"])["404"]["content"] } } }
            },
            "/healthz": { "get": { "summary": "Liveness", "security": [], "responses": { "200": { "description": "ok" } } } },
            "/readyz": { "get": { "summary": "Readiness (database reachable)", "security": [],
                "responses": { "200": { "description": "ready" }, "503": { "description": "database unreachable" } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "security": [], "responses": { "200": { "description": "text exposition format" } } } },
            "/openapi.json": { "get": { "summary": "This document", "security": [], "responses": { "200": { "description": "OpenAPI 3.1" } } } }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Stage": { "type": "string", "enum": stages },
                "Side": { "type": "string", "enum": sides },
                "BasisPoints": { "type": "integer", "minimum": 0, "maximum": 10000 },
                "Migration": { "type": "object",
                    "required": ["key", "description", "owner", "entity_kind", "soak_seconds", "expected_services",
                        "has_backfill", "salt", "shadow_sample_bp", "stage", "rollout_bp", "version", "created_at_ms",
                        "updated_at_ms", "expand_applied", "backfill", "old_shape_stale", "full_since",
                        "old_writes_resumed_since", "soak_started_at_ms", "live_window", "target_database", "old_shape",
                        "retire_probation_seconds", "retired_at_ms", "stage_since_ms", "applicable_events"],
                    "properties": {
                    "key": { "type": "string" }, "description": { "type": "string" }, "owner": { "type": "string" },
                    "entity_kind": { "type": "string" }, "soak_seconds": { "type": "integer" },
                    "expected_services": { "type": "array", "items": { "type": "string" } },
                    "has_backfill": { "type": "boolean" },
                    "salt": { "type": "integer", "description": "bucket = xxh3_64_with_seed(entity_key, salt) % 10000" },
                    "shadow_sample_bp": { "$ref": "#/components/schemas/BasisPoints" },
                    "stage": { "$ref": "#/components/schemas/Stage" },
                    "rollout_bp": { "$ref": "#/components/schemas/BasisPoints" },
                    "version": { "type": "integer" }, "created_at_ms": { "type": "integer" }, "updated_at_ms": { "type": "integer" },
                    "expand_applied": { "type": "boolean" },
                    "backfill": { "type": "object", "properties": {
                        "status": { "type": "string", "enum": backfill_statuses },
                        "rows_done": { "type": "integer" }, "rows_total_estimate": { "type": "integer" },
                        "started_version": { "type": ["integer", "null"] }, "completed_version": { "type": ["integer", "null"] },
                        "paused": { "type": "boolean" } } },
                    "old_shape_stale": { "type": "boolean" },
                    "target_database": { "type": ["string", "null"], "description": "the server's --target-database name of the database it migrates" },
                    "old_shape": old_shape,
                    "retire_probation_seconds": { "type": ["integer", "null"], "minimum": 1, "maximum": MAX_RETIRE_PROBATION_SECONDS,
                        "description": "retire before drop: how long the old shape stays retired (renamed in the database), with no statement failing on it and no restore, before `contracted`; null: the contract drops it directly" },
                    "retired_at_ms": { "type": ["integer", "null"],
                        "description": "when `retired` was recorded (the old shape renamed out of use; the front is held at complete 100%); null: not retired, or `restored` since" },
                    "soak_started_at_ms": { "type": ["integer", "null"], "description": "when complete reached 100% (the gate's soak start)" },
                    "stage_since_ms": { "type": "integer", "description": "when the front entered its current stage (Unix ms); ramps within the stage keep it" },
                    "old_writes_resumed_since": { "type": ["integer", "null"],
                        "description": "the version since which old-shape writes are back on for some entities after a step back past rampdown (the backfill must rerun before new reads); null if not" },
                    "live_window": { "type": ["object", "null"], "properties": {
                        "started_at_ms": { "type": "integer" }, "ended_at_ms": { "type": ["integer", "null"] } } },
                    "full_since": { "type": "object", "additionalProperties": { "type": "integer" },
                        "description": "stage → version since which every entity has been at that stage or beyond" },
                    "applicable_events": { "type": "array", "items": { "$ref": "#/components/schemas/EventName" },
                        "description": "events whose recording could change the migration now (the rules still decide)" } } },
                "Snapshot": { "type": "object", "properties": { "version": { "type": "integer" },
                    "migrations": { "type": "array", "items": { "$ref": "#/components/schemas/Migration" } } } },
                "CreateMigration": { "type": "object", "required": ["key", "reason"], "additionalProperties": false, "properties": {
                    "key": key_schema, "description": { "type": "string", "maxLength": 4000, "pattern": format!("^[^{PROSE_CONTROL}]*$"),
                        "description": "up to 4000 bytes of text; tabs and line breaks allowed" },
                    "owner": line(200), "entity_kind": line(200),
                    "soak_seconds": { "type": ["integer", "null"], "minimum": min_soak, "maximum": max_soak,
                        "description": format!("null or absent: {DEFAULT_SOAK_SECONDS} s; within this server's --min-soak and --traffic-retention") },
                    "expected_services": { "type": "array", "items": label.clone(), "maxItems": 64,
                        "description": "Up to 64 services (duplicates count once)" },
                    "has_backfill": { "type": "boolean" }, "shadow_sample_bp": nullable("BasisPoints"),
                    "reason": reason.clone(),
                    "target_database": { "enum": targets, "description": "The database it migrates: one of this server's --target-database names; null or absent: undeclared" },
                    "old_shape": old_shape.clone(),
                    "retire_probation_seconds": { "type": ["integer", "null"], "minimum": 1, "maximum": MAX_RETIRE_PROBATION_SECONDS,
                        "description": format!("Retire before drop: once every other gate check passes the old shape is renamed (`switchyard retire-sql`, then record `retired`), and `contracted` waits this many seconds with nothing failing on it. Needs target_database and a column or table in old_shape; at most {} days; null or absent: the contract drops the old shape directly", MAX_RETIRE_PROBATION_SECONDS / 86_400) } } },
                "SetRollout": { "type": "object", "required": ["rollout_bp", "expected_version", "reason"], "additionalProperties": false, "properties": {
                    "stage": nullable("Stage"), "rollout_bp": { "$ref": "#/components/schemas/BasisPoints" },
                    "expected_version": uint64.clone(), "reason": reason.clone(),
                    "request_approval": approval_flags["request_approval"].clone(), "bypass_approval": approval_flags["bypass_approval"].clone() },
                    "not": both_approval_flags.clone() },
                "Step": { "type": "object", "required": ["expected_version", "reason"], "additionalProperties": false, "properties": {
                    "expected_version": uint64.clone(), "reason": reason.clone(),
                    "request_approval": approval_flags["request_approval"].clone(), "bypass_approval": approval_flags["bypass_approval"].clone() },
                    "not": both_approval_flags.clone() },
                "RecordEvent": { "type": "object", "required": ["event", "expected_version", "reason"], "additionalProperties": false,
                    "if": { "required": ["event"], "properties": { "event": { "const": EventKind::BackfillProgress.as_str() } } },
                    "then": { "required": ["rows_done"], "properties": { "rows_done": count.clone() },
                        "description": "backfill_progress needs rows_done (rows_total_estimate defaults to 0); other events ignore both" },
                    "properties": {
                    "event": { "$ref": "#/components/schemas/EventName" },
                    "expected_version": uint64.clone(), "reason": reason,
                    "rows_done": nullable_count.clone(), "rows_total_estimate": nullable_count,
                    "request_approval": approval_flags["request_approval"].clone(), "bypass_approval": approval_flags["bypass_approval"].clone() },
                    "not": both_approval_flags.clone() },
                "Approval": { "type": "object", "required": ["id", "key", "change", "action", "gated", "expected_version", "reason", "requested_by", "requested_at_ms", "origin", "status", "decided_by", "decision_reason"], "properties": {
                    "id": uint64.clone(), "key": { "type": "string" },
                    "change": { "type": "string", "description": "the change in words, from the front it was asked at: `advance shadow 100% → live 0%`" },
                    "action": { "type": "string", "description": "set_rollout, advance, retreat, or the event recorded (contracted)" },
                    "stage": { "$ref": "#/components/schemas/Stage", "description": "set_rollout only: the stage asked for (absent: the current one)" },
                    "rollout_bp": { "$ref": "#/components/schemas/BasisPoints", "description": "set_rollout only" },
                    "gated": { "type": "string", "enum": ["enter-live", "ramp-complete", "contract", "step-back-from-complete", "plan"],
                        "description": "the server policy's kind of change, or plan when the migration's plan (then: approve) asked for the approval" },
                    "expected_version": uint64.clone(), "reason": { "type": "string" },
                    "requested_by": { "type": "string" }, "requested_at_ms": { "type": "integer" },
                    "origin": { "type": "string", "enum": ["person", "plan"] },
                    "status": { "type": "string", "enum": ["pending", "applied", "rejected", "withdrawn", "stale"],
                        "description": "stale: the migration changed after the request, which was refused at approval (rule 8) and can never apply" },
                    "decided_by": { "type": "string" }, "decided_at_ms": { "type": ["integer", "null"] }, "decision_reason": { "type": "string" },
                    "migration": { "$ref": "#/components/schemas/Migration", "description": "on approval: the migration after the change" } } },
                "CreateWebhook": { "type": "object", "required": ["url", "events"], "additionalProperties": false, "properties": {
                    "url": { "type": "string", "maxLength": 2000, "pattern": "^https?://[^\\s/?#]+(/\\S*)?$", "description": "an absolute http:// or https:// URL with a host" },
                    "migrations": { "items": scope["items"].clone(), "type": "array", "maxItems": Scope::MAX_PATTERNS, "description": "migration keys or key prefixes ending in '*' (orders.*); empty or absent: every migration" },
                    "events": { "type": "array", "minItems": 1, "items": { "type": "string", "enum": crate::webhooks::EVENT_TYPES } },
                    "format": { "type": "string", "enum": ["json", "slack"], "default": "json", "description": "json: the event; slack: {\"text\": …} for a Slack incoming webhook" } } },
                "Webhook": { "type": "object", "required": ["id", "url", "migrations", "events", "format", "created_by", "created_at_ms"], "properties": {
                    "id": uint64.clone(), "url": { "type": "string" },
                    "migrations": { "type": "array", "items": { "type": "string" } },
                    "events": { "type": "array", "items": { "type": "string" } },
                    "format": { "type": "string" }, "created_by": { "type": "string" }, "created_at_ms": { "type": "integer" },
                    "removed_at_ms": { "type": ["integer", "null"] } } },
                "WebhookCreated": { "type": "object", "required": ["webhook", "secret"], "properties": {
                    "webhook": { "$ref": "#/components/schemas/Webhook" },
                    "secret": { "type": "string", "description": "shown this once: verify Switchyard-Signature with it" } } },
                "WebhookTest": { "type": "object", "required": ["delivery"], "properties": { "delivery": uint64.clone() } },
                "WebhookDeliveries": { "type": "object", "required": ["webhook", "deliveries"], "properties": {
                    "webhook": { "$ref": "#/components/schemas/Webhook" },
                    "deliveries": { "type": "array", "items": { "type": "object",
                        "required": ["id", "event", "key", "created_at_ms", "status", "attempts", "last_status", "last_error", "next_attempt_ms"], "properties": {
                        "id": uint64.clone(), "event": { "type": "string" }, "key": { "type": "string" },
                        "created_at_ms": { "type": "integer" },
                        "status": { "type": "string", "enum": ["pending", "delivered", "failed"] },
                        "attempts": { "type": "integer" }, "last_status": { "type": "integer" }, "last_error": { "type": "string" },
                        "next_attempt_ms": { "type": "integer" }, "delivered_at_ms": { "type": ["integer", "null"] } } } } } },
                "ApprovalDecision": { "type": "object", "required": ["reason"], "additionalProperties": false, "properties": {
                    "reason": reason.clone() } },
                "Decision": { "type": "object", "properties": {
                    "key": { "type": "string" }, "bucket": { "type": ["integer", "null"] },
                    "stage": { "$ref": "#/components/schemas/Stage" }, "write": { "$ref": "#/components/schemas/Side" },
                    "authoritative_write": { "$ref": "#/components/schemas/Side" }, "read": { "$ref": "#/components/schemas/Side" },
                    "return_value": { "$ref": "#/components/schemas/Side" }, "shadow_compare": { "type": "boolean" },
                    "version": { "type": "integer" } } },
                "AuditPage": { "type": "object", "properties": {
                    "entries": { "type": "array", "items": { "type": "object", "properties": {
                        "id": { "type": "integer" }, "migration_key": { "type": "string" }, "version": { "type": "integer" },
                        "actor": { "type": "string" }, "at_ms": { "type": "integer" }, "action": { "type": "string" },
                        "reason": { "type": "string" },
                        "approved_by": { "type": "string", "description": "who approved the change (four eyes), or `approval bypassed by admin …`; empty when it needed none" },
                        "before": {}, "after": {} } } },
                    "next_before_id": { "type": ["integer", "null"] } } },
                "InstancePage": { "type": "object", "required": ["instances"], "properties": {
                    "instances": { "type": "array", "items": { "$ref": "#/components/schemas/Instance" } },
                    "next_after": { "type": "string",
                        "description": "Pass as `after` for the next page; absent on the last page" } } },
                "Heartbeat": { "type": "object", "required": ["service", "instance_id", "applied_version"], "additionalProperties": false, "properties": {
                    "service": label.clone(), "instance_id": label.clone(),
                    "applied_version": { "type": "integer", "minimum": 0, "maximum": u64::MAX,
                        "description": "at most the server's newest snapshot version (else 400)" },
                    "migrations": { "type": "array", "items": key_schema.clone(), "maxItems": MAX_REPORTED_MIGRATIONS,
                        "description": "Migrations this instance evaluates (keys naming no migration are ignored)" },
                    "leaving": { "type": "boolean", "default": false,
                        "description": "A clean shutdown: the instance is forgotten now instead of after the client TTL" } } },
                "Histogram": { "type": "array", "items": uint64.clone(), "minItems": 16, "maxItems": 16,
                    "description": latency_description },
                "SideCounts": { "type": "object", "required": ["reads", "writes", "errors", "latency"], "properties": {
                    "reads": uint64.clone(), "writes": uint64.clone(), "errors": uint64.clone(),
                    "latency": { "$ref": "#/components/schemas/Histogram" } } },
                "TrafficCounts": { "type": "object",
                    "required": ["old", "new", "comparisons", "mismatches", "evaluations_without_entity", "fallback_evaluations"], "properties": {
                    "old": { "$ref": "#/components/schemas/SideCounts" }, "new": { "$ref": "#/components/schemas/SideCounts" },
                    "comparisons": uint64.clone(), "mismatches": uint64.clone(),
                    "evaluations_without_entity": uint64.clone(), "fallback_evaluations": uint64.clone() } },
                "Telemetry": { "type": "object", "required": ["service", "instance_id", "entries"], "properties": {
                    "service": label.clone(), "instance_id": label.clone(),
                    "entries": { "type": "array", "maxItems": max_telemetry_entries_per_body(),
                        "description": format!("As many as fit in the 64 KiB body (the smallest entries; fewer with longer keys or larger counts); the server takes up to {MAX_TELEMETRY_ENTRIES} over gRPC"),
                        "items": { "allOf": [
                        { "$ref": "#/components/schemas/TrafficCounts" },
                        { "type": "object", "required": ["key", "minute_ms"], "properties": {
                            "mismatch_samples": { "type": "array", "maxItems": MAX_MISMATCH_SAMPLES,
                                "description": "Some of the mismatches counted, with their entities",
                                "items": { "$ref": "#/components/schemas/MismatchSample" } },
                            "key": key_schema.clone(),
                            "minute_ms": { "type": "integer", "multipleOf": 60000, "minimum": i64::MIN, "maximum": newest_minute,
                                "description": "start of the minute, Unix ms; not after the server's next minute (the maximum is as of serving this document); minutes older than the retention are dropped" } } } ] } } } },
                "MismatchSample": { "type": "object", "required": ["entity_key"], "additionalProperties": false, "properties": {
                    "entity_key": { "type": "string", "minLength": 1, "maxLength": MAX_ENTITY_KEY_CHARS,
                        "pattern": format!("^[^{CONTROL}]*$") },
                    "description": { "type": "string", "maxLength": MAX_MISMATCH_DESCRIPTION_CHARS,
                        "pattern": format!("^[^{CONTROL}]*$"), "default": "",
                        "description": "What the application's comparison said differed" },
                    "observed_at_ms": { "type": "integer", "default": 0, "minimum": i64::MIN, "maximum": i64::MAX,
                        "description": "When, Unix ms (the client's clock; the server's time if unset or ahead)" } } },
                "Mismatches": { "type": "object", "required": ["key", "entities", "samples"], "properties": {
                    "key": { "type": "string" },
                    "entities": { "type": "integer", "minimum": 0, "description": "Distinct entities kept (the newest 1,000)" },
                    "samples": { "type": "array", "items": { "type": "object",
                        "required": ["entity_key", "description", "seen", "first_seen_ms", "last_seen_ms", "service", "instance_id"],
                        "properties": {
                            "entity_key": { "type": "string" }, "description": { "type": "string" },
                            "seen": { "type": "integer", "minimum": 0 },
                            "first_seen_ms": { "type": "integer" }, "last_seen_ms": { "type": "integer" },
                            "service": { "type": "string" }, "instance_id": { "type": "string" } } } } } },
                "PlanStage": { "type": "object", "required": ["stage", "steps", "then"], "additionalProperties": false, "properties": {
                    "stage": { "type": "string", "enum": planned_stages },
                    "steps": { "type": "array", "minItems": 1, "maxItems": MAX_STEPS_PER_STAGE, "items": {
                        "type": "object", "required": ["rollout_bp"], "additionalProperties": false, "properties": {
                            "rollout_bp": { "type": "integer", "minimum": 1, "maximum": 10000, "description": "the rollout this step ramps to, in basis points; steps increase" },
                            "hold_seconds": { "type": "integer", "minimum": 0, "maximum": MAX_HOLD_MS / 1000, "default": 0,
                                "description": "minimum time at this rollout before the next step, counted from the migration's last change" } } } },
                    "then": { "type": "string", "enum": Then::ALL.map(Then::as_str), "description": "after the last step: advance to the next stage (the last step must be 100%), approve (advance once a second operator approves the request the plan files), or stop (the plan is done)" } } },
                "PlanBody": { "type": "object", "required": ["reason"], "additionalProperties": false, "properties": {
                    "template": { "type": "string", "description": "start from this template: its stages, with the stages given here in place of its stages of the same name, and the window given here in place of its window" },
                    "guardrails": { "$ref": "#/components/schemas/Guardrails" },
                    "stages": { "type": "array", "items": { "$ref": "#/components/schemas/PlanStage" },
                        "description": "consecutive stages in stage order; each but the last advances (with a template: the stages to put in place of its own)" },
                    "not_before_ms": { "type": ["integer", "null"], "description": "nothing is done before this time (Unix ms): a scheduled change" },
                    "window": { "type": ["string", "null"], "maxLength": 200, "description": "steps only within these hours: days (a range or a comma list), hours and an IANA time zone, e.g. `mon-fri 09:00-16:00 Europe/Berlin`; holds count outside them too" },
                    "reason": reason.clone() } },
                "Guardrails": { "type": "object", "additionalProperties": false, "description": "what halts the plan, checked before each step on what clients reported since the migration's last change; each absent one at its default (a plan's answer lists them all)",
                    "properties": {
                        "max_mismatch_ratio": { "type": "number", "minimum": 0, "description": "share of shadow reads that differ (default 0: any mismatch halts)" },
                        "max_new_error_ratio": { "type": "number", "minimum": 0, "description": "share of new-shape operations that fail (default 0.01)" },
                        "max_error_ratio_vs_old": { "type": "number", "minimum": 0, "description": "the new shape's error ratio against the old shape's (default 2)" },
                        "max_p99_ratio_vs_old": { "type": "number", "minimum": 0, "description": "the new shape's p99 latency bucket against the old shape's (default 2)" },
                        "max_behind_seconds": { "type": "integer", "minimum": 0, "maximum": MAX_STORED_NUMBER / 1000, "description": "how long a live instance may go without applying the last change (default 600)" },
                        "max_backfill_stall_seconds": { "type": "integer", "minimum": 0, "maximum": MAX_STORED_NUMBER / 1000, "description": "how long a running backfill may go without a batch, or hold itself back, before the plan halts (default 900)" },
                        "max_unobserved_seconds": { "type": "integer", "minimum": 0, "maximum": MAX_STORED_NUMBER / 1000, "description": "how long the migration's target database may go unobserved (unreachable, unreadable, not configured) before the plan halts (default 600)" },
                        "min_operations": { "type": "integer", "minimum": 0, "maximum": MAX_STORED_NUMBER, "description": "operations on a side needed before an error or latency ratio judges (default 100)" },
                        "min_comparisons": { "type": "integer", "minimum": 0, "maximum": MAX_STORED_NUMBER, "description": "shadow comparisons needed before the mismatch ratio judges (default 100)" },
                        "on_breach": { "type": "string", "enum": OnBreach::ALL.map(OnBreach::as_str), "description": "halt (default), or rollback: also move the front back to the plan's previous step" } } },
                "PlanTemplateBody": { "type": "object", "required": ["stages", "reason"], "additionalProperties": false, "properties": {
                    "stages": { "type": "array", "minItems": 1, "items": { "$ref": "#/components/schemas/PlanStage" } },
                    "window": { "type": ["string", "null"], "maxLength": 200 },
                    "description": { "type": "string", "maxLength": MAX_TEMPLATE_DESCRIPTION, "default": "" },
                    "reason": reason.clone() } },
                "PlanTemplate": { "type": "object", "required": ["name", "stages", "window", "description", "updated_by", "updated_at_ms"], "properties": {
                    "name": { "type": "string" },
                    "stages": { "type": "array", "items": { "$ref": "#/components/schemas/PlanStage" } },
                    "window": { "type": ["string", "null"] },
                    "description": { "type": "string" },
                    "updated_by": { "type": "string" },
                    "updated_at_ms": { "type": "integer" } } },
                "PlanChange": { "type": "object", "required": ["reason"], "additionalProperties": false, "properties": {
                    "reason": reason.clone() } },
                "PlanView": { "type": "object", "required": ["key", "stages", "not_before_ms", "window", "template", "guardrails", "set_by", "set_at_ms", "status", "status_reason", "status_at_ms", "waiting", "next"], "properties": {
                    "key": { "type": "string" },
                    "stages": { "type": "array", "items": { "$ref": "#/components/schemas/PlanStage" } },
                    "not_before_ms": { "type": ["integer", "null"] },
                    "window": { "type": ["string", "null"] },
                    "template": { "type": ["string", "null"], "description": "the template it started from" },
                    "guardrails": { "$ref": "#/components/schemas/Guardrails" },
                    "set_by": { "type": "string", "description": "the token whose name and scope the steps are made in" },
                    "set_at_ms": { "type": "integer" },
                    "status": { "type": "string", "enum": ["running", "paused", "halted", "done"], "description": "halted: a guardrail stopped it (status_reason names it and the figures)" },
                    "status_reason": { "type": "string", "description": "who set, paused or resumed it and why, or why it is done" },
                    "status_at_ms": { "type": "integer" },
                    "waiting": { "type": "string", "description": "why the next step was not taken at the driver's last look (a hold, a rule's refusal); empty when nothing held it" },
                    "next": { "type": "object", "required": ["kind", "description", "at_ms"], "properties": {
                        "kind": { "type": "string", "enum": ["wait", "step", "done"] },
                        "description": { "type": "string" },
                        "at_ms": { "type": ["integer", "null"], "description": "when the wait ends, if it is time; when a step is due" } } } } },
                "DryRun": { "type": "object", "required": ["key", "version", "actions"], "properties": {
                    "key": { "type": "string" },
                    "version": { "type": "integer", "description": "the version the verdicts were reached at" },
                    "actions": { "type": "array", "items": { "type": "object", "required": ["action", "allowed", "rule", "message"], "properties": {
                        "action": { "type": "string", "enum": ["advance", "retreat", "ramp_full", "ramp_zero"] },
                        "allowed": { "type": "boolean" },
                        "rule": { "type": ["integer", "null"], "description": "the safety rule that refuses it; null when allowed or when no rule is involved" },
                        "message": { "type": ["string", "null"], "description": "why it would be refused, and what would allow it" } } } } } },
                "Traffic": { "type": "object", "properties": {
                    "key": { "type": "string" },
                    "minutes": { "type": "array", "items": { "allOf": [ { "$ref": "#/components/schemas/TrafficCounts" },
                        { "type": "object", "properties": { "minute_ms": { "type": "integer" } } } ] } },
                    "total": { "$ref": "#/components/schemas/TrafficCounts" },
                    "services": { "type": "array", "description": "per reporting service over the period: who is still on the old shape",
                        "items": { "type": "object", "required": ["service", "old", "new", "last_old_minute_ms"], "properties": {
                            "service": { "type": "string" },
                            "old": { "$ref": "#/components/schemas/SideCounts" },
                            "new": { "$ref": "#/components/schemas/SideCounts" },
                            "last_old_minute_ms": { "type": ["integer", "null"], "description": "the last minute (Unix ms) the service used the old shape in the period; null: never" } } } } } },
                "Instance": { "type": "object", "properties": {
                    "service": { "type": "string" }, "instance_id": { "type": "string" }, "applied_version": { "type": "integer" },
                    "first_seen_ms": { "type": "integer" }, "last_seen_ms": { "type": "integer" }, "live": { "type": "boolean" },
                    "uses_migration": { "type": "boolean",
                        "description": "In a migration's list: whether the instance's heartbeats name the migration (it evaluates it or runs its backfill); absent in the fleet's list" } } },
                "EventName": { "type": "string", "enum": events },
                "Role": { "type": "string", "enum": roles },
                "Permission": { "type": "string", "enum": permissions },
                "WhoAmI": { "type": "object", "properties": {
                    "token_id": { "type": "integer" }, "name": { "type": "string" },
                    "role": { "$ref": "#/components/schemas/Role" }, "scope": scope.clone(),
                    "permissions": { "type": "array", "items": { "$ref": "#/components/schemas/Permission" } } } },
                "Vocabulary": { "type": "object", "properties": {
                    "stages": { "type": "array", "items": { "$ref": "#/components/schemas/Stage" }, "description": "in order, off first" },
                    "events": { "type": "array", "items": { "type": "object", "properties": {
                        "name": { "$ref": "#/components/schemas/EventName" }, "label": { "type": "string" },
                        "permission": { "$ref": "#/components/schemas/Permission" },
                        "milestone": { "type": "boolean", "description": "a fact recorded once it has happened (the others steer or report a running backfill)" } } } },
                    "latency_buckets": { "type": "array", "description": "one per latency histogram bucket, in order", "items": { "type": "object", "properties": {
                        "upper_bound_us": { "type": ["integer", "null"], "description": "null for the last bucket: everything slower than the largest bound" },
                        "label": { "type": "string" } } } } } },
                "CreateToken": { "type": "object", "required": ["name", "role"], "additionalProperties": false, "properties": {
                    "name": label.clone(), "role": { "$ref": "#/components/schemas/Role" },
                    "scope": scope.clone() } },
                "BackfillCheckpoint": { "type": "object", "required": ["rows_done"], "additionalProperties": false, "properties": {
                    "cursor": { "type": "string", "maxLength": 4096, "pattern": "^[^\\u0000]*$", "description": "opaque keyset position (the last key processed): any text but NUL; empty for none" },
                    "rows_done": count.clone(), "rows_total_estimate": count,
                    "runner": { "type": "string", "maxLength": 128, "pattern": format!("^[^{CONTROL}]*$"),
                        "description": "who runs it (service/instance), up to 128 bytes of one line; empty: the token's name" },
                    "started_version": { "type": ["integer", "null"], "minimum": 0, "maximum": u64::MAX, "description": "the run this runner belongs to (backfill.started_version); a checkpoint from an earlier, cancelled run is refused (422)" },
                    "throttle": { "type": ["object", "null"], "additionalProperties": false, "description": "whether the runner holds between batches for the database's health", "properties": {
                        "reason": { "type": "string", "maxLength": 1024, "description": "why it holds; empty: it does not" },
                        "held_ms": { "type": "integer", "minimum": 0, "description": "how long the current hold has lasted" },
                        "throttled_ms": { "type": "integer", "minimum": 0, "description": "time held over the whole backfill" } } } } },
                "BackfillProgress": { "type": "object", "properties": {
                    "key": { "type": "string" }, "status": { "type": "string", "enum": backfill_statuses },
                    "paused": { "type": "boolean" }, "cursor": { "type": "string" },
                    "rows_done": { "type": "integer" }, "rows_total_estimate": { "type": "integer" },
                    "rate_rows_per_second": { "type": "number" }, "eta_seconds": { "type": ["integer", "null"] },
                    "runner": { "type": "string" }, "updated_at_ms": { "type": ["integer", "null"] },
                    "throttle": { "type": "object", "description": "whether the runner holds between batches for the database's health, and why", "properties": {
                        "throttled": { "type": "boolean" }, "reason": { "type": "string" },
                        "since_ms": { "type": ["integer", "null"] }, "throttled_seconds": { "type": "number" } } },
                    "settings": { "$ref": "#/components/schemas/BackfillSettings" },
                    "settings_changed": { "type": "object", "description": "who last changed the settings, when and why; absent if never",
                        "required": ["by", "at_ms", "reason"], "properties": {
                        "by": { "type": "string" }, "at_ms": { "type": "integer" }, "reason": { "type": "string" } } } } },
                "BackfillSettings": { "type": "object",
                    "description": "absent: the runner's own value; for thresholds 0 turns the signal off",
                    "properties": settings.clone() },
                "BackfillSettingsChange": { "type": "object", "additionalProperties": false, "required": ["reason"],
                    "description": "the settings given replace those stored; reset first clears them all (absent: the runner's own value; for thresholds 0 turns the signal off)",
                    "properties": settings_change },
                "GateReport": { "type": "object", "properties": {
                    "key": { "type": "string" }, "passed": { "type": "boolean" },
                    "checks": { "type": "array", "items": { "$ref": "#/components/schemas/GateCheck" } },
                    "soak_ends_at_ms": { "type": ["integer", "null"] }, "evaluated_at_ms": { "type": "integer" } } },
                "GateCheck": { "type": "object", "required": ["id", "passed", "evidence", "remedy"], "properties": {
                    "id": { "type": "string", "enum": check_ids },
                    "passed": { "type": "boolean" }, "evidence": { "type": "string" },
                    "remedy": { "type": "string", "description": "what would make it pass; empty when it passes" } } },
                "UsageReport": usage_report,
                "Error": { "type": "object", "required": ["code", "message"],
                    "description": "The body of every error answer, with Content-Type application/json; also 404 for an unknown route and 405 (method_not_allowed, with Allow) on any route. Only a request hyper cannot parse (400/414/431) gets an empty body.",
                    "properties": {
                    "code": { "type": "string", "enum": crate::error::ApiError::CODES },
                    "message": { "type": "string" }, "rule": { "type": "integer", "minimum": 1, "maximum": 9 },
                    "current": { "$ref": "#/components/schemas/Migration" } } }
            }
        }
    });
    add_ofrep(&mut doc, &sides);
    name_operations(&mut doc);
    doc
}

/// The OFREP endpoints (OpenFeature's remote evaluation protocol), with the protocol's own
/// failure bodies rather than the API's `Error`.
fn add_ofrep(doc: &mut Value, sides: &[&str]) {
    let side = json!({ "type": "string", "enum": sides });
    let failure = |codes: &[&str]| {
        json!({ "type": "object", "required": ["errorCode", "errorDetails"], "properties": {
            "key": { "type": "string" }, "errorCode": { "type": "string", "enum": codes },
            "errorDetails": { "type": "string" } } })
    };
    let request = json!({ "required": true, "content": { "application/json": { "schema": {
        "type": "object", "properties": { "context": { "type": "object",
            "description": "The evaluation context; absent: no entity",
            "properties": { "targetingKey": { "type": "string", "maxLength": 1024,
                "description": "The entity key (a user id, an order id): bucketed as the client crate buckets it; absent: the operation has no entity and gets the trailing stage" } } } } } } } });
    let api_error = |description: &str| {
        json!({ "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
    };
    let schemas = &mut doc["components"]["schemas"];
    schemas["OfrepEvaluation"] = json!({ "type": "object",
        "required": ["key", "value", "variant", "reason", "metadata"],
        "description": "A migration's stage for one entity: the variant is the stage, the value the read/write plan",
        "properties": {
            "key": { "type": "string" },
            "variant": { "$ref": "#/components/schemas/Stage" },
            "reason": { "type": "string", "enum": ["SPLIT", "STATIC"],
                "description": "SPLIT: the entity's bucket chose between two stages (a front strictly between 0 and 100%); STATIC: every entity gets this stage" },
            "value": { "type": "object", "required": ["stage", "write", "authoritative_write", "read", "return_value", "shadow_compare"],
                "properties": { "stage": { "$ref": "#/components/schemas/Stage" }, "write": side.clone(),
                    "authoritative_write": side.clone(), "read": side.clone(), "return_value": side,
                    "shadow_compare": { "type": "boolean" } } },
            "metadata": { "type": "object", "required": ["version", "front_stage", "rollout_bp"], "properties": {
                "version": { "type": "integer" }, "front_stage": { "$ref": "#/components/schemas/Stage" },
                "rollout_bp": { "$ref": "#/components/schemas/BasisPoints" },
                "bucket": { "type": "integer", "minimum": 0, "maximum": 9999, "description": "the entity's bucket; absent without a targeting key" } } } } });
    schemas["OfrepBulkEvaluation"] = json!({ "type": "object", "required": ["flags", "metadata"], "properties": {
        "flags": { "type": "array", "items": { "$ref": "#/components/schemas/OfrepEvaluation" } },
        "metadata": { "type": "object", "properties": { "version": { "type": "integer" } } } } });
    let paths = &mut doc["paths"];
    paths["/ofrep/v1/evaluate/flags/{key}"] = json!({ "post": {
        "summary": "OpenFeature remote evaluation (OFREP) of one migration for an entity (any role; a scoped token only within its scope)",
        "security": [{ "bearer": [] }, { "apiKey": [] }],
        "parameters": [{ "name": "key", "in": "path", "required": true, "schema": { "type": "string" }, "example": "orders.email-split" }],
        "requestBody": request.clone(),
        "responses": {
            "200": { "description": "The stage and plan", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/OfrepEvaluation" } } } },
            "400": { "description": "A body that is not JSON (PARSE_ERROR) or a malformed context (INVALID_CONTEXT); a path the router cannot read gets the API's Error",
                "content": { "application/json": { "schema": { "anyOf": [
                    failure(&["PARSE_ERROR", "INVALID_CONTEXT"]), { "$ref": "#/components/schemas/Error" }] } } } },
            "404": { "description": "No such migration (FLAG_NOT_FOUND)",
                "content": { "application/json": { "schema": failure(&["FLAG_NOT_FOUND"]) } } },
            "401": api_error("Missing, malformed, unknown or revoked token"),
            "403": api_error("The token's scope does not cover the migration"),
            "408": api_error("The body did not arrive whole within the server's --request-body-timeout"),
            "413": api_error("Body larger than 64 KiB (65536 bytes)") } } });
    paths["/ofrep/v1/evaluate/flags"] = json!({ "post": {
        "summary": "OpenFeature remote evaluation (OFREP) of every migration the token may see, for an entity",
        "security": [{ "bearer": [] }, { "apiKey": [] }],
        "parameters": [{ "name": "If-None-Match", "in": "header", "required": false, "schema": { "type": "string" },
            "description": "The ETag of an earlier answer for the same token and context: 304 while nothing changed" }],
        "requestBody": request,
        "responses": {
            "200": { "description": "Every visible migration evaluated",
                "headers": { "ETag": { "schema": { "type": "string" }, "description": "the state version, the token and the targeting key" } },
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/OfrepBulkEvaluation" } } } },
            "304": { "description": "Not modified since the ETag given",
                "headers": { "ETag": { "schema": { "type": "string" } } } },
            "400": { "description": "A body that is not JSON (PARSE_ERROR) or a malformed context (INVALID_CONTEXT); a path the router cannot read gets the API's Error",
                "content": { "application/json": { "schema": { "anyOf": [
                    failure(&["PARSE_ERROR", "INVALID_CONTEXT"]), { "$ref": "#/components/schemas/Error" }] } } } },
            "401": api_error("Missing, malformed, unknown or revoked token"),
            "408": api_error("The body did not arrive whole within the server's --request-body-timeout"),
            "413": api_error("Body larger than 64 KiB (65536 bytes)") } } });
    doc["components"]["securitySchemes"]["apiKey"] = json!({ "type": "apiKey", "in": "header", "name": "X-API-Key", "description": "OFREP only: the same token as the bearer one" });
}

/// Every operation's `operationId` (what a generated client names its method) and tag (how it
/// groups them), in one table: a route added without a row here fails the document's test.
#[rustfmt::skip]
const OPERATIONS: &[(&str, &str, &str, &str)] = &[
    ("post", "/v1/migrations", "createMigration", "migrations"),
    ("get", "/v1/migrations", "listMigrations", "migrations"),
    ("get", "/v1/migrations/{key}", "getMigration", "migrations"),
    ("post", "/v1/migrations/{key}/rollout", "setRollout", "migrations"),
    ("post", "/v1/migrations/{key}/advance", "advance", "migrations"),
    ("post", "/v1/migrations/{key}/retreat", "retreat", "migrations"),
    ("post", "/v1/migrations/{key}/events", "recordEvent", "migrations"),
    ("get", "/v1/migrations/{key}/audit", "audit", "migrations"),
    ("get", "/v1/migrations/{key}/decide", "decide", "evaluation"),
    ("get", "/v1/snapshot", "getSnapshot", "evaluation"),
    ("get", "/v1/watch", "watch", "evaluation"),
    ("post", "/v1/clients/heartbeat", "heartbeat", "clients"),
    ("get", "/v1/clients", "listInstances", "clients"),
    ("post", "/v1/clients/telemetry", "reportTelemetry", "clients"),
    ("get", "/v1/migrations/{key}/instances", "listMigrationInstances", "clients"),
    ("get", "/v1/migrations/{key}/traffic", "traffic", "evidence"),
    ("get", "/v1/migrations/{key}/actions", "dryRunActions", "migrations"),
    ("get", "/v1/plans", "listPlans", "plans"),
    ("get", "/v1/approvals", "listApprovals", "approvals"),
    ("get", "/v1/webhooks", "listWebhooks", "webhooks"),
    ("post", "/v1/webhooks", "addWebhook", "webhooks"),
    ("delete", "/v1/webhooks/{id}", "removeWebhook", "webhooks"),
    ("post", "/v1/webhooks/{id}/test", "testWebhook", "webhooks"),
    ("get", "/v1/webhooks/{id}/deliveries", "webhookDeliveries", "webhooks"),
    ("get", "/v1/approvals/{id}", "getApproval", "approvals"),
    ("post", "/v1/approvals/{id}/approve", "approveChange", "approvals"),
    ("post", "/v1/approvals/{id}/reject", "rejectChange", "approvals"),
    ("get", "/v1/plan-templates", "listPlanTemplates", "plans"),
    ("put", "/v1/plan-templates/{name}", "setPlanTemplate", "plans"),
    ("delete", "/v1/plan-templates/{name}", "removePlanTemplate", "plans"),
    ("get", "/v1/migrations/{key}/plan", "getPlan", "plans"),
    ("put", "/v1/migrations/{key}/plan", "setPlan", "plans"),
    ("post", "/v1/migrations/{key}/plan/pause", "pausePlan", "plans"),
    ("post", "/v1/migrations/{key}/plan/resume", "resumePlan", "plans"),
    ("get", "/v1/migrations/{key}/gate", "gate", "evidence"),
    ("get", "/v1/migrations/{key}/usage", "usage", "evidence"),
    ("get", "/v1/migrations/{key}/mismatches", "mismatches", "evidence"),
    ("get", "/v1/lifecycle", "lifecycle", "evidence"),
    ("get", "/v1/migrations/{key}/backfill", "getBackfill", "backfill"),
    ("put", "/v1/migrations/{key}/backfill/checkpoint", "checkpointBackfill", "backfill"),
    ("put", "/v1/migrations/{key}/backfill/settings", "setBackfillSettings", "backfill"),
    ("post", "/v1/tokens", "createToken", "tokens"),
    ("get", "/v1/tokens", "listTokens", "tokens"),
    ("post", "/v1/tokens/{id}/revoke", "revokeToken", "tokens"),
    ("get", "/v1/whoami", "whoami", "tokens"),
    ("get", "/v1/vocabulary", "vocabulary", "meta"),
    ("get", "/healthz", "healthz", "meta"),
    ("get", "/readyz", "readyz", "meta"),
    ("get", "/metrics", "metrics", "meta"),
    ("get", "/openapi.json", "openapi", "meta"),
    ("post", "/ofrep/v1/evaluate/flags/{key}", "ofrepEvaluateFlag", "OFREP"),
    ("post", "/ofrep/v1/evaluate/flags", "ofrepEvaluateFlags", "OFREP"),
];

fn name_operations(doc: &mut Value) {
    for (method, path, id, tag) in OPERATIONS {
        if let Some(operation) = doc["paths"].get_mut(*path).and_then(|p| p.get_mut(*method)) {
            operation["operationId"] = json!(id);
            operation["tags"] = json!([tag]);
        }
    }
    doc["tags"] = json!([
        { "name": "migrations", "description": "A migration's stage and rollout, changed under the safety rules" },
        { "name": "evaluation", "description": "Which stage an entity is at: snapshots, watch streams, server-side decide" },
        { "name": "clients", "description": "Client instances: heartbeats (acknowledgements) and telemetry" },
        { "name": "evidence", "description": "What the gate judges: traffic, database usage, mismatches, the gate itself" },
        { "name": "backfill", "description": "Backfill progress, checkpoints and settings" },
        { "name": "plans", "description": "Migration plans: the steps a migration takes by itself" },
        { "name": "approvals", "description": "Four eyes: changes a second operator approves before they are applied" },
        { "name": "webhooks", "description": "Subscriptions to a migration's events, signed and delivered at least once" },
        { "name": "tokens", "description": "API tokens, their roles and scopes" },
        { "name": "meta", "description": "Health, readiness, metrics, this document, the API's vocabulary" },
        { "name": "OFREP", "description": "OpenFeature remote evaluation: the stage as the variant, the plan as the value" }
    ]);
}
