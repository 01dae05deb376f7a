//! `GET /v1/migrations/{key}/actions`: the safety rules' verdict on each traffic change now,
//! computed on the real state and fleet and writing nothing; what the dashboard disables its
//! buttons by.

use reqwest::StatusCode;
use serde_json::Value;
use switchyard_tests::{Db, TestServer, both_databases};

const KEY: &str = "users.dry-run";

/// `action` → (allowed, rule, message).
async fn verdicts(srv: &TestServer) -> Vec<(String, bool, Option<u64>, String)> {
    let (status, body) = srv.get(&format!("/v1/migrations/{KEY}/actions")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], srv.version_of(KEY).await, "{body}");
    body["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_owned(),
                a["allowed"].as_bool().unwrap(),
                a["rule"].as_u64(),
                a["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn verdict<'a>(
    all: &'a [(String, bool, Option<u64>, String)],
    action: &str,
) -> &'a (String, bool, Option<u64>, String) {
    all.iter()
        .find(|v| v.0 == action)
        .unwrap_or_else(|| panic!("no {action} in {all:?}"))
}

async fn audit_len(srv: &TestServer) -> usize {
    let (status, body) = srv
        .get(&format!("/v1/migrations/{KEY}/audit?limit=500"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["entries"].as_array().unwrap().len()
}

async fn post(srv: &TestServer, path: &str, mut body: Value) -> Value {
    body["expected_version"] = srv.version_of(KEY).await.into();
    body["reason"] = "dry run test".into();
    let (status, answer) = srv
        .post(&format!("/v1/migrations/{KEY}/{path}"), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    answer
}

async fn verdicts_follow_the_rules_and_change_nothing(db: Db) {
    let srv = TestServer::start(db).await;
    srv.create(KEY, true, &[]).await;

    // At off, before expand: advancing is refused by rule 2, and there is no front to ramp.
    let v = verdicts(&srv).await;
    let advance = verdict(&v, "advance");
    assert!(
        !advance.1 && advance.2 == Some(2) && advance.3.contains("expand"),
        "{advance:?}"
    );
    assert!(!verdict(&v, "ramp_full").1, "{v:?}");

    post(
        &srv,
        "events",
        serde_json::json!({ "event": "expand_applied" }),
    )
    .await;
    post(&srv, "advance", serde_json::json!({})).await;
    // dual_write at 0%: advancing needs 100% (rule 1); ramping up is allowed; ramping to 0%
    // is where it is already, so nothing would change; stepping back is allowed.
    let v = verdicts(&srv).await;
    let advance = verdict(&v, "advance");
    assert!(!advance.1 && advance.2 == Some(1), "{advance:?}");
    assert!(verdict(&v, "ramp_full").1, "{v:?}");
    assert!(verdict(&v, "retreat").1, "{v:?}");
    let zero = verdict(&v, "ramp_zero");
    assert!(
        !zero.1 && zero.2.is_none() && zero.3.contains("already at"),
        "{zero:?}"
    );

    post(&srv, "rollout", serde_json::json!({ "rollout_bp": 10_000 })).await;
    // At dual_write 100% with a backfill not started: advancing to shadow is refused by rule 4.
    let before = (
        srv.version_of(KEY).await,
        audit_len(&srv).await,
        srv.snapshot_version().await,
    );
    let v = verdicts(&srv).await;
    let advance = verdict(&v, "advance");
    assert!(!advance.1 && advance.2 == Some(4), "{advance:?}");
    // Asking wrote nothing: no version, no audit record, no snapshot change.
    let after = (
        srv.version_of(KEY).await,
        audit_len(&srv).await,
        srv.snapshot_version().await,
    );
    assert_eq!(after, before);
    srv.stop().await;
}

both_databases!(verdicts_follow_the_rules_and_change_nothing);
