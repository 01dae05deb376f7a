//! Four eyes: a server that requires approval for the default set of changes. A gated change
//! made directly is refused and says how to ask; a request is approved by a second token (never
//! the requester's), applied through the rules at the version it was asked at, and audited with
//! both names; a change since makes it stale; an admin may bypass, recorded as such; a plan
//! files its own requests and waits on them, through a whole migration.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use switchyard_domain::Stage;
use switchyard_proto::v1 as pb;
use switchyard_tests::{
    Db, TestClock, TestDb, TestServer, both_databases, grpc_detail, request_as, wait_for,
};

const HOUR: Duration = Duration::from_secs(3600);

async fn start(db: Db) -> TestServer {
    let db = Arc::new(TestDb::new(db).await);
    TestServer::start_configured(db, TestClock::new(), |c| {
        c.plan_interval = Duration::from_millis(20);
        c.require_approval = switchyard_domain::approval::ApprovalPolicy::parse("default").unwrap();
    })
    .await
}

async fn post_as(srv: &TestServer, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    srv.call_as(token, Method::POST, path, Some(body)).await
}

/// The audit entries of `key`, oldest first.
async fn audit(srv: &TestServer, key: &str) -> Vec<Value> {
    let (status, body) = srv
        .get(&format!("/v1/migrations/{key}/audit?limit=500"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut entries = body["entries"].as_array().unwrap().clone();
    entries.reverse();
    entries
}

async fn four_eyes_on_a_change(db: Db) {
    let srv = start(db).await;
    let key = "users.four-eyes";
    srv.at_full(key, Stage::Shadow).await;
    let alice = srv.token_with_role("alice", "operator").await;
    let bob = srv.token_with_role("bob", "operator").await;
    let advance = format!("/v1/migrations/{key}/advance");
    let v = srv.version_of(key).await;

    // Directly: refused, nothing changes, and the message says how to ask.
    let (status, body) = post_as(
        &srv,
        &alice,
        &advance,
        json!({ "expected_version": v, "reason": "shadow is clean" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "approval_required", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("leaving shadow for live") && message.contains("--request-approval"),
        "{message}"
    );
    assert_eq!(srv.version_of(key).await, v);

    // Filed: 202 with the request and where it lives; still nothing applied.
    let response = srv
        .http
        .post(format!("{}{advance}", srv.base))
        .bearer_auth(&alice)
        .json(&json!({ "expected_version": v, "reason": "shadow is clean", "request_approval": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let filed: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/v1/approvals/{}", filed["id"]));
    assert_eq!(filed["status"], "pending", "{filed}");
    assert_eq!(filed["gated"], "enter-live", "{filed}");
    assert_eq!(filed["change"], "advance shadow 100% → live 0%", "{filed}");
    assert_eq!(filed["requested_by"], "alice (token 2)", "{filed}");
    assert_eq!(srv.version_of(key).await, v);
    let id = filed["id"].as_u64().unwrap();
    // One request at a time per migration.
    let (status, body) = post_as(
        &srv,
        &bob,
        &advance,
        json!({ "expected_version": v, "reason": "me too", "request_approval": true }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&format!("approval {id} is already pending")),
        "{body}"
    );
    // The inbox lists it.
    let (_, inbox) = srv.get("/v1/approvals").await;
    assert_eq!(inbox["approvals"][0]["id"], id, "{inbox}");

    // The requester may not approve it: a second person must.
    let approve = format!("/v1/approvals/{id}/approve");
    let (status, body) = post_as(&srv, &alice, &approve, json!({ "reason": "mine" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("a second person must approve it"),
        "{body}"
    );
    // A reader may not either.
    let reader = srv.token_with_role("carol", "reader").await;
    let (status, _) = post_as(&srv, &reader, &approve, json!({ "reason": "x" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Bob approves (with the CLI): applied as alice's change, audited with both names.
    assert_eq!(
        srv.cli_as(
            &bob,
            &[
                "approvals",
                "approve",
                &id.to_string(),
                "--reason",
                "looked at the charts"
            ]
        )
        .await,
        0
    );
    let m = srv.migration(key).await;
    assert_eq!(
        (m["stage"].as_str(), m["rollout_bp"].as_u64()),
        (Some("live"), Some(0))
    );
    let entries = audit(&srv, key).await;
    let last = entries.last().unwrap();
    assert_eq!(last["action"], "advance", "{last}");
    assert_eq!(last["actor"], "alice (token 2)", "{last}");
    assert_eq!(last["approved_by"], "bob (token 3)", "{last}");
    assert_eq!(last["reason"], "shadow is clean", "{last}");
    let (_, decided) = srv.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(decided["status"], "applied", "{decided}");
    assert_eq!(decided["decided_by"], "bob (token 3)", "{decided}");
    assert_eq!(
        decided["decision_reason"], "looked at the charts",
        "{decided}"
    );
    // Applied once: approving again changes nothing.
    let v = srv.version_of(key).await;
    let (status, body) = post_as(&srv, &bob, &approve, json!({ "reason": "again" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(srv.version_of(key).await, v);

    // A change that needs no approval is not filed.
    let (status, body) = post_as(
        &srv,
        &alice,
        &format!("/v1/migrations/{key}/rollout"),
        json!({ "rollout_bp": 1000, "expected_version": v, "reason": "x", "request_approval": true }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("needs no approval"),
        "{body}"
    );
    srv.stop().await;
}

async fn an_approval_after_another_change_is_stale(db: Db) {
    let srv = start(db).await;
    let key = "orders.stale-approval";
    srv.at_full(key, Stage::Shadow).await;
    let alice = srv.token_with_role("alice", "operator").await;
    let bob = srv.token_with_role("bob", "operator").await;
    let n = srv.version_of(key).await;
    let advance = format!("/v1/migrations/{key}/advance");
    let rollout = format!("/v1/migrations/{key}/rollout");
    // Entering live, asked at version N.
    let (status, filed) = post_as(
        &srv,
        &alice,
        &advance,
        json!({ "expected_version": n, "reason": "clean", "request_approval": true }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{filed}");
    let id = filed["id"].as_u64().unwrap();
    // Meanwhile the migration changes (shadow ramped down: no approval needed).
    let (status, body) = srv
        .post(
            &rollout,
            json!({ "rollout_bp": 5000, "expected_version": n, "reason": "fewer comparisons" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = srv.version_of(key).await;
    // Approved after that: refused as stale (rule 8), and the request can never apply.
    let (status, body) = post_as(
        &srv,
        &bob,
        &format!("/v1/approvals/{id}/approve"),
        json!({ "reason": "ok" }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "stale_version", "{body}");
    assert_eq!(srv.version_of(key).await, after);
    assert_eq!(srv.migration(key).await["stage"], "shadow");
    let (_, decided) = srv.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(decided["status"], "stale", "{decided}");

    // Back at 100%: a rejected request and a withdrawn one change nothing.
    let (status, body) = srv
        .post(
            &rollout,
            json!({ "rollout_bp": 10000, "expected_version": after, "reason": "all again" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let full = srv.version_of(key).await;
    let ask = |reason: &'static str| json!({ "expected_version": full, "reason": reason, "request_approval": true });
    let (_, filed) = post_as(&srv, &alice, &advance, ask("clean again")).await;
    let id = filed["id"].as_u64().unwrap();
    let (status, body) = post_as(
        &srv,
        &bob,
        &format!("/v1/approvals/{id}/reject"),
        json!({ "reason": "one more day of shadow" }),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("rejected")),
        "{body}"
    );
    let (_, filed) = post_as(&srv, &alice, &advance, ask("once more")).await;
    let id = filed["id"].as_u64().unwrap();
    let (status, body) = post_as(
        &srv,
        &alice,
        &format!("/v1/approvals/{id}/reject"),
        json!({ "reason": "never mind" }),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("withdrawn")),
        "{body}"
    );
    assert_eq!(srv.version_of(key).await, full);

    // An operator may not bypass; an admin may, and the audit says so.
    let bypass =
        json!({ "expected_version": full, "reason": "incident 42", "bypass_approval": true });
    let (status, body) = post_as(&srv, &alice, &advance, bypass.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("only an admin"),
        "{body}"
    );
    let (status, body) = srv.post(&advance, bypass).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entries = audit(&srv, key).await;
    let last = entries.last().unwrap();
    assert_eq!(last["reason"], "incident 42", "{last}");
    assert_eq!(
        last["approved_by"], "approval bypassed by admin admin (token 1)",
        "{last}"
    );
    // An admin's bypass where nothing needed approval records none.
    let (status, body) = srv
        .post(
            &rollout,
            json!({ "rollout_bp": 500, "expected_version": srv.version_of(key).await,
                    "reason": "canary", "bypass_approval": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entries = audit(&srv, key).await;
    assert_eq!(entries.last().unwrap()["approved_by"], "", "{entries:?}");
    srv.stop().await;
}

async fn approvals_over_grpc(db: Db) {
    let srv = start(db).await;
    let key = "orders.grpc-approval";
    srv.at_full(key, Stage::Shadow).await;
    let alice = srv.token_with_role("alice", "operator").await;
    let bob = srv.token_with_role("bob", "operator").await;
    let v = srv.version_of(key).await;
    let step = pb::StepRequest {
        key: key.into(),
        expected_version: v,
        reason: "clean".into(),
        ..Default::default()
    };
    let mut grpc = srv.grpc.clone();
    let refused = grpc
        .advance(request_as(&alice, step.clone()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(grpc_detail(&refused).code, "approval_required");
    let filed = grpc
        .request_approval(request_as(
            &alice,
            pb::RequestApprovalRequest {
                change: Some(pb::request_approval_request::Change::Advance(step)),
            },
        ))
        .await
        .expect("RequestApproval")
        .into_inner();
    assert_eq!(
        (filed.status.as_str(), filed.gated.as_str()),
        ("pending", "enter-live")
    );
    let listed = grpc
        .list_approvals(request_as(&bob, pb::ListApprovalsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.approvals.len(), 1);
    let applied = grpc
        .approve_change(request_as(
            &bob,
            pb::DecideApprovalRequest {
                id: filed.id,
                reason: "ok".into(),
            },
        ))
        .await
        .expect("ApproveChange")
        .into_inner();
    assert_eq!(applied.status, "applied");
    let m = applied.migration.expect("the migration after it");
    assert_eq!(m.stage, pb::Stage::Live as i32);
    let audit = grpc
        .audit(srv.req(pb::AuditRequest {
            key: key.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audit.entries[0].approved_by, "bob (token 3)");
    srv.stop().await;
}

/// Waits until the plan is done, holding (a wait that ends at a time), or waiting for an
/// approval; answers the plan.
async fn plan_settled(srv: &TestServer, key: &str) -> Value {
    wait_for(Duration::from_secs(10), "the plan to settle", || async {
        let (_, p) = srv.get(&format!("/v1/migrations/{key}/plan")).await;
        let holding = p["next"]["kind"] == "wait" && p["next"]["at_ms"].is_i64();
        let approving = p["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("waiting for approval"));
        if p["status"] == "done" || holding || approving {
            Ok(p)
        } else {
            Err(p.to_string())
        }
    })
    .await
}

async fn a_plan_waits_for_approvals_through_a_whole_migration(db: Db) {
    let srv = start(db).await;
    let key = "orders.planned-four-eyes";
    srv.create(key, false, &["api"]).await;
    let v = srv.version_of(key).await;
    let (status, body) = srv
        .post(
            &format!("/v1/migrations/{key}/events"),
            json!({ "event": "expand_applied", "expected_version": v, "reason": "ddl" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    srv.heartbeat("api", "api-1", srv.snapshot_version().await)
        .await;
    let bob = srv.token_with_role("bob", "operator").await;
    // The plan also has dual_write's advance approved (then: approve), beyond the server's
    // default set (entering live, ramping complete).
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
            "complete=25,100",
            "--approve-advance",
            "dual_write",
            "--hold",
            "1h",
            "--reason",
            "cautious rename",
        ])
        .await;
    assert_eq!(code, 0);

    let mut approved = Vec::new();
    let mut looks = 0;
    loop {
        let p = plan_settled(&srv, key).await;
        if p["status"] == "done" {
            break;
        }
        looks += 1;
        assert!(looks < 40, "the plan never finished: {p}");
        let waiting = p["waiting"].as_str().unwrap_or_default();
        if let Some(rest) = waiting.split("waiting for approval ").nth(1) {
            let id: u64 = rest.split(' ').next().unwrap().parse().unwrap();
            let (_, a) = srv.get(&format!("/v1/approvals/{id}")).await;
            assert_eq!(a["origin"], "plan", "{a}");
            // The plan's requests are the plan owner's: the admin who set it may not approve.
            assert_eq!(
                srv.cli(&["approvals", "approve", &id.to_string(), "--reason", "mine"])
                    .await,
                3,
                "the admin approved its own plan's request"
            );
            assert_eq!(
                srv.cli_as(
                    &bob,
                    &["approvals", "approve", &id.to_string(), "--reason", "go"]
                )
                .await,
                0
            );
            approved.push(a["change"].as_str().unwrap().to_owned());
            // The driver's next look moves past the approved step.
            let was = waiting.to_owned();
            wait_for(Duration::from_secs(10), "the plan to move on", || async {
                let (_, p) = srv.get(&format!("/v1/migrations/{key}/plan")).await;
                if p["waiting"] == was.as_str() {
                    Err(p.to_string())
                } else {
                    Ok(())
                }
            })
            .await;
            continue;
        }
        srv.clock.advance(HOUR);
        srv.heartbeat("api", "api-1", srv.snapshot_version().await)
            .await;
    }
    assert_eq!(
        approved,
        [
            "advance dual_write 100% → shadow 0%",
            "advance shadow 100% → live 0%",
            "ramp complete 0% → complete 25%",
        ]
    );
    let m = srv.migration(key).await;
    assert_eq!(
        (m["stage"].as_str(), m["rollout_bp"].as_u64()),
        (Some("complete"), Some(10_000))
    );
    // Every step once, in order, in the plan's name; the approved ones with bob's.
    let steps: Vec<(String, String)> = audit(&srv, key)
        .await
        .iter()
        .filter(|e| e["reason"].as_str().unwrap().starts_with("plan step: "))
        .map(|e| {
            assert!(
                e["actor"].as_str().unwrap().starts_with("plan of admin"),
                "{e}"
            );
            (
                e["reason"].as_str().unwrap()["plan step: ".len()..].to_owned(),
                e["approved_by"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let bob_id = "bob (token 2)";
    let expected = [
        ("advance to dual_write", ""),
        ("dual_write 0% → 1%", ""),
        ("dual_write 1% → 50%", ""),
        ("dual_write 50% → 100%", ""),
        ("advance to shadow", bob_id),
        ("shadow 0% → 100%", ""),
        ("advance to live", bob_id),
        ("live 0% → 10%", ""),
        ("live 10% → 100%", ""),
        ("advance to rampdown", ""),
        ("rampdown 0% → 100%", ""),
        ("advance to complete", ""),
        ("complete 0% → 25%", bob_id),
        ("complete 25% → 100%", ""),
    ]
    .map(|(s, b)| (s.to_owned(), b.to_owned()));
    assert_eq!(steps, expected);

    // The contract: asked for approval, approved, and judged by the gate as it is applied (the
    // soak has not passed, so rule 7 refuses it and the request stays pending).
    let v = srv.version_of(key).await;
    let (status, filed) = srv
        .post(
            &format!("/v1/migrations/{key}/events"),
            json!({ "event": "contracted", "expected_version": v, "reason": "drop", "request_approval": true }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{filed}");
    let (status, body) = post_as(
        &srv,
        &bob,
        &format!("/v1/approvals/{}/approve", filed["id"]),
        json!({ "reason": "gate?" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        (body["code"].as_str(), body["rule"].as_u64()),
        (Some("rule_refused"), Some(7)),
        "{body}"
    );
    let (_, still) = srv.get(&format!("/v1/approvals/{}", filed["id"])).await;
    assert_eq!(still["status"], "pending", "{still}");
    srv.stop().await;
}

both_databases!(
    four_eyes_on_a_change,
    an_approval_after_another_change_is_stale,
    approvals_over_grpc,
    a_plan_waits_for_approvals_through_a_whole_migration
);
