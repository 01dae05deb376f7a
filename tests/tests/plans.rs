//! Migration plans driven by the server: a whole migration from off to complete 100% by a plan
//! set with the CLI, each step held on an injected clock, an instance acknowledging, every
//! step in the audit log once with its plan reason; a manual change pauses the plan and
//! resume carries on; a step the rules refuse waits and names the rule; a scheduled plan waits
//! for its time.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use switchyard_tests::{Db, TestClock, TestDb, TestServer, both_databases, eventually, wait_for};

const HOUR: Duration = Duration::from_secs(3600);

async fn start(db: Db) -> TestServer {
    let db = Arc::new(TestDb::new(db).await);
    TestServer::start_configured(db, TestClock::new(), |c| {
        c.plan_interval = Duration::from_millis(20);
    })
    .await
}

async fn plan(srv: &TestServer, key: &str) -> Value {
    let (status, body) = srv.get(&format!("/v1/migrations/{key}/plan")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn record(srv: &TestServer, key: &str, event: &str) {
    let version = srv.version_of(key).await;
    let (status, body) = srv
        .post(
            &format!("/v1/migrations/{key}/events"),
            json!({ "event": event, "expected_version": version, "reason": "test" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Advances the migration by hand (before a plan is set, so nothing is paused).
async fn advance(srv: &TestServer, key: &str) {
    let version = srv.version_of(key).await;
    let (status, body) = srv
        .post(
            &format!("/v1/migrations/{key}/advance"),
            json!({ "expected_version": version, "reason": "by hand" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The plan has looked since the last change and is holding (a wait that ends at a time) or
/// is done: the driver has nothing left to do until the clock moves.
async fn settled(srv: &TestServer, key: &str) -> Value {
    wait_for(Duration::from_secs(10), "the plan to settle", || async {
        let p = plan(srv, key).await;
        let holding = p["next"]["kind"] == "wait" && p["next"]["at_ms"].is_i64();
        if p["status"] == "done" || holding {
            Ok(p)
        } else {
            Err(p.to_string())
        }
    })
    .await
}

/// Sets `key`'s plan over HTTP; the status and the answer.
async fn put_plan(srv: &TestServer, key: &str, body: Value) -> (StatusCode, Value) {
    srv.call(
        Method::PUT,
        &format!("/v1/migrations/{key}/plan"),
        Some(body),
    )
    .await
}

async fn a_plan_drives_a_migration_from_off_to_complete(db: Db) {
    let srv = start(db).await;
    let key = "orders.planned";
    srv.create(key, false, &["api"]).await;
    record(&srv, key, "expand_applied").await;
    srv.heartbeat("api", "api-1", srv.snapshot_version().await)
        .await;

    let code = srv
        .cli(&[
            "plan",
            "set",
            key,
            "--stage",
            "dual_write=1,50,100",
            "--stage",
            "shadow=100",
            "--stage",
            "live=10,100",
            "--stage",
            "rampdown=100",
            "--stage",
            "complete=100",
            "--hold",
            "1h",
            "--reason",
            "standard column rename",
        ])
        .await;
    assert_eq!(code, 0);

    let mut looks = 0;
    loop {
        let p = settled(&srv, key).await;
        if p["status"] == "done" {
            break;
        }
        assert!(
            p["next"]["description"]
                .as_str()
                .unwrap()
                .starts_with("holding"),
            "{p}"
        );
        looks += 1;
        assert!(looks < 20, "the plan never finished: {p}");
        srv.clock.advance(HOUR);
        // The instance, live on the moved clock, acknowledges what it has received (rule 5
        // waits for it before complete). A step the driver tries before this is refused and
        // tried again at its next look.
        srv.heartbeat("api", "api-1", srv.snapshot_version().await)
            .await;
    }
    let m = srv.migration(key).await;
    assert_eq!(
        (m["stage"].as_str(), m["rollout_bp"].as_u64()),
        (Some("complete"), Some(10_000))
    );

    // Every step once, in order, in the plan's name, with its plan reason.
    let (status, audit) = srv
        .get(&format!("/v1/migrations/{key}/audit?limit=500"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let taken: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter(|e| e["reason"].as_str().unwrap().starts_with("plan step: "))
        .collect();
    let steps: Vec<(String, String)> = taken
        .iter()
        .map(|e| {
            assert!(
                e["actor"].as_str().unwrap().starts_with("plan of admin"),
                "{e}"
            );
            (
                e["action"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap()["plan step: ".len()..].to_owned(),
            )
        })
        .collect();
    let expected = [
        ("advance", "advance to dual_write"),
        ("set_rollout", "dual_write 0% → 1%"),
        ("set_rollout", "dual_write 1% → 50%"),
        ("set_rollout", "dual_write 50% → 100%"),
        ("advance", "advance to shadow"),
        ("set_rollout", "shadow 0% → 100%"),
        ("advance", "advance to live"),
        ("set_rollout", "live 0% → 10%"),
        ("set_rollout", "live 10% → 100%"),
        ("advance", "advance to rampdown"),
        ("set_rollout", "rampdown 0% → 100%"),
        ("advance", "advance to complete"),
        ("set_rollout", "complete 0% → 100%"),
    ]
    .map(|(a, r)| (a.to_owned(), r.to_owned()));
    assert_eq!(steps, expected);
    // Each step after a ramp waited out that step's hour; the first ramp of a stage follows
    // its advance at once (0% is no step, so nothing is held there).
    for pair in taken.windows(2) {
        let apart = pair[1]["at_ms"].as_i64().unwrap() - pair[0]["at_ms"].as_i64().unwrap();
        if pair[0]["action"] == "set_rollout" {
            assert!(
                apart >= 3_600_000,
                "{} then {}: {apart} ms",
                pair[0]["reason"],
                pair[1]["reason"]
            );
        } else {
            assert!(
                apart < 3_600_000,
                "{} then {}: {apart} ms",
                pair[0]["reason"],
                pair[1]["reason"]
            );
        }
    }
    let p = plan(&srv, key).await;
    assert_eq!(p["status"], "done", "{p}");
    assert_eq!(p["next"]["kind"], "done", "{p}");
    srv.stop().await;
}

async fn a_manual_change_pauses_the_plan_and_resume_carries_on(db: Db) {
    let srv = start(db).await;
    let key = "users.paused-plan";
    srv.create(key, false, &[]).await;
    record(&srv, key, "expand_applied").await;
    advance(&srv, key).await;

    let (status, body) = put_plan(
        &srv,
        key,
        json!({ "stages": [{ "stage": "dual_write",
                "steps": [{ "rollout_bp": 500, "hold_seconds": 600 }, { "rollout_bp": 2500 }],
                "then": "stop" }], "reason": "canary" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "running");
    let p = settled(&srv, key).await;
    assert_eq!(srv.migration(key).await["rollout_bp"], 500, "{p}");

    // A person ramps by hand: the plan pauses, in the same change, saying who and why.
    assert_eq!(
        srv.cli(&[
            "ramp",
            key,
            "--percent",
            "7",
            "--latest",
            "--reason",
            "hotfix"
        ])
        .await,
        0
    );
    let p = plan(&srv, key).await;
    assert_eq!(p["status"], "paused", "{p}");
    let why = p["status_reason"].as_str().unwrap();
    assert!(
        why.contains("manual change") && why.contains("set_rollout") && why.contains("hotfix"),
        "{why}"
    );
    // Paused, it takes no step however long it waits.
    srv.clock.advance(HOUR);
    let v = srv.version_of(key).await;
    assert_eq!(plan(&srv, key).await["next"]["kind"], "wait");
    assert_eq!(srv.version_of(key).await, v);

    // Resumed, it goes on from where the front is (7%, between steps): 25% next, at once.
    assert_eq!(
        srv.cli(&["plan", "resume", key, "--reason", "hotfix verified"])
            .await,
        0
    );
    settled(&srv, key).await;
    let m = srv.migration(key).await;
    assert_eq!(m["rollout_bp"], 2500, "{m}");
    assert_eq!(plan(&srv, key).await["status"], "done");
    // Pausing a plan that is done is refused, and says why.
    let (status, body) = srv
        .post(
            &format!("/v1/migrations/{key}/plan/pause"),
            json!({ "reason": "too late" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("is done"),
        "{body}"
    );
    srv.stop().await;
}

async fn refused_and_scheduled_steps_wait_and_say_why(db: Db) {
    let srv = start(db).await;
    // Off without the expand DDL recorded: the plan's first step (advance) is refused by
    // rule 2, and the plan waits, naming it.
    let key = "billing.refused-plan";
    srv.create(key, false, &[]).await;
    let (status, body) = put_plan(
        &srv,
        key,
        json!({ "stages": [{ "stage": "dual_write",
                "steps": [{ "rollout_bp": 10000 }], "then": "stop" }], "reason": "go" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(
        Duration::from_secs(10),
        "the refusal to be recorded",
        || async {
            plan(&srv, key).await["waiting"]
                .as_str()
                .is_some_and(|w| w.contains("rule 2"))
        },
    )
    .await;
    assert_eq!(srv.migration(key).await["stage"], "off");
    // Once the DDL is recorded, the same plan carries on by itself.
    record(&srv, key, "expand_applied").await;
    settled(&srv, key).await;
    let m = srv.migration(key).await;
    assert_eq!(
        (m["stage"].as_str(), m["rollout_bp"].as_u64()),
        (Some("dual_write"), Some(10_000))
    );

    // A scheduled change: nothing before its time, the step at it.
    let key = "billing.scheduled";
    srv.create(key, false, &[]).await;
    record(&srv, key, "expand_applied").await;
    let at = srv.clock.clock()() + 2 * 3_600_000;
    let (status, body) = put_plan(
        &srv,
        key,
        json!({ "stages": [{ "stage": "dual_write",
                "steps": [{ "rollout_bp": 5000 }], "then": "stop" }],
                "not_before_ms": at, "reason": "at the window" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["next"]["at_ms"], at, "{body}");
    assert!(
        body["next"]["description"]
            .as_str()
            .unwrap()
            .starts_with("scheduled to start at")
    );
    srv.clock.advance(HOUR);
    let p = settled(&srv, key).await;
    assert_eq!(srv.migration(key).await["stage"], "off", "{p}");
    srv.clock.advance(HOUR);
    settled(&srv, key).await;
    let m = srv.migration(key).await;
    assert_eq!(
        (m["stage"].as_str(), m["rollout_bp"].as_u64()),
        (Some("dual_write"), Some(5000))
    );

    // A window: steps only on tomorrow's weekday (UTC), so none today; at tomorrow's midnight
    // the step is taken. An unknown time zone is refused, naming it.
    let key = "billing.windowed";
    srv.create(key, false, &[]).await;
    record(&srv, key, "expand_applied").await;
    let now = srv.clock.clock()();
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let tomorrow = DAYS[((now.div_euclid(86_400_000) + 4) % 7) as usize];
    let (status, body) = put_plan(
        &srv,
        key,
        json!({ "stages": [{ "stage": "dual_write", "steps": [{ "rollout_bp": 2000 }],
                "then": "stop" }], "window": format!("{tomorrow} 00:00-24:00 Mars/Olympus"),
                "reason": "office hours" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unknown time zone \"Mars/Olympus\""),
        "{body}"
    );
    let (status, body) = put_plan(
        &srv,
        key,
        json!({ "stages": [{ "stage": "dual_write", "steps": [{ "rollout_bp": 2000 }],
                "then": "stop" }], "window": format!("{tomorrow} 00:00-24:00 UTC"),
                "reason": "office hours" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let midnight = now - now.rem_euclid(86_400_000) + 86_400_000;
    let p = settled(&srv, key).await;
    assert_eq!(p["next"]["at_ms"], midnight, "{p}");
    assert!(
        p["next"]["description"]
            .as_str()
            .unwrap()
            .starts_with("outside the plan's window"),
        "{p}"
    );
    assert_eq!(srv.migration(key).await["stage"], "off");
    srv.clock
        .advance(Duration::from_millis((midnight - now) as u64));
    settled(&srv, key).await;
    let m = srv.migration(key).await;
    assert_eq!(
        (m["stage"].as_str(), m["rollout_bp"].as_u64()),
        (Some("dual_write"), Some(2000))
    );

    // A plan that cannot run is refused before anything is stored, saying why.
    let (status, body) = put_plan(
        &srv,
        key,
        json!({ "stages": [{ "stage": "live", "steps": [{ "rollout_bp": 5000 }],
                "then": "advance" }], "reason": "bad" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("must be 100%"),
        "{body}"
    );
    assert_eq!(plan(&srv, key).await["status"], "done");
    srv.stop().await;
}

async fn templates_start_plans_that_override_part_of_them(db: Db) {
    let srv = start(db).await;
    assert_eq!(
        srv.cli(&[
            "plan",
            "template",
            "set",
            "standard-rename",
            "--stage",
            "dual_write=1,100",
            "--stage",
            "shadow=100",
            "--stage",
            "live=10,100",
            "--hold",
            "2h",
            "--description",
            "the usual column rename",
            "--reason",
            "team default",
        ])
        .await,
        0
    );
    let (status, list) = srv.get("/v1/plan-templates").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let t = &list["templates"][0];
    assert_eq!(t["name"], "standard-rename", "{list}");
    assert_eq!(t["description"], "the usual column rename");
    assert_eq!(t["stages"][2]["then"], "stop", "{t}");
    assert_eq!(
        t["stages"][0]["steps"][0],
        json!({ "rollout_bp": 100, "hold_seconds": 7200 })
    );

    // A migration starts from it, with its own live stage.
    let key = "users.from-template";
    srv.create(key, false, &[]).await;
    assert_eq!(
        srv.cli(&[
            "plan",
            "set",
            key,
            "--template",
            "standard-rename",
            "--stage",
            "live=50,100",
            "--at",
            "2099-01-01T00:00:00Z",
            "--reason",
            "from the template",
        ])
        .await,
        0
    );
    let p = plan(&srv, key).await;
    assert_eq!(p["template"], "standard-rename", "{p}");
    let stages: Vec<(String, Vec<u64>, String)> = p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_owned(),
                s["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|st| st["rollout_bp"].as_u64().unwrap())
                    .collect(),
                s["then"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        stages,
        [
            (
                "dual_write".to_owned(),
                vec![100, 10_000],
                "advance".to_owned()
            ),
            ("shadow".to_owned(), vec![10_000], "advance".to_owned()),
            ("live".to_owned(), vec![5_000, 10_000], "stop".to_owned()),
        ]
    );

    // Names and unknown templates say what is wrong; nothing is stored.
    let (status, body) = srv
        .call(
            Method::PUT,
            "/v1/plan-templates/Bad%20Name",
            Some(json!({ "stages": [{ "stage": "live", "steps": [{ "rollout_bp": 100 }], "then": "stop" }],
                "reason": "x" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("invalid template name"),
        "{body}"
    );
    let (status, body) = put_plan(
        &srv,
        key,
        json!({ "template": "no-such-one", "reason": "x" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no plan template no-such-one"),
        "{body}"
    );
    assert_eq!(plan(&srv, key).await["template"], "standard-rename");

    // Removed, it is gone; the plan started from it keeps its copy.
    assert_eq!(
        srv.cli(&["plan", "template", "remove", "standard-rename"])
            .await,
        0
    );
    let (_, list) = srv.get("/v1/plan-templates").await;
    assert_eq!(list["templates"], json!([]));
    let (status, _) = srv
        .call(Method::DELETE, "/v1/plan-templates/standard-rename", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(plan(&srv, key).await["stages"].as_array().unwrap().len(), 3);
    srv.stop().await;
}

async fn a_guardrail_halts_the_plan_and_rolls_back_to_the_last_good_step(db: Db) {
    let srv = start(db).await;
    let key = "orders.guarded";
    srv.create(key, false, &[]).await;
    record(&srv, key, "expand_applied").await;
    advance(&srv, key).await;
    assert_eq!(
        srv.cli(&[
            "plan",
            "set",
            key,
            "--stage",
            "dual_write=5,25,100",
            "--hold",
            "1h",
            "--max-mismatch-ratio",
            "0.01",
            "--on-breach",
            "rollback",
            "--reason",
            "guarded",
        ])
        .await,
        0
    );
    let p = settled(&srv, key).await;
    assert_eq!(p["guardrails"]["max_mismatch_ratio"], 0.01, "{p}");
    assert_eq!(p["guardrails"]["min_comparisons"], 100, "{p}");
    assert_eq!(srv.migration(key).await["rollout_bp"], 500);
    srv.clock.advance(HOUR);
    settled(&srv, key).await;
    assert_eq!(srv.migration(key).await["rollout_bp"], 2500);

    // Clients report 5 of 200 shadow reads differing at 25%: over the 1% allowed.
    let minute = srv.clock.clock()() / 60_000 * 60_000;
    let side = json!({ "reads": 200, "writes": 0, "errors": 0, "latency": [0, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] });
    let (status, body) = srv
        .post(
            "/v1/clients/telemetry",
            json!({ "service": "api", "instance_id": "api-1", "entries": [{
                "key": key, "minute_ms": minute, "old": side, "new": side, "comparisons": 200,
                "mismatches": 5, "evaluations_without_entity": 0, "fallback_evaluations": 0 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    eventually(
        Duration::from_secs(10),
        "the guardrail to halt the plan",
        || async { plan(&srv, key).await["status"] == "halted" },
    )
    .await;
    let halted = plan(&srv, key).await;
    let why = halted["status_reason"].as_str().unwrap();
    assert!(
        why.starts_with("halted by guardrail shadow_mismatches: 5 of 200 shadow reads differed (2.500%, limit 1.000%)"),
        "{why}"
    );
    assert!(why.ends_with("; rolled back to dual_write 5%"), "{why}");
    let m = srv.migration(key).await;
    assert_eq!(m["rollout_bp"], 500, "{m}");
    let (_, audit) = srv
        .get(&format!("/v1/migrations/{key}/audit?limit=1"))
        .await;
    assert!(
        audit["entries"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("plan rollback: dual_write 25% → 5%"),
        "{audit}"
    );
    // Halted, it takes no step however long it waits, until someone resumes it.
    srv.clock.advance(HOUR);
    assert_eq!(plan(&srv, key).await["status"], "halted");
    assert_eq!(srv.migration(key).await["rollout_bp"], 500);
    let metrics = srv
        .http
        .get(format!("{}/metrics", srv.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("switchyard_plan_halts_total"), "{metrics}");
    srv.stop().await;
}

async fn a_stalled_backfill_halts_the_plan(db: Db) {
    let srv = start(db).await;
    let key = "orders.stalled-backfill";
    srv.ready_for_backfill(key).await;
    record(&srv, key, "backfill_started").await;
    // The plan waits for the backfill (rule 4 refuses the advance) and watches it meanwhile.
    let (status, body) = put_plan(
        &srv,
        key,
        json!({ "stages": [
            { "stage": "dual_write", "steps": [{ "rollout_bp": 10000 }], "then": "advance" },
            { "stage": "shadow", "steps": [{ "rollout_bp": 10000 }], "then": "stop" }],
            "guardrails": { "max_backfill_stall_seconds": 600 }, "reason": "after the backfill" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["guardrails"]["max_backfill_stall_seconds"], 600,
        "{body}"
    );
    wait_for(
        Duration::from_secs(10),
        "the plan to wait on rule 4",
        || async {
            let p = plan(&srv, key).await;
            if p["waiting"].as_str().unwrap_or_default().contains("rule 4") {
                Ok(())
            } else {
                Err(p.to_string())
            }
        },
    )
    .await;
    // No batch for 11 minutes: the runner is gone.
    srv.clock.advance(Duration::from_secs(11 * 60));
    eventually(
        Duration::from_secs(10),
        "the guardrail to halt the plan",
        || async { plan(&srv, key).await["status"] == "halted" },
    )
    .await;
    let why = plan(&srv, key).await["status_reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        why.starts_with(
            "halted by guardrail backfill_stalled: the backfill has reported no batch for 11m (limit 10m)"
        ),
        "{why}"
    );
    srv.stop().await;
}

/// The same plan through gRPC: set, read back with what it does next, paused and resumed.
async fn plans_over_grpc(db: Db) {
    use switchyard_proto::v1 as pb;
    let srv = start(db).await;
    let key = "orders.grpc-plan";
    srv.create(key, false, &[]).await;
    record(&srv, key, "expand_applied").await;
    let mut grpc = srv.grpc.clone();
    let view = grpc
        .set_plan(srv.req(pb::SetPlanRequest {
            key: key.into(),
            stages: vec![pb::PlanStage {
                stage: pb::Stage::DualWrite as i32,
                steps: vec![
                    pb::PlanStep {
                        rollout_bp: 1000,
                        hold_seconds: 3600,
                    },
                    pb::PlanStep {
                        rollout_bp: 10_000,
                        hold_seconds: 0,
                    },
                ],
                then: "stop".into(),
            }],
            guardrails: Some(pb::PlanGuardrails {
                on_breach: Some("rollback".into()),
                ..Default::default()
            }),
            reason: "over gRPC".into(),
            ..Default::default()
        }))
        .await
        .expect("SetPlan")
        .into_inner();
    assert_eq!(view.status, "running");
    assert_eq!(
        view.guardrails.unwrap().on_breach.as_deref(),
        Some("rollback")
    );
    settled(&srv, key).await;
    let view = grpc
        .get_plan(srv.req(pb::GetPlanRequest { key: key.into() }))
        .await
        .expect("GetPlan")
        .into_inner();
    assert_eq!(view.next_kind, "wait", "{view:?}");
    assert!(
        view.next_description
            .starts_with("holding dual_write at 10%"),
        "{view:?}"
    );
    assert_eq!(view.stages[0].stage, pb::Stage::DualWrite as i32);
    let view = grpc
        .pause_plan(srv.req(pb::PlanChangeRequest {
            key: key.into(),
            reason: "wait".into(),
        }))
        .await
        .expect("PausePlan")
        .into_inner();
    assert_eq!(view.status, "paused");
    // A stage left unspecified is refused, saying what is missing.
    let refused = grpc
        .set_plan(srv.req(pb::SetPlanRequest {
            key: key.into(),
            stages: vec![pb::PlanStage {
                stage: 0,
                steps: vec![],
                then: "stop".into(),
            }],
            reason: "x".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("needs its stage"),
        "{}",
        refused.message()
    );
    let listed = grpc
        .list_plans(srv.req(pb::ListPlansRequest {}))
        .await
        .expect("ListPlans")
        .into_inner();
    assert_eq!(listed.plans.len(), 1);
    assert_eq!(
        (
            listed.plans[0].key.as_str(),
            listed.plans[0].status.as_str()
        ),
        (key, "paused")
    );

    // Templates: set, listed with the same stages, a plan started from one, removed.
    let cautious = pb::PlanStage {
        stage: pb::Stage::DualWrite as i32,
        steps: vec![
            pb::PlanStep {
                rollout_bp: 100,
                hold_seconds: 3600,
            },
            pb::PlanStep {
                rollout_bp: 10_000,
                hold_seconds: 0,
            },
        ],
        then: "stop".into(),
    };
    let template = grpc
        .set_plan_template(srv.req(pb::SetPlanTemplateRequest {
            name: "cautious".into(),
            stages: vec![cautious.clone()],
            window: "mon-fri 09:00-16:00 Europe/Berlin".into(),
            description: "one percent for an hour".into(),
            reason: "house style".into(),
        }))
        .await
        .expect("SetPlanTemplate")
        .into_inner();
    assert_eq!(template.stages, vec![cautious.clone()]);
    assert_eq!(template.updated_by, "admin (token 1)");
    let templates = grpc
        .list_plan_templates(srv.req(pb::ListPlanTemplatesRequest {}))
        .await
        .expect("ListPlanTemplates")
        .into_inner()
        .templates;
    assert_eq!(templates, vec![template.clone()]);
    let view = grpc
        .set_plan(srv.req(pb::SetPlanRequest {
            key: key.into(),
            template: "cautious".into(),
            reason: "from the template".into(),
            ..Default::default()
        }))
        .await
        .expect("SetPlan from a template")
        .into_inner();
    assert_eq!(
        (view.template.as_str(), view.window.as_str()),
        ("cautious", "mon-fri 09:00-16:00 Europe/Berlin")
    );
    assert_eq!(view.stages, vec![cautious]);
    let removed = grpc
        .remove_plan_template(srv.req(pb::RemovePlanTemplateRequest {
            name: "cautious".into(),
        }))
        .await
        .expect("RemovePlanTemplate")
        .into_inner();
    assert_eq!(removed.name, "cautious");
    let gone = grpc
        .remove_plan_template(srv.req(pb::RemovePlanTemplateRequest {
            name: "cautious".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
    srv.stop().await;
}

both_databases!(
    a_stalled_backfill_halts_the_plan,
    a_plan_drives_a_migration_from_off_to_complete,
    a_manual_change_pauses_the_plan_and_resume_carries_on,
    refused_and_scheduled_steps_wait_and_say_why,
    templates_start_plans_that_override_part_of_them,
    a_guardrail_halts_the_plan_and_rolls_back_to_the_last_good_step,
    plans_over_grpc,
);
