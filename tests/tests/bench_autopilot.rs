//! Benchmarks (ignored by default; see BENCHMARKS.md) for the autopilot:
//! - from a guardrail's threshold being crossed in reported telemetry to the plan's rollback
//!   reaching a gRPC watcher, with the server's default `--plan-interval` (1 s);
//! - webhook delivery with 100 subscriptions: throughput and the delay from a change's commit
//!   to each receiver having it, with the default `--webhook-interval` (1 s).
//!
//! cargo test --release -p switchyard-tests --test bench_autopilot -- --ignored --nocapture --test-threads 1

use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_proto::v1 as pb;
use switchyard_tests::{Db, TestClock, TestDb, TestServer, wait_for};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what}: n={} p50={:?} p90={:?} p99={:?} max={:?}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        percentile(&samples, 0.99),
        samples.last().unwrap()
    );
}

async fn to_dual_write(srv: &TestServer, key: &str) {
    srv.create(key, false, &[]).await;
    for (path, body) in [
        ("events", json!({ "event": "expand_applied" })),
        ("advance", json!({})),
    ] {
        let mut body = body;
        body["expected_version"] = srv.version_of(key).await.into();
        body["reason"] = "bench".into();
        let (status, answer) = srv
            .post(&format!("/v1/migrations/{key}/{path}"), body)
            .await;
        assert!(status.is_success(), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand, see BENCHMARKS.md"]
async fn guardrail_to_halt_seen_by_a_watcher() {
    const RUNS: usize = 40;
    let srv = TestServer::start_configured(
        Arc::new(TestDb::new(Db::Sqlite).await),
        TestClock::new(),
        |_| {},
    )
    .await;
    let mut samples = Vec::with_capacity(RUNS);
    for run in 0..RUNS {
        let key = format!("orders.guard-{run}");
        to_dual_write(&srv, &key).await;
        assert_eq!(
            srv.cli(&[
                "plan",
                "set",
                &key,
                "--stage",
                "dual_write=5,100",
                "--hold",
                "1h",
                "--on-breach",
                "rollback",
                "--reason",
                "bench",
            ])
            .await,
            0
        );
        wait_for(Duration::from_secs(10), "the first step", || async {
            let m = srv.migration(&key).await;
            if m["rollout_bp"] == 500 {
                Ok(())
            } else {
                Err(m.to_string())
            }
        })
        .await;
        let mut watch = srv
            .grpc
            .clone()
            .watch(srv.req(pb::WatchRequest::default()))
            .await
            .unwrap()
            .into_inner();
        // The first message is the snapshot.
        watch.message().await.unwrap();
        let minute = srv.clock.clock()() / 60_000 * 60_000;
        let side = json!({ "reads": 200, "writes": 0, "errors": 0, "latency": [0, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] });
        let crossed = Instant::now();
        let (status, body) = srv
            .post(
                "/v1/clients/telemetry",
                json!({ "service": "api", "instance_id": "api-1", "entries": [{
                    "key": key, "minute_ms": minute, "old": side, "new": side, "comparisons": 200,
                    "mismatches": 5, "evaluations_without_entity": 0, "fallback_evaluations": 0 }] }),
            )
            .await;
        assert!(status.is_success(), "{body}");
        loop {
            let event = watch
                .message()
                .await
                .unwrap()
                .expect("the watch stays open");
            let rolled_back = match event.event {
                Some(pb::watch_event::Event::Change(m)) => m.key == key && m.rollout_bp == 0,
                _ => false,
            };
            if rolled_back {
                samples.push(crossed.elapsed());
                break;
            }
        }
    }
    report(
        "guardrail crossed → rollback seen by a watcher (plan interval 1s)",
        samples,
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand, see BENCHMARKS.md"]
async fn webhook_delivery_with_100_subscriptions() {
    const SUBSCRIPTIONS: usize = 100;
    const CHANGES: usize = 20;
    // One receiver process, a path per subscription; when each (path, version) arrived.
    let arrived: Arc<Mutex<Vec<(String, u64, Instant)>>> = Arc::default();
    let state = arrived.clone();
    let app = axum::Router::new().route(
        "/hook/{n}",
        axum::routing::post(
            move |axum::extract::Path(n): axum::extract::Path<String>, body: String| {
                let state = state.clone();
                async move {
                    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
                    state.lock().unwrap().push((
                        n,
                        event["version"].as_u64().unwrap_or(0),
                        Instant::now(),
                    ));
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let srv = TestServer::start_configured(
        Arc::new(TestDb::new(Db::Sqlite).await),
        TestClock::new(),
        |_| {},
    )
    .await;
    let key = "orders.hooked";
    to_dual_write(&srv, key).await;
    for n in 0..SUBSCRIPTIONS {
        let (status, body) = srv
            .post(
                "/v1/webhooks",
                json!({ "url": format!("{base}/hook/{n}"), "events": ["change"] }),
            )
            .await;
        assert!(status.is_success(), "{body}");
    }
    let mut committed: HashMap<u64, Instant> = HashMap::new();
    let started = Instant::now();
    for step in 1..=CHANGES {
        let v = srv.version_of(key).await;
        let (status, body) = srv
            .post(
                &format!("/v1/migrations/{key}/rollout"),
                json!({ "rollout_bp": step * 100, "expected_version": v, "reason": "bench" }),
            )
            .await;
        assert!(status.is_success(), "{body}");
        committed.insert(body["version"].as_u64().unwrap(), Instant::now());
    }
    let total = SUBSCRIPTIONS * CHANGES;
    wait_for(Duration::from_secs(120), "every delivery", || async {
        let n = arrived.lock().unwrap().len();
        if n >= total {
            Ok(())
        } else {
            Err(format!("{n} of {total}"))
        }
    })
    .await;
    let elapsed = started.elapsed();
    let arrived = arrived.lock().unwrap().clone();
    let delays: Vec<Duration> = arrived
        .iter()
        .map(|(_, v, at)| at.duration_since(committed[v]))
        .collect();
    // Each subscription got every change once, in order.
    let mut per: HashMap<&str, Vec<u64>> = HashMap::new();
    for (n, v, _) in &arrived {
        per.entry(n.as_str()).or_default().push(*v);
    }
    assert_eq!(per.len(), SUBSCRIPTIONS);
    for versions in per.values() {
        assert_eq!(versions.len(), CHANGES);
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    }
    println!(
        "webhooks: {total} deliveries to {SUBSCRIPTIONS} subscriptions in {elapsed:?} ({:.0}/s)",
        total as f64 / elapsed.as_secs_f64()
    );
    report("webhook delay, commit → receiver (interval 1s)", delays);
    srv.stop().await;
}
