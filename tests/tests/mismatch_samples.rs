//! Mismatch samples: a client's shadow comparison that finds old and new differ sends the entity
//! and the comparison's description with its telemetry; the server keeps them per entity, and
//! `GET /v1/migrations/{key}/mismatches`, `switchyard mismatches KEY` (and `--keys-only`, for a
//! repair script) list them, most recent first. A malformed sample is refused whole, clearly,
//! and stores nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use switchyard_client::{Client, Stage};
use switchyard_tests::{Db, TestServer, eventually};

const WAIT: Duration = Duration::from_secs(15);
const KEY: &str = "users.handle";

async fn mismatches(srv: &TestServer) -> Value {
    let (status, body) = srv.get(&format!("/v1/migrations/{KEY}/mismatches")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatches_reach_the_operator_with_their_entities() {
    let srv = TestServer::start(Db::Sqlite).await;
    let version = srv
        .at_full_with(KEY, Stage::Shadow, json!({ "shadow_sample_bp": 10_000 }))
        .await;
    let token = srv.token_with_role("api", "reader").await;
    let client = Client::builder(format!("http://{}", srv.server.grpc_addr), token, "api")
        .instance_id("api-1")
        .telemetry_interval(Duration::from_millis(100))
        .connect()
        .await
        .expect("connecting");
    eventually(WAIT, "the client to apply the migration", || async {
        client.version() >= version
    })
    .await;
    let migrator = client.migrator(KEY);
    // Ten reads of three users: user-2's shapes differ (case), the others agree.
    for i in 0..10 {
        let user = format!("user-{}", i % 3);
        let (old, new) = if user == "user-2" {
            ("Ann", "ann")
        } else {
            ("bob", "bob")
        };
        let value = migrator
            .read_compare(
                &user,
                || async { Ok::<_, String>(old.to_owned()) },
                || async { Ok::<_, String>(new.to_owned()) },
                |o, n| (o != n).then(|| format!("handle: {o:?} vs {n:?}")),
            )
            .await
            .unwrap();
        assert_eq!(value, old, "shadow returns the old value");
    }
    let stats = migrator.stats();
    assert_eq!((stats.comparisons, stats.mismatches), (10, 3));

    eventually(WAIT, "the samples to reach the server", || async {
        mismatches(&srv).await["entities"] == 1
    })
    .await;
    let body = mismatches(&srv).await;
    let sample = &body["samples"][0];
    assert_eq!(sample["entity_key"], "user-2");
    assert_eq!(sample["description"], r#"handle: "Ann" vs "ann""#);
    assert_eq!(
        sample["seen"], 3,
        "every sampled mismatch of the entity is counted: {body}"
    );
    assert_eq!(
        (&sample["service"], &sample["instance_id"]),
        (&json!("api"), &json!("api-1"))
    );

    // The CLI: the table, and the bare keys for a repair script.
    assert_eq!(srv.cli(&["mismatches", KEY]).await, 0);
    assert_eq!(srv.cli(&["mismatches", KEY, "--keys-only"]).await, 0);
    // A limit outside 1..=1000 is refused with what is allowed.
    let (status, body) = srv
        .get(&format!("/v1/migrations/{KEY}/mismatches?limit=0"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("allowed 1 to 1000"),
        "{body}"
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_sample_is_refused_and_stores_nothing() {
    let srv = TestServer::start(Db::Sqlite).await;
    srv.at_full_with(KEY, Stage::Shadow, json!({})).await;
    let minute = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64)
        / 60_000
        * 60_000;
    let report = |samples: Value| {
        json!({
            "service": "api", "instance_id": "api-1",
            "entries": [{
                "key": KEY, "minute_ms": minute,
                "old": { "reads": 1, "writes": 0, "errors": 0, "latency": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] },
                "new": { "reads": 1, "writes": 0, "errors": 0, "latency": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] },
                "comparisons": 1, "mismatches": 1,
                "evaluations_without_entity": 0, "fallback_evaluations": 0,
                "mismatch_samples": samples,
            }],
        })
    };
    let too_many: Vec<Value> = (0..21)
        .map(|i| json!({ "entity_key": format!("user-{i}") }))
        .collect();
    for (samples, says) in [
        (json!(too_many), "allowed up to 20"),
        (json!([{ "entity_key": "" }]), "allowed 1 to 256"),
        (
            json!([{ "entity_key": "x".repeat(257) }]),
            "allowed 1 to 256",
        ),
        (
            json!([{ "entity_key": "user-1", "description": "d".repeat(201) }]),
            "longer than 200",
        ),
        (
            json!([{ "entity_key": "user\u{7}1" }]),
            "control characters",
        ),
        (
            json!([{ "entity_key": "user-1", "extra": 1 }]),
            "unknown field",
        ),
    ] {
        let (status, body) = srv.post("/v1/clients/telemetry", report(samples)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{says}: {body}"
        );
    }
    assert_eq!(mismatches(&srv).await["entities"], 0, "nothing was stored");
    // A well-formed one is taken.
    let (status, body) = srv
        .post(
            "/v1/clients/telemetry",
            report(json!([{ "entity_key": "user-1", "description": "total: 10 vs 11" }])),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(mismatches(&srv).await["samples"][0]["entity_key"], "user-1");
}
