//! Webhooks against a real local HTTP receiver: changes, plan steps and a guardrail's halt
//! arrive signed (checked here with an independent HMAC), in the Slack shape where asked; a
//! receiver that is down for a while gets every event once it is back, in order, with the
//! retries in the delivery log, across a server restart in between.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use switchyard_tests::receiver::Receiver;
use switchyard_tests::{Db, TestClock, TestDb, TestServer, both_databases, eventually, wait_for};

async fn start_on(db: Arc<TestDb>, clock: TestClock) -> TestServer {
    TestServer::start_configured(db, clock, |c| {
        c.plan_interval = Duration::from_millis(20);
        c.webhook_interval = Duration::from_millis(20);
    })
    .await
}

async fn ramp(srv: &TestServer, key: &str, bp: u32) {
    let v = srv.version_of(key).await;
    let (status, body) = srv
        .post(
            &format!("/v1/migrations/{key}/rollout"),
            json!({ "rollout_bp": bp, "expected_version": v, "reason": "step" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn subscribe(srv: &TestServer, body: Value) -> (u64, String) {
    let (status, created) = srv.post("/v1/webhooks", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    (
        created["webhook"]["id"].as_u64().unwrap(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

async fn changes_plan_steps_and_a_halt_arrive_signed(db: Db) {
    let (receiver, url) = Receiver::start().await;
    let (slack, slack_url) = Receiver::start().await;
    let srv = start_on(Arc::new(TestDb::new(db).await), TestClock::new()).await;
    let key = "orders.notified";
    let (_, secret) = subscribe(
        &srv,
        json!({ "url": url, "events": ["change", "plan_step", "plan_halt"], "migrations": ["orders.*"] }),
    )
    .await;
    // The Slack-shaped one through the CLI; the secret is printed once, never listed.
    assert_eq!(
        srv.cli(&[
            "webhook",
            "add",
            &slack_url,
            "--event",
            "plan_halt",
            "--format",
            "slack",
        ])
        .await,
        0
    );
    let (_, listed) = srv.get("/v1/webhooks").await;
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains("whsec_"), "{listed}");
    // Another migration's events are not this subscription's.
    srv.create("users.elsewhere", false, &[]).await;

    srv.create(key, false, &[]).await;
    let v = srv.version_of(key).await;
    let (status, body) = srv
        .post(
            &format!("/v1/migrations/{key}/events"),
            json!({ "event": "expand_applied", "expected_version": v, "reason": "ddl" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = srv
        .post(
            &format!("/v1/migrations/{key}/advance"),
            json!({ "expected_version": v + 1, "reason": "go" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A plan's first step, then a breach at 25%: halted and rolled back.
    assert_eq!(
        srv.cli(&[
            "plan",
            "set",
            key,
            "--stage",
            "dual_write=5,25,100",
            "--hold",
            "1h",
            "--on-breach",
            "rollback",
            "--reason",
            "guarded",
        ])
        .await,
        0
    );
    wait_for(Duration::from_secs(10), "the first step", || async {
        let m = srv.migration(key).await;
        if m["rollout_bp"] == 500 {
            Ok(())
        } else {
            Err(m.to_string())
        }
    })
    .await;
    srv.clock.advance(Duration::from_secs(3600));
    wait_for(Duration::from_secs(10), "the second step", || async {
        let m = srv.migration(key).await;
        if m["rollout_bp"] == 2500 {
            Ok(())
        } else {
            Err(m.to_string())
        }
    })
    .await;
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

    let events = wait_for(Duration::from_secs(10), "the halt to arrive", || async {
        let events = receiver.events();
        if events.iter().any(|(_, e)| e["event"] == "plan_halt") {
            Ok(events)
        } else {
            Err(format!(
                "{:?}",
                events.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>()
            ))
        }
    })
    .await;
    receiver.check_signatures(&secret);
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|(h, e)| {
            assert_eq!(h["switchyard-event"], e["event"].as_str().unwrap());
            assert_eq!(e["key"], key, "{e}");
            let what = match e["event"].as_str().unwrap() {
                "plan_halt" => e["why"].as_str().unwrap().to_owned(),
                _ => format!(
                    "{} {}→{}",
                    e["action"].as_str().unwrap(),
                    e["before"]["rollout_bp"],
                    e["after"]["rollout_bp"]
                ),
            };
            (e["event"].as_str().unwrap().to_owned(), what)
        })
        .collect();
    assert_eq!(
        seen[..6]
            .iter()
            .map(|(t, w)| (t.as_str(), w.as_str()))
            .collect::<Vec<_>>(),
        [
            ("change", "create 10000→10000"),
            ("change", "expand_applied 10000→10000"),
            ("change", "advance 10000→0"),
            ("plan_step", "set_rollout 0→500"),
            ("plan_step", "set_rollout 500→2500"),
            ("plan_step", "set_rollout 2500→500"),
        ]
    );
    let (kind, why) = &seen[6];
    assert_eq!(kind, "plan_halt");
    assert!(
        why.starts_with("halted by guardrail shadow_mismatches: 5 of 200 shadow reads differed")
            && why.ends_with("rolled back to dual_write 5%"),
        "{why}"
    );
    // The Slack-shaped subscription got the halt as a message.
    eventually(Duration::from_secs(10), "the Slack message", || async {
        !slack.events().is_empty()
    })
    .await;
    let (_, message) = &slack.events()[0];
    let text = message["text"].as_str().unwrap();
    assert!(
        text.contains(key) && text.contains("halted by guardrail shadow_mismatches"),
        "{text}"
    );
    srv.stop().await;
}

async fn a_receiver_down_then_back_gets_everything_in_order_across_a_restart(db: Db) {
    let (receiver, url) = Receiver::start().await;
    receiver.down.store(true, Ordering::SeqCst);
    let db = Arc::new(TestDb::new(db).await);
    let clock = TestClock::new();
    let srv = start_on(db.clone(), clock.clone()).await;
    let key = "users.notified";
    // At dual_write 0% before anyone subscribes: only the ramps below are sent.
    srv.create(key, false, &[]).await;
    for (path, body) in [
        ("events", json!({ "event": "expand_applied" })),
        ("advance", json!({})),
    ] {
        let mut body = body;
        body["expected_version"] = srv.version_of(key).await.into();
        body["reason"] = "setup".into();
        let (status, answer) = srv
            .post(&format!("/v1/migrations/{key}/{path}"), body)
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let (id, secret) = subscribe(&srv, json!({ "url": url, "events": ["change"] })).await;
    ramp(&srv, key, 100).await;
    ramp(&srv, key, 200).await;
    // The first delivery is tried and refused (503), then waits out its backoff.
    let log = wait_for(Duration::from_secs(10), "a failed attempt", || async {
        let (_, log) = srv.get(&format!("/v1/webhooks/{id}/deliveries")).await;
        let oldest = log["deliveries"]
            .as_array()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default();
        if oldest["attempts"] == 1 {
            Ok(log)
        } else {
            Err(log.to_string())
        }
    })
    .await;
    let oldest = log["deliveries"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(oldest["status"], "pending", "{oldest}");
    assert_eq!(oldest["last_status"], 503, "{oldest}");
    assert!(
        oldest["last_error"].as_str().unwrap().contains("503"),
        "{oldest}"
    );
    // Later events wait behind it: none overtakes the first.
    for d in log["deliveries"].as_array().unwrap() {
        if d["id"] != oldest["id"] {
            assert_eq!(d["attempts"], 0, "{d}");
        }
    }
    // Another round of backoff, another refusal.
    clock.advance(Duration::from_secs(5));
    wait_for(
        Duration::from_secs(10),
        "a second failed attempt",
        || async {
            let (_, log) = srv.get(&format!("/v1/webhooks/{id}/deliveries")).await;
            let oldest = log["deliveries"]
                .as_array()
                .unwrap()
                .last()
                .cloned()
                .unwrap_or_default();
            if oldest["attempts"] == 2 {
                Ok(())
            } else {
                Err(log.to_string())
            }
        },
    )
    .await;

    // The server restarts while they wait; one more change after it.
    srv.stop().await;
    let srv = start_on(db.clone(), clock.clone()).await;
    ramp(&srv, key, 300).await;
    assert!(receiver.events().is_empty());

    // The receiver is back; once the backoff has passed, everything arrives, in order, once.
    receiver.down.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(60));
    let events = wait_for(Duration::from_secs(10), "every event", || async {
        let events = receiver.events();
        if events.len() >= 3 {
            Ok(events)
        } else {
            Err(format!("{} so far", events.len()))
        }
    })
    .await;
    receiver.check_signatures(&secret);
    let fronts: Vec<(String, u64)> = events
        .iter()
        .map(|(_, e)| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["after"]["rollout_bp"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        fronts,
        [
            ("set_rollout".to_owned(), 100),
            ("set_rollout".to_owned(), 200),
            ("set_rollout".to_owned(), 300),
        ]
    );
    let versions: Vec<u64> = events
        .iter()
        .map(|(_, e)| e["version"].as_u64().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    // The receiver has the last event before its answer reaches the server, which records
    // the delivery only then: wait for the log to catch up.
    let log = wait_for(
        Duration::from_secs(10),
        "every delivery recorded",
        || async {
            let (_, log) = srv.get(&format!("/v1/webhooks/{id}/deliveries")).await;
            let log = log["deliveries"].as_array().unwrap().clone();
            if log.iter().all(|d| d["status"] == "delivered") {
                Ok(log)
            } else {
                Err(format!("{log:?}"))
            }
        },
    )
    .await;
    assert_eq!(log.last().unwrap()["attempts"], 3, "{log:?}");
    // No duplicate: each delivery id once.
    let ids: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|(h, _)| h["switchyard-delivery"].to_str().unwrap())
        .collect();
    assert_eq!(ids.len(), events.len());

    // A test event, through the CLI, to this subscription only.
    assert_eq!(srv.cli(&["webhook", "test", &id.to_string()]).await, 0);
    eventually(Duration::from_secs(10), "the test event", || async {
        receiver.events().iter().any(|(_, e)| e["event"] == "test")
    })
    .await;
    // Removed, it gets nothing more.
    assert_eq!(srv.cli(&["webhook", "remove", &id.to_string()]).await, 0);
    let before = receiver.events().len();
    ramp(&srv, key, 400).await;
    let (_, listed) = srv.get("/v1/webhooks").await;
    assert_eq!(listed["webhooks"], json!([]));
    let (_, log) = srv.get(&format!("/v1/webhooks/{id}/deliveries")).await;
    assert!(
        log["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["event"] != "change" || d["status"] == "delivered"),
        "{log}"
    );
    assert_eq!(receiver.events().len(), before);
    srv.stop().await;
}

async fn bad_subscriptions_are_refused(db: Db) {
    let srv = start_on(Arc::new(TestDb::new(db).await), TestClock::new()).await;
    for (body, says) in [
        (
            json!({ "url": "ftp://x/y", "events": ["change"] }),
            "http:// or https://",
        ),
        (
            json!({ "url": "not a url", "events": ["change"] }),
            "invalid webhook url",
        ),
        (
            json!({ "url": "http://x/y", "events": [] }),
            "no events chosen",
        ),
        (
            json!({ "url": "http://x/y", "events": ["drop"] }),
            "unknown event type \"drop\"",
        ),
        (
            json!({ "url": "http://x/y", "events": ["change"], "format": "xml" }),
            "unknown format",
        ),
        (
            json!({ "url": "http://x/y", "events": ["change"], "migrations": ["a*b"] }),
            "invalid scope pattern",
        ),
    ] {
        let (status, answer) = srv.post("/v1/webhooks", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    let (_, listed) = srv.get("/v1/webhooks").await;
    assert_eq!(listed["webhooks"], json!([]));
    // A reader may not subscribe.
    let reader = srv.token_with_role("viewer", "reader").await;
    let (status, _) = srv
        .call_as(
            &reader,
            reqwest::Method::POST,
            "/v1/webhooks",
            Some(json!({ "url": "http://x/y", "events": ["change"] })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    srv.stop().await;
}

/// A backfill runner that holds itself back for a minute is announced (`backfill`, action
/// `backfill_held`, with the reason) once per hold; shorter holds are not.
async fn a_backfill_held_for_a_minute_is_announced_once_per_hold(db: Db) {
    let (receiver, url) = Receiver::start().await;
    let srv = start_on(Arc::new(TestDb::new(db).await), TestClock::new()).await;
    let key = "users.held-backfill";
    srv.ready_for_backfill(key).await;
    let v = srv.version_of(key).await;
    let (status, body) = srv
        .post(
            &format!("/v1/migrations/{key}/events"),
            json!({ "event": "backfill_started", "expected_version": v, "reason": "go" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (id, _) = subscribe(&srv, json!({ "url": url, "events": ["backfill"] })).await;
    let lag = "replica 127.0.0.1:5433 replay lag 3.2s > 1s";
    // (seconds since the start, how long the runner has held; 0: it does not)
    let mut clock_at = 0;
    for (at, held) in [(0, 30), (40, 70), (50, 80), (60, 0), (70, 5), (140, 75)] {
        srv.clock.advance(Duration::from_secs(at - clock_at));
        clock_at = at;
        let throttle = if held == 0 {
            json!({})
        } else {
            json!({ "reason": lag, "held_ms": held * 1000 })
        };
        let (status, body) = srv
            .call(
                reqwest::Method::PUT,
                &format!("/v1/migrations/{key}/backfill/checkpoint"),
                Some(
                    json!({ "cursor": at.to_string(), "rows_done": at, "rows_total_estimate": 1000,
                    "runner": "api/worker-1", "throttle": throttle }),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = srv
        .post(&format!("/v1/webhooks/{id}/test"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = wait_for(Duration::from_secs(10), "the events", || async {
        let events = receiver.events();
        if events.iter().any(|(_, e)| e["event"] == "test") {
            Ok(events)
        } else {
            Err(format!("{} event(s)", events.len()))
        }
    })
    .await;
    let held: Vec<&Value> = events
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e["event"] == "backfill")
        .collect();
    assert_eq!(held.len(), 2, "{events:?}");
    for e in held {
        assert_eq!(e["action"], "backfill_held", "{e}");
        assert_eq!(e["reason"], lag, "{e}");
        assert_eq!(e["key"], key, "{e}");
    }
    srv.stop().await;
}

/// The subscriptions through gRPC: added (the secret once), listed without it, a test event
/// delivered and in the delivery log, removed.
async fn webhooks_over_grpc(db: Db) {
    use switchyard_proto::v1 as pb;
    let (receiver, url) = Receiver::start().await;
    let srv = start_on(Arc::new(TestDb::new(db).await), TestClock::new()).await;
    let mut grpc = srv.grpc.clone();
    let added = grpc
        .add_webhook(srv.req(pb::AddWebhookRequest {
            url: url.clone(),
            migrations: vec!["orders.*".into()],
            events: vec!["plan_halt".into(), "gate_pass".into()],
            format: String::new(),
        }))
        .await
        .expect("AddWebhook")
        .into_inner();
    assert!(added.secret.starts_with("whsec_"), "{added:?}");
    let hook = added.webhook.unwrap();
    assert_eq!(
        (hook.url.as_str(), hook.format.as_str(), hook.removed_at_ms),
        (url.as_str(), "json", 0)
    );
    let listed = grpc
        .list_webhooks(srv.req(pb::ListWebhooksRequest {}))
        .await
        .expect("ListWebhooks")
        .into_inner()
        .webhooks;
    assert_eq!(listed, vec![hook.clone()]);
    assert!(!format!("{listed:?}").contains("whsec_"));
    let test = grpc
        .test_webhook(srv.req(pb::WebhookRequest { id: hook.id }))
        .await
        .expect("TestWebhook")
        .into_inner();
    eventually(Duration::from_secs(10), "the test event", || async {
        !receiver.events().is_empty()
    })
    .await;
    receiver.check_signatures(&added.secret);
    let log = wait_for(Duration::from_secs(10), "the delivery recorded", || async {
        let log = srv
            .grpc
            .clone()
            .list_webhook_deliveries(srv.req(pb::ListWebhookDeliveriesRequest {
                id: hook.id,
                limit: 0,
            }))
            .await
            .expect("ListWebhookDeliveries")
            .into_inner();
        if log
            .deliveries
            .first()
            .is_some_and(|d| d.status == "delivered")
        {
            Ok(log)
        } else {
            Err(format!("{log:?}"))
        }
    })
    .await;
    let d = &log.deliveries[0];
    assert_eq!(
        (d.id, d.event.as_str(), d.attempts, d.last_status),
        (test.delivery, "test", 1, 204)
    );
    assert!(d.delivered_at_ms > 0);
    let removed = grpc
        .remove_webhook(srv.req(pb::WebhookRequest { id: hook.id }))
        .await
        .expect("RemoveWebhook")
        .into_inner();
    assert!(removed.removed_at_ms > 0);
    // A bad subscription is refused, saying what is allowed.
    let refused = grpc
        .add_webhook(srv.req(pb::AddWebhookRequest {
            url,
            events: vec!["everything".into()],
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("gate_pass"),
        "{}",
        refused.message()
    );
    srv.stop().await;
}

both_databases!(
    webhooks_over_grpc,
    a_backfill_held_for_a_minute_is_announced_once_per_hold,
    changes_plan_steps_and_a_halt_arrive_signed,
    a_receiver_down_then_back_gets_everything_in_order_across_a_restart,
    bad_subscriptions_are_refused
);
