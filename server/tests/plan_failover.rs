//! Two server processes on one PostgreSQL database, each able to drive plans: one drives at a
//! time; `kill -9` the one driving mid-plan, and the other takes over within the lease and
//! finishes the plan with no step repeated or lost.

mod common;

use common::{kill_hard, serve_with, terminate, wait_for};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const KEY: &str = "orders.failover";
const ADMIN: &str = "sy_plan-failover-admin-token";
/// Ten steps of dual_write, looked at every 50 ms (so the lease is 250 ms).
const STEPS: u32 = 10;

async fn call(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The plan's steps in the audit log, oldest first.
async fn plan_steps(http: &reqwest::Client, base: &str) -> Vec<String> {
    let (status, audit) = call(
        http,
        base,
        reqwest::Method::GET,
        &format!("/v1/migrations/{KEY}/audit?limit=500"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter_map(|e| {
            e["reason"]
                .as_str()?
                .strip_prefix("plan step: ")
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_replica_takes_over_a_plan_without_repeating_or_losing_a_step() {
    let name = format!("switchyard_plan_failover_{}", std::process::id());
    let (url, mut conn) = common::fresh_postgres(&name).await;
    let interval = ["--plan-interval", "50ms"];

    // The first replica alone: it holds the driver's lease from its first look.
    let first = serve_with(&url, Some(ADMIN), &interval);
    let http = reqwest::Client::new();
    let (status, body) = call(
        &http,
        &first.http,
        reqwest::Method::POST,
        "/v1/migrations",
        Some(json!({ "key": KEY, "reason": "failover test" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = call(&http, &first.http, reqwest::Method::POST, &format!("/v1/migrations/{KEY}/events"),
        Some(json!({ "event": "expand_applied", "expected_version": body["version"], "reason": "ddl" }))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Each step held 1 s (holds are whole seconds), so the plan takes about ten seconds.
    let steps: Vec<Value> = (1..=STEPS)
        .map(|i| json!({ "rollout_bp": i * 1000, "hold_seconds": 1 }))
        .collect();
    let (status, body) = call(
        &http,
        &first.http,
        reqwest::Method::PUT,
        &format!("/v1/migrations/{KEY}/plan"),
        Some(
            json!({ "stages": [{ "stage": "dual_write", "steps": steps, "then": "stop" }],
            "reason": "ten steps" }),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Once the first has taken a few steps, the second starts; the first keeps driving.
    wait_for(
        Duration::from_secs(30),
        "the first replica's first steps",
        || async {
            let taken = plan_steps(&http, &first.http).await;
            if taken.len() >= 3 {
                Ok(())
            } else {
                Err(format!("{taken:?}"))
            }
        },
    )
    .await;
    let second = serve_with(&url, None, &interval);
    // The first is killed mid-plan, with no chance to hand anything over.
    let taken_before = plan_steps(&http, &second.http).await.len();
    kill_hard(first);
    assert!(
        taken_before < STEPS as usize + 1,
        "the plan ended before the kill"
    );

    // The second finishes the plan.
    wait_for(
        Duration::from_secs(60),
        "the second replica to finish the plan",
        || async {
            let (status, plan) = call(
                &http,
                &second.http,
                reqwest::Method::GET,
                &format!("/v1/migrations/{KEY}/plan"),
                None,
            )
            .await;
            if status == StatusCode::OK && plan["status"] == "done" {
                Ok(())
            } else {
                Err(format!("{status} {plan}"))
            }
        },
    )
    .await;
    let mut expected = vec!["advance to dual_write".to_owned()];
    let mut at = 0;
    for i in 1..=STEPS {
        expected.push(format!("dual_write {}% → {}%", at, i * 10));
        at = i * 10;
    }
    assert_eq!(
        plan_steps(&http, &second.http).await,
        expected,
        "each step once, in order"
    );
    let (_, m) = call(
        &http,
        &second.http,
        reqwest::Method::GET,
        &format!("/v1/migrations/{KEY}"),
        None,
    )
    .await;
    assert_eq!(
        (m["stage"].as_str(), m["rollout_bp"].as_u64()),
        (Some("dual_write"), Some(10_000))
    );
    terminate(second);
    common::drop_postgres(&mut conn, &name).await;
}
