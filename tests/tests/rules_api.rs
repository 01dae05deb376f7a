//! End-to-end tests of the safety rules and of the error mapping, against the real server over
//! both HTTP/JSON and gRPC, on SQLite and Postgres.
//!
//! Each rule scenario drives one migration through one protocol ([`Via`]) on a fresh server.
//! Every refusal is checked for its rule number, its status on that protocol, a message that
//! names what would allow the change, and for having changed nothing (the migration, its audit
//! log and the global snapshot version are as before). The same change is then shown to pass
//! once its precondition holds.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use switchyard_domain::{BasisPoints, Front, Stage, Version};
use switchyard_proto::v1 as pb;
use switchyard_tests::{CLIENT_TTL, Db, TestServer, grpc_detail, request_as};
use tonic::Code;

/// The reason given by every step that is not about reasons.
const REASON: &str = "e2e: rules_api step";
/// The key of the migration most scenarios drive.
const KEY: &str = "users.username-to-handle";
/// Stages in order, as the JSON API spells them.
const STAGES: [&str; 7] = [
    "off",
    "dual_write",
    "shadow",
    "live",
    "rampdown",
    "complete",
    "contracted",
];

// ---------------------------------------------------------------------------------------------
// What a migration looks like and how a refusal looks, the same on both protocols
// ---------------------------------------------------------------------------------------------

/// The parts of a migration the rules move, read alike from JSON and from protobuf.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    version: u64,
    /// As the JSON API spells it (`dual_write`).
    stage: String,
    rollout_bp: u32,
    old_shape_stale: bool,
    expand_applied: bool,
    /// `none`, `not_started`, `running` or `complete`.
    backfill: String,
}

impl State {
    fn from_json(m: &Value) -> State {
        let field = |name: &str| m.get(name).unwrap_or_else(|| panic!("no {name} in {m}"));
        State {
            version: field("version").as_u64().expect("version"),
            stage: field("stage").as_str().expect("stage").to_owned(),
            rollout_bp: field("rollout_bp").as_u64().expect("rollout_bp") as u32,
            old_shape_stale: field("old_shape_stale").as_bool().expect("old_shape_stale"),
            expand_applied: field("expand_applied").as_bool().expect("expand_applied"),
            backfill: field("backfill")["status"]
                .as_str()
                .expect("backfill status")
                .to_owned(),
        }
    }

    fn from_pb(m: &pb::Migration) -> State {
        let backfill = m.backfill.as_ref().expect("backfill").status();
        State {
            version: m.version,
            stage: enum_name(m.stage().as_str_name(), "STAGE_"),
            rollout_bp: m.rollout_bp,
            old_shape_stale: m.old_shape_stale,
            expand_applied: m.expand_applied,
            backfill: enum_name(backfill.as_str_name(), "BACKFILL_STATUS_"),
        }
    }

    fn front(&self) -> Front {
        Front::new(
            Stage::parse(&self.stage).expect("known stage"),
            BasisPoints::new(self.rollout_bp).expect("rollout in range"),
        )
    }
}

/// `STAGE_DUAL_WRITE` → `dual_write`.
fn enum_name(proto_name: &str, prefix: &str) -> String {
    proto_name
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{proto_name} lacks {prefix}"))
        .to_ascii_lowercase()
}

fn pb_stage(name: &str) -> pb::Stage {
    pb::Stage::from_str_name(&format!("STAGE_{}", name.to_ascii_uppercase()))
        .unwrap_or_else(|| panic!("no proto stage for {name}"))
}

/// A number the proto does not define, sent for a stage or event name it does not know, so a
/// test can send an unknown stage or event over gRPC just as over HTTP.
const UNKNOWN_ENUM_NUMBER: i32 = 99;

/// The wire number of a stage given by its JSON name (`dual_write`); exact names only.
fn pb_stage_number(name: &str) -> i32 {
    pb::Stage::from_str_name(&format!("STAGE_{}", name.to_ascii_uppercase()))
        .filter(|_| STAGES.contains(&name))
        .map_or(UNKNOWN_ENUM_NUMBER, |s| s as i32)
}

/// The wire number of an event given by its JSON name (`expand_applied`); exact names only.
fn pb_event_number(name: &str) -> i32 {
    pb::EventKind::from_str_name(&format!("EVENT_KIND_{}", name.to_ascii_uppercase()))
        .filter(|_| name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .map_or(UNKNOWN_ENUM_NUMBER, |e| e as i32)
}

fn pb_side(name: &Value) -> pb::Side {
    let name = name.as_str().expect("side name");
    pb::Side::from_str_name(&format!("SIDE_{}", name.to_ascii_uppercase()))
        .unwrap_or_else(|| panic!("no proto side for {name}"))
}

/// The status an error travelled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Http(StatusCode),
    Grpc(Code),
}

/// An error answer, read alike from the JSON error body and from the gRPC status details.
#[derive(Debug)]
struct Refusal {
    /// The stable code (`rule_refused`, `stale_version`, `invalid_argument`, ...).
    code: String,
    /// The safety rule, 0 if none.
    rule: u32,
    message: String,
    wire: Wire,
    /// The unchanged state, on refused and stale mutations.
    current: Option<State>,
}

impl Refusal {
    fn from_http(status: StatusCode, body: &Value) -> Refusal {
        let text = |name: &str| {
            body[name]
                .as_str()
                .unwrap_or_else(|| panic!("HTTP {status}: no {name} in error body {body}"))
                .to_owned()
        };
        Refusal {
            code: text("code"),
            rule: body["rule"].as_u64().map_or(0, |r| r as u32),
            message: text("message"),
            wire: Wire::Http(status),
            current: body.get("current").map(State::from_json),
        }
    }

    fn from_grpc(status: &tonic::Status) -> Refusal {
        let detail = grpc_detail(status);
        Refusal {
            code: detail.code,
            rule: detail.rule,
            message: status.message().to_owned(),
            wire: Wire::Grpc(status.code()),
            current: detail.current.as_ref().map(State::from_pb),
        }
    }

    /// Asserts the code, the rule, the status `via` maps the code to, and that the message
    /// contains `phrase` (and names the rule, if there is one).
    #[track_caller]
    fn assert(&self, via: Via, code: &str, rule: u32, phrase: &str) {
        assert_eq!(self.code, code, "{self:#?}");
        assert_eq!(self.rule, rule, "{self:#?}");
        assert_eq!(self.wire, via.wire(code), "{self:#?}");
        assert!(
            self.message.contains(phrase),
            "message {:?} does not say {phrase:?}",
            self.message
        );
        if rule != 0 {
            assert!(
                self.message.contains(&format!("rule {rule}")),
                "message {:?} does not name rule {rule}",
                self.message
            );
        }
    }

    /// Asserts a safety-rule refusal (HTTP 422 / gRPC FAILED_PRECONDITION).
    #[track_caller]
    fn assert_rule(&self, via: Via, rule: u32, phrase: &str) {
        self.assert(via, "rule_refused", rule, phrase);
    }
}

/// One audit log entry, read alike from both protocols.
#[derive(Debug, Clone, PartialEq)]
struct AuditEntry {
    version: u64,
    actor: String,
    action: String,
    reason: String,
    before: Value,
    after: Value,
}

// ---------------------------------------------------------------------------------------------
// The two protocols behind one interface
// ---------------------------------------------------------------------------------------------

/// The protocol a scenario talks (with the admin token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Http,
    Grpc,
}

/// A change to a migration.
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    /// Ramp the current stage to this many basis points.
    Ramp(u32),
    /// Ramp naming the stage the front ends on.
    RampOn(&'a str, u32),
    Advance,
    Retreat,
    /// Record an event, by its JSON name (`expand_applied`).
    Record(&'a str),
}

type Answer = Result<State, Refusal>;

fn http_answer((status, body): (StatusCode, Value), success: StatusCode) -> Answer {
    if status == success {
        Ok(State::from_json(&body))
    } else {
        Err(Refusal::from_http(status, &body))
    }
}

fn grpc_answer(result: Result<tonic::Response<pb::Migration>, tonic::Status>) -> Answer {
    match result {
        Ok(response) => Ok(State::from_pb(response.get_ref())),
        Err(status) => Err(Refusal::from_grpc(&status)),
    }
}

impl Via {
    const BOTH: [Via; 2] = [Via::Http, Via::Grpc];

    /// The status each error code travels with on this protocol (the README's API section and the proto).
    fn wire(self, code: &str) -> Wire {
        let (http, grpc) = match code {
            "invalid_argument" => (StatusCode::BAD_REQUEST, Code::InvalidArgument),
            "not_found" => (StatusCode::NOT_FOUND, Code::NotFound),
            "already_exists" => (StatusCode::CONFLICT, Code::AlreadyExists),
            "stale_version" => (StatusCode::CONFLICT, Code::Aborted),
            "rule_refused" | "not_applicable" => {
                (StatusCode::UNPROCESSABLE_ENTITY, Code::FailedPrecondition)
            }
            "unauthenticated" => (StatusCode::UNAUTHORIZED, Code::Unauthenticated),
            "permission_denied" => (StatusCode::FORBIDDEN, Code::PermissionDenied),
            "payload_too_large" => (StatusCode::PAYLOAD_TOO_LARGE, Code::ResourceExhausted),
            other => panic!("no wire mapping for error code {other}"),
        };
        match self {
            Via::Http => Wire::Http(http),
            Via::Grpc => Wire::Grpc(grpc),
        }
    }

    async fn create(
        self,
        s: &TestServer,
        key: &str,
        has_backfill: bool,
        expected_services: &[&str],
        reason: &str,
    ) -> Answer {
        match self {
            Via::Http => {
                let body = json!({
                    "key": key, "entity_kind": "user_id", "has_backfill": has_backfill,
                    "expected_services": expected_services, "reason": reason,
                });
                http_answer(s.post("/v1/migrations", body).await, StatusCode::CREATED)
            }
            Via::Grpc => {
                let request = pb::CreateMigrationRequest {
                    key: key.to_owned(),
                    entity_kind: "user_id".to_owned(),
                    has_backfill,
                    expected_services: expected_services.iter().map(|s| s.to_string()).collect(),
                    reason: reason.to_owned(),
                    ..Default::default()
                };
                grpc_answer(s.grpc.clone().create_migration(s.req(request)).await)
            }
        }
    }

    async fn ramp(
        self,
        s: &TestServer,
        key: &str,
        stage: Option<&str>,
        rollout_bp: u32,
        expected_version: u64,
        reason: &str,
    ) -> Answer {
        match self {
            Via::Http => {
                let mut body = json!({
                    "rollout_bp": rollout_bp, "expected_version": expected_version, "reason": reason,
                });
                if let Some(stage) = stage {
                    body["stage"] = stage.into();
                }
                let path = format!("/v1/migrations/{key}/rollout");
                http_answer(s.post(&path, body).await, StatusCode::OK)
            }
            Via::Grpc => {
                let request = pb::SetRolloutRequest {
                    key: key.to_owned(),
                    stage: stage.map_or(pb::Stage::Unspecified as i32, pb_stage_number),
                    rollout_bp,
                    expected_version,
                    reason: reason.to_owned(),
                    ..Default::default()
                };
                grpc_answer(s.grpc.clone().set_rollout(s.req(request)).await)
            }
        }
    }

    async fn advance(self, s: &TestServer, key: &str, expected: u64, reason: &str) -> Answer {
        self.step(s, key, "advance", expected, reason).await
    }

    async fn retreat(self, s: &TestServer, key: &str, expected: u64, reason: &str) -> Answer {
        self.step(s, key, "retreat", expected, reason).await
    }

    async fn step(
        self,
        s: &TestServer,
        key: &str,
        direction: &str,
        expected_version: u64,
        reason: &str,
    ) -> Answer {
        match self {
            Via::Http => {
                let body = json!({ "expected_version": expected_version, "reason": reason });
                let path = format!("/v1/migrations/{key}/{direction}");
                http_answer(s.post(&path, body).await, StatusCode::OK)
            }
            Via::Grpc => {
                let request = s.req(pb::StepRequest {
                    key: key.to_owned(),
                    expected_version,
                    reason: reason.to_owned(),
                    ..Default::default()
                });
                let mut grpc = s.grpc.clone();
                grpc_answer(if direction == "advance" {
                    grpc.advance(request).await
                } else {
                    grpc.retreat(request).await
                })
            }
        }
    }

    async fn record(
        self,
        s: &TestServer,
        key: &str,
        event: &str,
        expected_version: u64,
        reason: &str,
    ) -> Answer {
        match self {
            Via::Http => {
                let body = json!({
                    "event": event, "expected_version": expected_version, "reason": reason,
                });
                let path = format!("/v1/migrations/{key}/events");
                http_answer(s.post(&path, body).await, StatusCode::OK)
            }
            Via::Grpc => {
                let request = pb::RecordEventRequest {
                    key: key.to_owned(),
                    event: pb_event_number(event),
                    expected_version,
                    reason: reason.to_owned(),
                    ..Default::default()
                };
                grpc_answer(s.grpc.clone().record_event(s.req(request)).await)
            }
        }
    }

    async fn apply(
        self,
        s: &TestServer,
        key: &str,
        step: Step<'_>,
        expected: u64,
        reason: &str,
    ) -> Answer {
        match step {
            Step::Ramp(bp) => self.ramp(s, key, None, bp, expected, reason).await,
            Step::RampOn(stage, bp) => self.ramp(s, key, Some(stage), bp, expected, reason).await,
            Step::Advance => self.advance(s, key, expected, reason).await,
            Step::Retreat => self.retreat(s, key, expected, reason).await,
            Step::Record(event) => self.record(s, key, event, expected, reason).await,
        }
    }

    /// Reports a client instance; returns the server's snapshot version.
    async fn heartbeat(
        self,
        s: &TestServer,
        service: &str,
        instance_id: &str,
        applied_version: u64,
    ) -> Result<u64, Refusal> {
        match self {
            Via::Http => {
                let body = json!({
                    "service": service, "instance_id": instance_id,
                    "applied_version": applied_version,
                });
                let (status, body) = s.post("/v1/clients/heartbeat", body).await;
                if status == StatusCode::OK {
                    Ok(body["snapshot_version"].as_u64().expect("snapshot_version"))
                } else {
                    Err(Refusal::from_http(status, &body))
                }
            }
            Via::Grpc => {
                let request = pb::HeartbeatRequest {
                    service: service.to_owned(),
                    instance_id: instance_id.to_owned(),
                    applied_version,
                    migrations: Vec::new(),
                    leaving: false,
                };
                match s.grpc.clone().heartbeat(s.req(request)).await {
                    Ok(r) => Ok(r.get_ref().snapshot_version),
                    Err(status) => Err(Refusal::from_grpc(&status)),
                }
            }
        }
    }

    /// The migration's audit log, newest first.
    async fn audit(self, s: &TestServer, key: &str) -> Vec<AuditEntry> {
        match self {
            Via::Http => {
                let (status, body) = s
                    .get(&format!("/v1/migrations/{key}/audit?limit=500"))
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let entries = body["entries"].as_array().expect("entries");
                entries
                    .iter()
                    .map(|e| AuditEntry {
                        version: e["version"].as_u64().expect("version"),
                        actor: e["actor"].as_str().expect("actor").to_owned(),
                        action: e["action"].as_str().expect("action").to_owned(),
                        reason: e["reason"].as_str().expect("reason").to_owned(),
                        before: e["before"].clone(),
                        after: e["after"].clone(),
                    })
                    .collect()
            }
            Via::Grpc => {
                let request = pb::AuditRequest {
                    key: key.to_owned(),
                    limit: 500,
                    before_id: 0,
                };
                let response = s.grpc.clone().audit(s.req(request)).await.expect("audit");
                let parse = |raw: &str| serde_json::from_str(raw).unwrap_or(Value::Null);
                response
                    .into_inner()
                    .entries
                    .into_iter()
                    .map(|e| AuditEntry {
                        version: e.version,
                        before: parse(&e.before_json),
                        after: parse(&e.after_json),
                        actor: e.actor,
                        action: e.action,
                        reason: e.reason,
                    })
                    .collect()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Driving one migration
// ---------------------------------------------------------------------------------------------

/// Everything a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    migration: Value,
    audit_len: usize,
    snapshot_version: u64,
}

impl Fingerprint {
    async fn take(s: &TestServer, key: &str) -> Fingerprint {
        Fingerprint {
            migration: s.migration(key).await,
            audit_len: audit_len(s, key).await,
            snapshot_version: s.snapshot_version().await,
        }
    }
}

async fn audit_len(s: &TestServer, key: &str) -> usize {
    let (status, body) = s
        .get(&format!("/v1/migrations/{key}/audit?limit=500"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["entries"].as_array().expect("entries").len()
}

/// One migration driven through one protocol, tracking the state the server last returned.
struct Flow<'s> {
    s: &'s TestServer,
    via: Via,
    key: String,
    state: State,
}

impl<'s> Flow<'s> {
    async fn create(
        s: &'s TestServer,
        via: Via,
        key: &str,
        has_backfill: bool,
        expected_services: &[&str],
    ) -> Flow<'s> {
        let state = via
            .create(s, key, has_backfill, expected_services, REASON)
            .await
            .unwrap_or_else(|r| panic!("{via:?}: creating {key} was refused: {r:#?}"));
        assert_eq!((state.stage.as_str(), state.rollout_bp), ("off", 10_000));
        Flow {
            s,
            via,
            key: key.to_owned(),
            state,
        }
    }

    async fn attempt(&mut self, step: Step<'_>, expected: u64, reason: &str) -> Answer {
        let answer = self
            .via
            .apply(self.s, &self.key, step, expected, reason)
            .await;
        if let Ok(state) = &answer {
            self.state = state.clone();
        }
        answer
    }

    /// Applies `step` at the current version; it must be allowed, and the server's snapshot
    /// must already show the new state when the response arrives.
    async fn ok(&mut self, step: Step<'_>) -> State {
        let before = self.state.clone();
        let state = self
            .attempt(step, before.version, REASON)
            .await
            .unwrap_or_else(|r| {
                panic!("{:?}: {step:?} on {before:?} was refused: {r:#?}", self.via)
            });
        assert!(state.version > before.version, "{step:?}: {state:?}");
        assert_eq!(State::from_json(&self.s.migration(&self.key).await), state);
        state
    }

    /// Applies `step` at the current version with the usual reason; see [`Flow::refused_with`].
    async fn refused(&mut self, step: Step<'_>) -> Refusal {
        let version = self.state.version;
        self.refused_with(step, version, REASON).await
    }

    /// Attempts `step`; it must be refused and change nothing: the migration, its audit log
    /// and the global snapshot version stay as they were, and a refusal that carries the
    /// current state carries exactly that.
    async fn refused_with(&mut self, step: Step<'_>, expected: u64, reason: &str) -> Refusal {
        let before = Fingerprint::take(self.s, &self.key).await;
        let refusal = match self.attempt(step, expected, reason).await {
            Ok(state) => panic!("{:?}: {step:?} was allowed: {state:?}", self.via),
            Err(refusal) => refusal,
        };
        let after = Fingerprint::take(self.s, &self.key).await;
        assert_eq!(
            before, after,
            "{:?}: refused {step:?} changed something",
            self.via
        );
        assert_eq!(State::from_json(&after.migration), self.state);
        if let Some(current) = &refusal.current {
            assert_eq!(current, &self.state, "the refusal's current state");
        }
        refusal
    }

    /// Moves the front forward to `(stage, rollout_bp)` the simple way: expand recorded, each
    /// stage ramped to 100% and advanced, a backfill run while every entity dual-writes.
    async fn walk_to(&mut self, stage: &str, rollout_bp: u32) {
        let index = |name: &str| STAGES.iter().position(|s| *s == name).expect("stage");
        let target = index(stage);
        while index(&self.state.stage) < target {
            if self.state.stage == "off" {
                if !self.state.expand_applied {
                    self.ok(Step::Record("expand_applied")).await;
                }
                self.ok(Step::Advance).await;
                continue;
            }
            if self.state.rollout_bp != 10_000 {
                self.ok(Step::Ramp(10_000)).await;
            }
            if self.state.stage == "dual_write" && self.state.backfill == "not_started" {
                self.ok(Step::Record("backfill_started")).await;
                self.ok(Step::Record("backfill_complete")).await;
            }
            self.ok(Step::Advance).await;
        }
        if self.state.rollout_bp != rollout_bp {
            self.ok(Step::Ramp(rollout_bp)).await;
        }
        assert_eq!(
            (self.state.stage.as_str(), self.state.rollout_bp),
            (stage, rollout_bp)
        );
    }

    /// Reports a live client instance that has applied `applied_version`.
    async fn heartbeat(&self, service: &str, instance_id: &str, applied_version: u64) {
        let current = self
            .via
            .heartbeat(self.s, service, instance_id, applied_version)
            .await
            .unwrap_or_else(|r| panic!("heartbeat refused: {r:#?}"));
        assert!(current >= applied_version);
    }
}

// ---------------------------------------------------------------------------------------------
// Safety rules, each refused and then allowed, over both protocols
// ---------------------------------------------------------------------------------------------

switchyard_tests::both_databases!(
    rule_1_stages_move_one_step_at_a_time,
    rule_2_leaving_off_needs_the_expand_recorded,
    rule_3_backfill_waits_for_every_live_client_to_dual_write,
    rule_4_shadow_waits_for_the_backfill,
    rule_5_stopping_old_writes_waits_for_every_live_client_at_rampdown,
    rule_6_no_old_values_after_complete_until_repaired,
    rule_7_contracted_needs_the_gate,
    rule_8_stale_versions_are_refused_with_the_current_state,
    rule_9_every_change_needs_a_reason_and_is_audited,
);

async fn rule_1_stages_move_one_step_at_a_time(db: Db) {
    for via in Via::BOTH {
        let s = TestServer::start(db).await;
        let mut f = Flow::create(&s, via, KEY, false, &[]).await;
        f.walk_to("dual_write", 5_000).await;

        f.refused(Step::Advance)
            .await
            .assert_rule(via, 1, "ramp dual_write to 100% first");
        f.refused(Step::Retreat)
            .await
            .assert_rule(via, 1, "ramp dual_write down to 0% first");
        f.refused(Step::RampOn("shadow", 100)).await.assert_rule(
            via,
            1,
            "advance to shadow once dual_write is at 100%",
        );
        f.refused(Step::RampOn("off", 10_000)).await.assert_rule(
            via,
            1,
            "step back to off once dual_write is at 0%",
        );

        // At 100% the next stage is one step away, but the one after is still two.
        f.ok(Step::Ramp(10_000)).await;
        f.refused(Step::RampOn("live", 100)).await.assert_rule(
            via,
            1,
            "stages move one step at a time",
        );
        let advanced = f.ok(Step::Advance).await;
        assert_eq!(
            (advanced.stage.as_str(), advanced.rollout_bp),
            ("shadow", 0)
        );

        // Naming the next stage in a ramp is the same move as advancing.
        f.ok(Step::Ramp(10_000)).await;
        let on_live = f.ok(Step::RampOn("live", 1_000)).await;
        assert_eq!(
            (on_live.stage.as_str(), on_live.rollout_bp),
            ("live", 1_000)
        );

        // Stepping back needs 0%.
        f.refused(Step::Retreat)
            .await
            .assert_rule(via, 1, "ramp live down to 0% first");
        f.ok(Step::Ramp(0)).await;
        let back = f.ok(Step::Retreat).await;
        assert_eq!((back.stage.as_str(), back.rollout_bp), ("shadow", 10_000));
        s.stop().await;
    }
}

async fn rule_2_leaving_off_needs_the_expand_recorded(db: Db) {
    for via in Via::BOTH {
        let s = TestServer::start(db).await;
        let mut f = Flow::create(&s, via, KEY, false, &[]).await;
        assert!(!f.state.expand_applied);

        let phrase = format!("record {KEY} expand-applied");
        f.refused(Step::Advance).await.assert_rule(via, 2, &phrase);
        f.refused(Step::RampOn("dual_write", 0)).await.assert_rule(
            via,
            2,
            "expand DDL recorded as applied",
        );
        f.refused(Step::Ramp(0))
            .await
            .assert(via, "not_applicable", 0, "advance to dual_write");

        let recorded = f.ok(Step::Record("expand_applied")).await;
        assert!(recorded.expand_applied);
        f.refused(Step::Record("expand_applied")).await.assert(
            via,
            "not_applicable",
            0,
            "already recorded",
        );
        let advanced = f.ok(Step::Advance).await;
        assert_eq!(
            (advanced.stage.as_str(), advanced.rollout_bp),
            ("dual_write", 0)
        );
        s.stop().await;
    }
}

async fn rule_3_backfill_waits_for_every_live_client_to_dual_write(db: Db) {
    for via in Via::BOTH {
        let s = TestServer::start(db).await;
        let mut f = Flow::create(&s, via, KEY, true, &["billing"]).await;
        f.walk_to("dual_write", 5_000).await;
        f.refused(Step::Record("backfill_started"))
            .await
            .assert_rule(via, 3, "ramp dual_write to 100% first");

        let full = f.ok(Step::Ramp(10_000)).await.version;
        // api-1 runs the snapshot from before dual_write reached 100%, api-old runs an even
        // older one, and billing (an expected service) has not connected.
        f.heartbeat("api", "api-1", full - 1).await;
        f.heartbeat("api", "api-old", 1).await;
        let r = f.refused(Step::Record("backfill_started")).await;
        r.assert_rule(
            via,
            3,
            &format!(
                "instance api-1 of api has applied version {}, needs {full} or later",
                full - 1
            ),
        );
        assert!(
            r.message
                .contains("instance api-old of api has applied version 1")
        );
        assert!(
            r.message
                .contains("expected service billing has no live instance")
        );

        // api-old stops reporting and is no longer live once the client TTL has passed.
        s.clock.advance(CLIENT_TTL + Duration::from_secs(1));
        f.heartbeat("api", "api-1", full).await;
        let r = f.refused(Step::Record("backfill_started")).await;
        r.assert_rule(via, 3, "expected service billing has no live instance");
        assert!(
            !r.message.contains("api-1") && !r.message.contains("api-old"),
            "{r:#?}"
        );

        f.heartbeat("billing", "billing-1", full).await;
        let started = f.ok(Step::Record("backfill_started")).await;
        assert_eq!(started.backfill, "running");
        s.stop().await;
    }
}

async fn rule_4_shadow_waits_for_the_backfill(db: Db) {
    for via in Via::BOTH {
        let s = TestServer::start(db).await;
        let mut f = Flow::create(&s, via, KEY, true, &[]).await;
        f.walk_to("dual_write", 10_000).await;
        f.refused(Step::RampOn("shadow", 100)).await.assert_rule(
            via,
            4,
            "backfill recorded complete (it is not started)",
        );

        let started = f.ok(Step::Record("backfill_started")).await;
        assert_eq!(started.backfill, "running");
        let r = f.refused(Step::RampOn("shadow", 100)).await;
        r.assert_rule(via, 4, "(it is running)");
        assert!(r.message.contains("record backfill-complete"), "{r:#?}");

        let done = f.ok(Step::Record("backfill_complete")).await;
        assert_eq!(done.backfill, "complete");
        let ramped = f.ok(Step::RampOn("shadow", 100)).await;
        assert_eq!((ramped.stage.as_str(), ramped.rollout_bp), ("shadow", 100));
        s.stop().await;
    }
}

async fn rule_5_stopping_old_writes_waits_for_every_live_client_at_rampdown(db: Db) {
    for via in Via::BOTH {
        let s = TestServer::start(db).await;
        let mut f = Flow::create(&s, via, KEY, false, &["api"]).await;
        f.walk_to("rampdown", 10_000).await;
        let since = f.state.version;

        f.refused(Step::RampOn("complete", 100)).await.assert_rule(
            via,
            5,
            "expected service api has no live instance",
        );
        // (complete, 0%) stops no old writes yet.
        let advanced = f.ok(Step::Advance).await;
        assert_eq!(
            (advanced.stage.as_str(), advanced.rollout_bp),
            ("complete", 0)
        );
        assert!(!advanced.old_shape_stale);
        f.refused(Step::Ramp(100)).await.assert_rule(
            via,
            5,
            "expected service api has no live instance",
        );

        f.heartbeat("api", "api-1", since - 1).await;
        let r = f.refused(Step::Ramp(100)).await;
        r.assert_rule(
            via,
            5,
            &format!(
                "instance api-1 of api has applied version {}, needs {since} or later",
                since - 1
            ),
        );
        assert!(r.message.contains("needs rampdown at 100%"), "{r:#?}");

        f.heartbeat("api", "api-1", since).await;
        let ramped = f.ok(Step::Ramp(100)).await;
        assert_eq!(
            (ramped.stage.as_str(), ramped.rollout_bp),
            ("complete", 100)
        );
        assert!(ramped.old_shape_stale);
        s.stop().await;
    }
}

async fn rule_6_no_old_values_after_complete_until_repaired(db: Db) {
    for via in Via::BOTH {
        let s = TestServer::start(db).await;
        let mut f = Flow::create(&s, via, KEY, false, &[]).await;
        f.refused(Step::Record("old_shape_repaired")).await.assert(
            via,
            "not_applicable",
            0,
            "the old shape is not stale",
        );

        f.walk_to("complete", 0).await;
        assert!(!f.state.old_shape_stale);
        assert!(f.ok(Step::Ramp(2_500)).await.old_shape_stale);
        f.refused(Step::Record("old_shape_repaired")).await.assert(
            via,
            "not_applicable",
            0,
            "ramp complete down to 0% first",
        );

        // Stepping back is fine while every entity stays at live or beyond.
        f.ok(Step::Ramp(0)).await;
        f.ok(Step::Retreat).await;
        f.ok(Step::Ramp(0)).await;
        let live = f.ok(Step::Retreat).await;
        assert_eq!((live.stage.as_str(), live.rollout_bp), ("live", 10_000));
        assert!(live.old_shape_stale);

        // Any entity back in shadow would be handed old values.
        for bp in [9_999, 5_000, 0] {
            f.refused(Step::Ramp(bp))
                .await
                .assert_rule(via, 6, "record old-shape-repaired");
        }
        f.refused(Step::Retreat)
            .await
            .assert_rule(via, 1, "ramp live down to 0% first");

        let repaired = f.ok(Step::Record("old_shape_repaired")).await;
        assert!(!repaired.old_shape_stale);
        f.ok(Step::Ramp(5_000)).await;
        f.ok(Step::Ramp(0)).await;
        let shadow = f.ok(Step::Retreat).await;
        assert_eq!(
            (shadow.stage.as_str(), shadow.rollout_bp),
            ("shadow", 10_000)
        );
        s.stop().await;
    }
}

async fn rule_7_contracted_needs_the_gate(db: Db) {
    for via in Via::BOTH {
        let s = TestServer::start(db).await;
        let mut f = Flow::create(&s, via, KEY, false, &[]).await;
        f.walk_to("complete", 10_000).await;
        f.refused(Step::Record("contracted"))
            .await
            .assert_rule(via, 7, "the contract gate fails");
        f.refused(Step::Advance)
            .await
            .assert_rule(via, 7, "once the contract gate passes");
        f.refused(Step::RampOn("contracted", 10_000))
            .await
            .assert_rule(via, 7, "once the contract gate passes");
        s.stop().await;
    }
}

async fn rule_8_stale_versions_are_refused_with_the_current_state(db: Db) {
    for via in Via::BOTH {
        let s = TestServer::start(db).await;
        let mut f = Flow::create(&s, via, KEY, false, &[]).await;
        f.walk_to("dual_write", 1_000).await;

        // Two release managers read the same version; the first one's change wins.
        let seen = f.state.version;
        f.ok(Step::Ramp(2_000)).await;
        let current = f.state.version;
        let r = f.refused_with(Step::Ramp(3_000), seen, REASON).await;
        r.assert(
            via,
            "stale_version",
            8,
            "re-read it and retry with the current version",
        );
        assert!(
            r.message.contains(&format!(
                "expected version {seen} but the migration is at version {current}"
            )),
            "{r:#?}"
        );
        let carried = r
            .current
            .expect("a stale refusal carries the current state");
        assert_eq!((carried.version, carried.rollout_bp), (current, 2_000));

        // A version from the future is just as wrong.
        f.refused_with(Step::Advance, current + 100, REASON)
            .await
            .assert(via, "stale_version", 8, "re-read it");

        // Retrying with the version the refusal carried is allowed.
        let retried = f
            .attempt(Step::Ramp(3_000), carried.version, REASON)
            .await
            .unwrap_or_else(|r| panic!("retry refused: {r:#?}"));
        assert_eq!(retried.rollout_bp, 3_000);
        s.stop().await;
    }
}

async fn rule_9_every_change_needs_a_reason_and_is_audited(db: Db) {
    for via in Via::BOTH {
        let s = TestServer::start(db).await;

        // Creating without a reason creates nothing.
        let snapshot = s.snapshot_version().await;
        let r = via
            .create(&s, KEY, false, &[], "  ")
            .await
            .expect_err("created without a reason");
        r.assert(via, "invalid_argument", 9, "every change needs a reason");
        assert_eq!(
            s.get(&format!("/v1/migrations/{KEY}")).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(s.snapshot_version().await, snapshot);

        let mut f = Flow::create(&s, via, KEY, false, &[]).await;
        let version = f.state.version;
        let too_long = "x".repeat(2_001);
        for reason in ["", " \n\t ", too_long.as_str()] {
            f.refused_with(Step::Record("expand_applied"), version, reason)
                .await
                .assert(via, "invalid_argument", 9, "every change needs a reason");
        }

        let before = f.state.clone();
        let reason = "expand DDL 0042_add_handle applied by deploy #1234";
        let after = f
            .attempt(Step::Record("expand_applied"), version, reason)
            .await
            .unwrap_or_else(|r| panic!("refused with a reason: {r:#?}"));
        assert!(after.expand_applied);

        let log = via.audit(&s, KEY).await;
        assert_eq!(log, Via::Http.audit(&s, KEY).await, "both protocols' audit");
        let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["expand_applied", "create"], "newest first");
        let entry = &log[0];
        assert_eq!(entry.reason, reason);
        assert_eq!(entry.version, after.version);
        assert!(entry.actor.contains("admin"), "{entry:?}");
        assert_eq!(State::from_json(&entry.before), before);
        assert_eq!(State::from_json(&entry.after), after);
        let created = &log[1];
        assert_eq!(
            (created.reason.as_str(), &created.before),
            (REASON, &Value::Null)
        );
        assert_eq!(State::from_json(&created.after), before);
        s.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Error mapping
// ---------------------------------------------------------------------------------------------

switchyard_tests::both_databases!(
    errors_unknown_migration_is_not_found,
    errors_invalid_input_says_what_is_allowed,
    errors_control_characters_are_refused_and_change_nothing,
    errors_malformed_and_oversized_http_bodies,
    errors_auth_and_roles,
    decide_agrees_across_protocols_and_with_the_domain,
);

async fn errors_unknown_migration_is_not_found(db: Db) {
    let s = TestServer::start(db).await;
    for path in [
        "/v1/migrations/no.such",
        "/v1/migrations/no.such/audit",
        "/v1/migrations/no.such/decide?entity_key=u1",
    ] {
        let (status, body) = s.get(path).await;
        Refusal::from_http(status, &body).assert(
            Via::Http,
            "not_found",
            0,
            "migration no.such does not exist",
        );
    }
    for via in Via::BOTH {
        let answers = [
            via.advance(&s, "no.such", 1, REASON).await,
            via.retreat(&s, "no.such", 1, REASON).await,
            via.ramp(&s, "no.such", None, 100, 1, REASON).await,
            via.record(&s, "no.such", "expand_applied", 1, REASON).await,
        ];
        for answer in answers {
            let r = answer.expect_err("mutated a migration that does not exist");
            r.assert(via, "not_found", 0, "no.such does not exist");
        }
    }
    let mut grpc = s.grpc.clone();
    let key = "no.such".to_owned();
    let get = grpc
        .get_migration(s.req(pb::GetMigrationRequest { key: key.clone() }))
        .await
        .expect_err("got a migration that does not exist");
    let decide = grpc
        .decide(s.req(pb::DecideRequest {
            key: key.clone(),
            entity_key: "u1".to_owned(),
        }))
        .await
        .expect_err("decided on a migration that does not exist");
    let audit = grpc
        .audit(s.req(pb::AuditRequest {
            key,
            ..Default::default()
        }))
        .await
        .expect_err("audit of a migration that does not exist");
    for status in [get, decide, audit] {
        Refusal::from_grpc(&status).assert(Via::Grpc, "not_found", 0, "does not exist");
    }
    s.stop().await;
}

async fn errors_invalid_input_says_what_is_allowed(db: Db) {
    let s = TestServer::start(db).await;
    for via in Via::BOTH {
        let key = format!("orders.split-{}", if via == Via::Http { "h" } else { "g" });
        let mut f = Flow::create(&s, via, &key, false, &[]).await;
        f.walk_to("dual_write", 100).await;
        let key_phrase = "a-z, 0-9, '.', '_' or '-'";

        // Keys.
        for bad in ["Users.Bad", "-x", "a b", &"a".repeat(129)] {
            via.create(&s, bad, false, &[], REASON)
                .await
                .expect_err("created with an invalid key")
                .assert(via, "invalid_argument", 0, key_phrase);
        }
        via.advance(&s, "Users.Bad", f.state.version, REASON)
            .await
            .expect_err("advanced an invalid key")
            .assert(via, "invalid_argument", 0, key_phrase);

        // A duplicate key.
        let before = Fingerprint::take(&s, &key).await;
        via.create(&s, &key, true, &[], REASON)
            .await
            .expect_err("created a duplicate")
            .assert(
                via,
                "already_exists",
                0,
                "already exists; pick another name",
            );
        assert_eq!(Fingerprint::take(&s, &key).await, before);

        // Rollouts, stages and events.
        f.refused(Step::Ramp(10_001))
            .await
            .assert(via, "invalid_argument", 0, "allowed 0..=10000");
        let (stage_phrase, event_phrase) = match via {
            Via::Http => (
                "allowed off, dual_write, shadow",
                "allowed expand_applied, backfill_started",
            ),
            Via::Grpc => (
                "allowed STAGE_OFF (1) to STAGE_CONTRACTED (7)",
                "allowed EVENT_KIND_EXPAND_APPLIED (1)",
            ),
        };
        f.refused(Step::RampOn("Shadow", 100)).await.assert(
            via,
            "invalid_argument",
            0,
            stage_phrase,
        );
        f.refused(Step::Record("expand"))
            .await
            .assert(via, "invalid_argument", 0, event_phrase);
        assert_eq!(Fingerprint::take(&s, &key).await, before);

        // Heartbeats cannot claim a version the server never published.
        let newest = s.snapshot_version().await;
        via.heartbeat(&s, "api", "api-1", newest + 1)
            .await
            .expect_err("heartbeat from the future")
            .assert(via, "invalid_argument", 0, "newer than the newest snapshot");
        via.heartbeat(&s, "", "api-1", newest)
            .await
            .expect_err("heartbeat without a service")
            .assert(
                via,
                "invalid_argument",
                0,
                "allowed 1 to 128 printable characters",
            );
    }
    s.stop().await;
}

/// Creates `key` with the given free text, through `via`.
async fn create_with_text(
    via: Via,
    s: &TestServer,
    key: &str,
    reason: &str,
    description: &str,
    owner: &str,
) -> Answer {
    match via {
        Via::Http => {
            let body = json!({
                "key": key, "entity_kind": "user_id", "reason": reason,
                "description": description, "owner": owner,
            });
            http_answer(s.post("/v1/migrations", body).await, StatusCode::CREATED)
        }
        Via::Grpc => {
            let request = pb::CreateMigrationRequest {
                key: key.to_owned(),
                entity_kind: "user_id".to_owned(),
                reason: reason.to_owned(),
                description: description.to_owned(),
                owner: owner.to_owned(),
                ..Default::default()
            };
            grpc_answer(s.grpc.clone().create_migration(s.req(request)).await)
        }
    }
}

/// A NUL was stored by SQLite and an internal error on PostgreSQL: text fields refuse control
/// characters alike on both databases and protocols, naming the field, the character and what is
/// allowed, and the refusal changes nothing. Prose (reasons, descriptions) keeps line breaks and
/// tabs.
async fn errors_control_characters_are_refused_and_change_nothing(db: Db) {
    let s = TestServer::start(db).await;
    for via in Via::BOTH {
        let key = format!("text.control-{}", if via == Via::Http { "h" } else { "g" });

        // Creating.
        let snapshot = s.snapshot_version().await;
        let refused_creates = [
            (
                "add\0handle",
                "",
                "team",
                "invalid reason: control character U+0000 at character 4",
            ),
            (
                REASON,
                "split\0orders",
                "team",
                "invalid description: control character U+0000",
            ),
            (
                REASON,
                "ok",
                "team\nstore",
                "invalid owner: control character U+000A",
            ),
            (
                REASON,
                "\u{1b}[2J",
                "team",
                "invalid description: control character U+001B",
            ),
        ];
        for (reason, description, owner, phrase) in refused_creates {
            let r = create_with_text(via, &s, &key, reason, description, owner)
                .await
                .expect_err("created with a control character");
            r.assert(via, "invalid_argument", 0, phrase);
            assert!(r.message.contains("allowed printable"), "{r:#?}");
        }
        assert_eq!(
            s.get(&format!("/v1/migrations/{key}")).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(s.snapshot_version().await, snapshot, "nothing created");

        // Prose keeps its line breaks and tabs.
        let created = create_with_text(
            via,
            &s,
            &key,
            "ticket OPS-1:\n\tadd the handle",
            "line one\nline two\tend",
            "team-store",
        )
        .await
        .unwrap_or_else(|r| panic!("{via:?}: prose refused: {r:#?}"));
        assert_eq!(
            s.migration(&key).await["description"],
            "line one\nline two\tend"
        );

        // Mutating: the reason is checked before anything is written.
        let before = Fingerprint::take(&s, &key).await;
        for (reason, phrase) in [
            (
                "deploy\0#1",
                "invalid reason: control character U+0000 at character 7",
            ),
            ("deploy\r#1", "invalid reason: control character U+000D"),
        ] {
            via.record(&s, &key, "expand_applied", created.version, reason)
                .await
                .expect_err("recorded with a control character in the reason")
                .assert(via, "invalid_argument", 0, phrase);
        }
        assert_eq!(Fingerprint::take(&s, &key).await, before, "nothing changed");
        assert_eq!(audit_len(&s, &key).await, 1, "no audit row");

        // Labels: services and instance ids are one line of printable characters.
        let newest = s.snapshot_version().await;
        for (service, instance, phrase) in [
            (
                "api\0",
                "api-1",
                "invalid service name: control character U+0000",
            ),
            (
                "api",
                "api\t1",
                "invalid instance id: control character U+0009",
            ),
        ] {
            via.heartbeat(&s, service, instance, newest)
                .await
                .expect_err("heartbeat with a control character")
                .assert(via, "invalid_argument", 0, phrase);
        }
    }
    s.stop().await;
}

/// Sends `body` as-is with the admin token; returns the status and the JSON error body.
async fn post_raw(s: &TestServer, path: &str, content_type: &str, body: String) -> Refusal {
    let response = s
        .http
        .post(format!("{}{path}", s.base))
        .bearer_auth(&s.token)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .expect("HTTP request");
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON error body");
    Refusal::from_http(status, &body)
}

async fn errors_malformed_and_oversized_http_bodies(db: Db) {
    let s = TestServer::start(db).await;
    let mut f = Flow::create(&s, Via::Http, KEY, false, &[]).await;
    f.walk_to("dual_write", 100).await;
    let before = Fingerprint::take(&s, KEY).await;
    let rollout = format!("/v1/migrations/{KEY}/rollout");
    let json_type = "application/json";
    let v = f.state.version;

    let cases = [
        (
            r#"{"rollout_bp": 200, "expected_version": "#.to_owned(),
            json_type,
            "invalid JSON body",
        ),
        (
            format!(
                r#"{{"rollout_bp": 200, "expected_version": {v}, "reason": "r", "force": true}}"#
            ),
            json_type,
            "unknown field `force`, expected one of",
        ),
        (
            format!(r#"{{"rollout_bp": "200", "expected_version": {v}, "reason": "r"}}"#),
            json_type,
            "invalid JSON body",
        ),
        (
            format!(r#"{{"rollout_bp": 200, "expected_version": {v}, "reason": "r"}}"#),
            "text/plain",
            "Content-Type: application/json",
        ),
    ];
    for (body, content_type, phrase) in cases {
        post_raw(&s, &rollout, content_type, body).await.assert(
            Via::Http,
            "invalid_argument",
            0,
            phrase,
        );
    }
    let unknown_field = post_raw(
        &s,
        &rollout,
        json_type,
        format!(r#"{{"rollout_bp": 200, "expected_version": {v}, "reason": "r", "force": true}}"#),
    )
    .await;
    assert!(
        unknown_field.message.contains("`rollout_bp`")
            && unknown_field.message.contains("`expected_version`"),
        "the message lists the allowed fields: {unknown_field:#?}"
    );

    let huge = json!({
        "rollout_bp": 200, "expected_version": v, "reason": "r".repeat(64 * 1024),
    });
    post_raw(&s, &rollout, json_type, huge.to_string())
        .await
        .assert(
            Via::Http,
            "payload_too_large",
            0,
            "allowed up to 65536 bytes",
        );
    assert_eq!(Fingerprint::take(&s, KEY).await, before);
    s.stop().await;
}

/// An HTTP request with a raw `Authorization` header (or none); the JSON answer or the refusal.
async fn http_as(
    s: &TestServer,
    authorization: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Refusal> {
    let mut request = s.http.request(method, format!("{}{path}", s.base));
    if let Some(authorization) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, authorization);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("HTTP request");
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        let challenge = response.headers().get(reqwest::header::WWW_AUTHENTICATE);
        assert_eq!(challenge.map(|v| v.as_bytes()), Some(&b"Bearer"[..]));
    }
    let body: Value = response.json().await.expect("a JSON body");
    if status.is_success() {
        Ok(body)
    } else {
        Err(Refusal::from_http(status, &body))
    }
}

/// The refusal of a gRPC call that must fail.
fn grpc_refusal<T: std::fmt::Debug>(answer: Result<tonic::Response<T>, tonic::Status>) -> Refusal {
    Refusal::from_grpc(&answer.expect_err("the call was allowed"))
}

async fn errors_auth_and_roles(db: Db) {
    const NEEDS_OPERATOR: &str = "needs operator or admin";
    const NEEDS_GATE: &str = "needs gate or operator";
    let s = TestServer::start(db).await;
    s.create(KEY, false, &[]).await;
    let reader = s.token_with_role("app-reader", "reader").await;
    let gate = s.token_with_role("deploy-pipeline", "gate").await;
    let (reader_auth, gate_auth) = (format!("Bearer {reader}"), format!("Bearer {gate}"));
    let before = Fingerprint::take(&s, KEY).await;
    let v = before.migration["version"].as_u64().expect("version");

    // HTTP: every refused request, with its code, rule and key phrase.
    let migration = format!("/v1/migrations/{KEY}");
    let events = format!("{migration}/events");
    let record = |event: &str| json!({ "event": event, "expected_version": v, "reason": REASON });
    let ramp = json!({ "rollout_bp": 100, "expected_version": v, "reason": REASON });
    let step = json!({ "expected_version": v, "reason": REASON });
    let create = json!({ "key": "orders.split", "reason": REASON });
    let get = (Method::GET, migration.clone(), None);
    let cases = [
        (
            None,
            get.clone(),
            "unauthenticated",
            0,
            "missing bearer token",
        ),
        (
            Some("Basic YWRtaW46YWRtaW4="),
            get.clone(),
            "unauthenticated",
            0,
            "expected `Bearer <token>`",
        ),
        (
            Some("Bearer sy_not-a-token"),
            get.clone(),
            "unauthenticated",
            0,
            "unknown or revoked token",
        ),
        (
            Some(&reader_auth),
            (Method::POST, events.clone(), Some(record("expand_applied"))),
            "permission_denied",
            0,
            NEEDS_GATE,
        ),
        (
            Some(&reader_auth),
            (
                Method::POST,
                format!("{migration}/rollout"),
                Some(ramp.clone()),
            ),
            "permission_denied",
            0,
            NEEDS_OPERATOR,
        ),
        (
            Some(&gate_auth),
            (Method::POST, format!("{migration}/rollout"), Some(ramp)),
            "permission_denied",
            0,
            NEEDS_OPERATOR,
        ),
        (
            Some(&gate_auth),
            (Method::POST, format!("{migration}/advance"), Some(step)),
            "permission_denied",
            0,
            NEEDS_OPERATOR,
        ),
        (
            Some(&gate_auth),
            (
                Method::POST,
                events.clone(),
                Some(record("old_shape_repaired")),
            ),
            "permission_denied",
            0,
            NEEDS_OPERATOR,
        ),
        (
            Some(&gate_auth),
            (Method::POST, "/v1/migrations".to_owned(), Some(create)),
            "permission_denied",
            0,
            NEEDS_OPERATOR,
        ),
        // The gate may ask to record contracted: the rule, not the role, refuses it.
        (
            Some(&gate_auth),
            (Method::POST, events.clone(), Some(record("contracted"))),
            "rule_refused",
            7,
            "contract gate",
        ),
    ];
    for (authorization, (method, path, body), code, rule, phrase) in cases {
        http_as(&s, authorization, method, &path, body)
            .await
            .expect_err("the request was allowed")
            .assert(Via::Http, code, rule, phrase);
    }
    assert_eq!(Fingerprint::take(&s, KEY).await, before);

    // gRPC: the same answers.
    let mut grpc = s.grpc.clone();
    let get = || pb::GetMigrationRequest {
        key: KEY.to_owned(),
    };
    let step = || pb::StepRequest {
        key: KEY.to_owned(),
        expected_version: v,
        reason: REASON.to_owned(),
        ..Default::default()
    };
    let ramp = || pb::SetRolloutRequest {
        key: KEY.to_owned(),
        rollout_bp: 100,
        expected_version: v,
        reason: REASON.to_owned(),
        ..Default::default()
    };
    let record = |event: pb::EventKind| pb::RecordEventRequest {
        key: KEY.to_owned(),
        event: event as i32,
        expected_version: v,
        reason: REASON.to_owned(),
        ..Default::default()
    };
    grpc_refusal(grpc.get_migration(tonic::Request::new(get())).await).assert(
        Via::Grpc,
        "unauthenticated",
        0,
        "missing bearer token",
    );
    grpc_refusal(
        grpc.get_migration(request_as("sy_not-a-token", get()))
            .await,
    )
    .assert(Via::Grpc, "unauthenticated", 0, "unknown or revoked token");
    grpc_refusal(
        grpc.record_event(request_as(&reader, record(pb::EventKind::ExpandApplied)))
            .await,
    )
    .assert(Via::Grpc, "permission_denied", 0, NEEDS_GATE);
    for token in [&reader, &gate] {
        grpc_refusal(grpc.set_rollout(request_as(token, ramp())).await).assert(
            Via::Grpc,
            "permission_denied",
            0,
            NEEDS_OPERATOR,
        );
        grpc_refusal(grpc.advance(request_as(token, step())).await).assert(
            Via::Grpc,
            "permission_denied",
            0,
            NEEDS_OPERATOR,
        );
    }
    grpc_refusal(
        grpc.record_event(request_as(&gate, record(pb::EventKind::OldShapeRepaired)))
            .await,
    )
    .assert(Via::Grpc, "permission_denied", 0, NEEDS_OPERATOR);
    grpc_refusal(
        grpc.record_event(request_as(&gate, record(pb::EventKind::Contracted)))
            .await,
    )
    .assert_rule(Via::Grpc, 7, "contract gate");
    assert_eq!(Fingerprint::take(&s, KEY).await, before);

    // What the roles may do: a reader reads, a gate records the expand (and is audited).
    let read = http_as(&s, Some(&reader_auth), Method::GET, &migration, None).await;
    assert_eq!(read.expect("a reader reads")["version"], v);
    grpc.get_migration(request_as(&reader, get()))
        .await
        .expect("a reader reads");
    let recorded = grpc
        .record_event(request_as(&gate, record(pb::EventKind::ExpandApplied)))
        .await
        .expect("a gate records expand_applied");
    assert!(recorded.get_ref().expand_applied);
    let log = Via::Http.audit(&s, KEY).await;
    assert_eq!((log.len(), log[0].action.as_str()), (2, "expand_applied"));
    assert!(log[0].actor.contains("deploy-pipeline"), "{:?}", log[0]);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Decide
// ---------------------------------------------------------------------------------------------

async fn decide_http(s: &TestServer, key: &str, entity: Option<&str>) -> (StatusCode, Value) {
    let mut request = s
        .http
        .get(format!("{}/v1/migrations/{key}/decide", s.base))
        .bearer_auth(&s.token);
    if let Some(entity) = entity {
        request = request.query(&[("entity_key", entity)]);
    }
    let response = request.send().await.expect("HTTP request");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

async fn decide_grpc(
    s: &TestServer,
    key: &str,
    entity: Option<&str>,
) -> Result<pb::Decision, tonic::Status> {
    let request = pb::DecideRequest {
        key: key.to_owned(),
        entity_key: entity.unwrap_or_default().to_owned(),
    };
    s.grpc
        .clone()
        .decide(s.req(request))
        .await
        .map(tonic::Response::into_inner)
}

/// Every entity (and the entity-less operation) gets the same answer from HTTP, gRPC and the
/// domain's own bucketing; returns how many entities were at each stage.
async fn check_decisions(s: &TestServer, key: &str, entities: &[String]) -> Vec<(Stage, usize)> {
    let migration = s.migration(key).await;
    let salt = migration["salt"].as_u64().expect("salt");
    let state = State::from_json(&migration);
    let front = state.front();
    let mut seen: Vec<(Stage, usize)> = Vec::new();
    for entity in entities.iter().map(|e| Some(e.as_str())).chain([None]) {
        let bucket = entity.map(|e| switchyard_domain::bucket(salt, e.as_bytes()));
        let stage = front.stage_for(bucket);
        let plan = serde_json::to_value(switchyard_proto::json::Decision::new(
            key.to_owned(),
            bucket,
            stage.plan(),
            Version(0),
        ))
        .expect("plan as JSON");

        let (status, http) = decide_http(s, key, entity).await;
        assert_eq!(status, StatusCode::OK, "{http}");
        assert_eq!(http["key"], key);
        assert_eq!(http["bucket"], json!(bucket), "{entity:?}");
        assert_eq!(http["version"], state.version);
        for field in [
            "stage",
            "write",
            "authoritative_write",
            "read",
            "return_value",
            "shadow_compare",
        ] {
            assert_eq!(
                http[field], plan[field],
                "{field} of {entity:?} at {front:?}"
            );
        }

        let grpc = decide_grpc(s, key, entity).await.expect("gRPC decide");
        assert_eq!(grpc.key, key);
        assert_eq!(
            grpc.stage(),
            pb_stage(stage.as_str()),
            "{entity:?} at {front:?}"
        );
        assert_eq!(
            (grpc.has_bucket, grpc.bucket),
            (bucket.is_some(), bucket.unwrap_or(0))
        );
        assert_eq!(grpc.version, state.version);
        assert_eq!(grpc.write(), pb_side(&plan["write"]));
        assert_eq!(
            grpc.authoritative_write(),
            pb_side(&plan["authoritative_write"])
        );
        assert_eq!(grpc.read(), pb_side(&plan["read"]));
        assert_eq!(grpc.return_value(), pb_side(&plan["return_value"]));
        assert_eq!(Value::Bool(grpc.shadow_compare), plan["shadow_compare"]);

        if entity.is_some() {
            match seen.iter_mut().find(|(s, _)| *s == stage) {
                Some((_, n)) => *n += 1,
                None => seen.push((stage, 1)),
            }
        }
    }
    seen.sort();
    seen
}

async fn decide_agrees_across_protocols_and_with_the_domain(db: Db) {
    let s = TestServer::start(db).await;
    let mut entities: Vec<String> = (0..150).map(|i| format!("user-{i}")).collect();
    entities.extend(["42", "Ünïcode ✓", "a b&c=d/e?f#g"].map(String::from));
    entities.push("k".repeat(1024));

    let mut f = Flow::create(&s, Via::Grpc, KEY, false, &[]).await;
    let all_off = check_decisions(&s, KEY, &entities).await;
    assert_eq!(all_off, [(Stage::Off, entities.len())]);

    f.walk_to("shadow", 3_000).await;
    let split = check_decisions(&s, KEY, &entities).await;
    assert_eq!(
        split.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [Stage::DualWrite, Stage::Shadow]
    );
    let leading = split[1].1;
    assert!(
        (15..=80).contains(&leading),
        "about 30% of 154 lead: {split:?}"
    );

    // Raising the rollout keeps every leading entity in front (the buckets do not change).
    f.ok(Step::Ramp(6_000)).await;
    let wider = check_decisions(&s, KEY, &entities).await;
    assert!(wider[1].1 >= leading, "{wider:?}");

    f.walk_to("rampdown", 10_000).await;
    assert_eq!(
        check_decisions(&s, KEY, &entities).await,
        [(Stage::Rampdown, entities.len())]
    );

    // Entity keys are bounded.
    let long = "k".repeat(1025);
    let (status, body) = decide_http(&s, KEY, Some(&long)).await;
    Refusal::from_http(status, &body).assert(
        Via::Http,
        "invalid_argument",
        0,
        "allowed up to 1024 bytes",
    );
    let status = decide_grpc(&s, KEY, Some(&long))
        .await
        .expect_err("a 1025-byte entity key");
    Refusal::from_grpc(&status).assert(
        Via::Grpc,
        "invalid_argument",
        0,
        "allowed up to 1024 bytes",
    );
    s.stop().await;
}

// Known server bug (reported, not fixed here): the proto says an empty `entity_key` means "no
// entity" and gRPC Decide honours that, but HTTP `decide?entity_key=` buckets the empty string,
// so the two protocols can answer the same request with different stages.
switchyard_tests::both_databases!(decide_empty_entity_key_means_no_entity_on_both_protocols);

async fn decide_empty_entity_key_means_no_entity_on_both_protocols(db: Db) {
    let s = TestServer::start(db).await;
    let mut f = Flow::create(&s, Via::Http, KEY, false, &[]).await;
    f.walk_to("dual_write", 5_000).await;
    let grpc = decide_grpc(&s, KEY, Some("")).await.expect("gRPC decide");
    assert!(!grpc.has_bucket);
    assert_eq!(grpc.stage(), pb::Stage::Off, "the trailing stage");
    let (status, http) = decide_http(&s, KEY, Some("")).await;
    assert_eq!(status, StatusCode::OK, "{http}");
    assert_eq!(
        (&http["bucket"], &http["stage"]),
        (&Value::Null, &json!("off")),
        "HTTP `entity_key=` must mean no entity, as gRPC's empty entity_key does"
    );
    s.stop().await;
}

// Decide reads its query by hand and writes its answer by hand (the busiest route): the answer
// must still agree with gRPC's for any entity key, percent-encoded ones included, and the query
// must still refuse what it does not know.
switchyard_tests::both_databases!(decide_over_http_agrees_with_grpc_and_refuses_a_bad_query);

async fn decide_over_http_agrees_with_grpc_and_refuses_a_bad_query(db: Db) {
    let s = TestServer::start(db).await;
    let mut f = Flow::create(&s, Via::Http, KEY, false, &[]).await;
    f.walk_to("dual_write", 5_000).await;
    for entity in ["user-1", "user 2/ä?&=", "%41", "+plus+"] {
        let grpc = decide_grpc(&s, KEY, Some(entity))
            .await
            .expect("gRPC decide");
        let (status, http) = decide_http(&s, KEY, Some(entity)).await;
        assert_eq!(status, StatusCode::OK, "{http}");
        assert_eq!(http["key"], json!(KEY));
        assert_eq!(http["bucket"], json!(grpc.bucket), "{entity:?}");
        assert_eq!(
            http["stage"],
            json!(if grpc.stage() == pb::Stage::DualWrite {
                "dual_write"
            } else {
                "off"
            }),
            "{entity:?}"
        );
        assert_eq!(http["version"], json!(grpc.version), "{entity:?}");
    }

    let url = |query: &str| format!("{}/v1/migrations/{KEY}/decide?{query}", s.base);
    for (query, phrase) in [
        (
            "entity=user-1",
            "unknown parameter `entity`; allowed: entity_key",
        ),
        (
            "entity_key=a&entity_key=b",
            "entity_key given more than once",
        ),
    ] {
        let response = s
            .http
            .get(url(query))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.expect("JSON body");
        Refusal::from_http(status, &body).assert(Via::Http, "invalid_argument", 0, phrase);
    }
    s.stop().await;
}
