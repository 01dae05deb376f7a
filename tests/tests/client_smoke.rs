//! A first look at the client against the real server: it connects, follows changes, and its
//! counts reach the server. (The full client suites are in client_*.rs.)

use std::time::Duration;
use switchyard_client::{Client, Source, Stage};
use switchyard_tests::{Db, TestServer, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_follows_the_server() {
    let srv = TestServer::start(Db::Sqlite).await;
    srv.create("smoke.m", false, &[]).await;
    let client = Client::builder(
        format!("http://{}", srv.server.grpc_addr),
        &srv.token,
        "api",
    )
    .telemetry_interval(Duration::from_millis(100))
    .connect()
    .await
    .unwrap();
    assert_eq!(client.status().source, Source::Server);
    assert_eq!(client.stage("smoke.m", "42"), Stage::Off);
    let v = srv.version_of("smoke.m").await;
    srv.post(
        "/v1/migrations/smoke.m/events",
        serde_json::json!({"event": "expand_applied", "expected_version": v, "reason": "t"}),
    )
    .await;
    let v = srv.version_of("smoke.m").await;
    let (status, m) = srv
        .post(
            "/v1/migrations/smoke.m/advance",
            serde_json::json!({"expected_version": v, "reason": "t"}),
        )
        .await;
    assert!(status.is_success(), "{m}");
    let (_, m) = srv.post("/v1/migrations/smoke.m/rollout", serde_json::json!({"rollout_bp": 10000, "expected_version": m["version"], "reason": "t"})).await;
    let target = m["version"].as_u64().unwrap();
    tokio::time::timeout(Duration::from_secs(10), client.wait_for_version(target))
        .await
        .expect("the change reaches the client");
    assert_eq!(client.stage("smoke.m", "42"), Stage::DualWrite);
    let migrator = client.migrator("smoke.m");
    let r: Result<u32, String> = migrator
        .write("42", || async { Ok(1) }, || async { Ok(2) })
        .await;
    assert_eq!(r, Ok(1));
    eventually(Duration::from_secs(10), "the acknowledgement", || async {
        let (_, i) = srv.get("/v1/migrations/smoke.m/instances").await;
        i["instances"][0]["applied_version"].as_u64() == Some(target)
    })
    .await;
    client.shutdown().await;
    let (_, t) = srv.get("/v1/migrations/smoke.m/traffic").await;
    assert_eq!(t["total"]["old"]["writes"], 1);
    assert_eq!(t["total"]["new"]["writes"], 1);
    // A clean shutdown says goodbye: the instance stops counting as live at once, instead of
    // holding up rules 3 and 5 and the gate until its TTL runs out.
    let (_, i) = srv.get("/v1/clients").await;
    assert_eq!(i["instances"], serde_json::json!([]), "{i}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_heartbeat_forgets_the_instance() {
    let srv = TestServer::start(Db::Sqlite).await;
    srv.create("smoke.m", false, &[]).await;
    let beat = |leaving: bool| {
        serde_json::json!({"service": "api", "instance_id": "api-1", "applied_version": 1,
            "migrations": ["smoke.m"], "leaving": leaving})
    };
    let (status, body) = srv.post("/v1/clients/heartbeat", beat(false)).await;
    assert!(status.is_success(), "{body}");
    let (_, i) = srv.get("/v1/migrations/smoke.m/instances").await;
    assert_eq!(i["instances"][0]["live"], true, "{i}");
    let (status, body) = srv.post("/v1/clients/heartbeat", beat(true)).await;
    assert!(status.is_success(), "{body}");
    for path in ["/v1/clients", "/v1/migrations/smoke.m/instances"] {
        let (_, i) = srv.get(path).await;
        assert_eq!(i["instances"], serde_json::json!([]), "{path}: {i}");
    }
    // A malformed goodbye changes nothing.
    srv.post("/v1/clients/heartbeat", beat(false)).await;
    let (status, _) = srv
        .post(
            "/v1/clients/heartbeat",
            serde_json::json!({"service": "api", "instance_id": "", "applied_version": 1, "leaving": true}),
        )
        .await;
    assert_eq!(status, 400);
    let (_, i) = srv.get("/v1/clients").await;
    assert_eq!(i["instances"].as_array().map(Vec::len), Some(1), "{i}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_saved_snapshot_does_not_stop_the_client() {
    let srv = TestServer::start(Db::Sqlite).await;
    srv.create("smoke.corrupt", false, &[]).await;
    let dir = switchyard_tests::TempDir::new(&format!("switchyard-corrupt-{}", std::process::id()));
    let path = dir.0.join("snapshot.json");
    std::fs::write(&path, "{ this is not a snapshot").unwrap();
    let client = Client::builder(
        format!("http://{}", srv.server.grpc_addr),
        &srv.token,
        "api",
    )
    .snapshot_file(&path)
    .connect()
    .await
    .expect("a broken saved snapshot is ignored, not fatal");
    assert_eq!(client.status().source, Source::Server);
    assert!(client.status().connected);
    // The next applied state replaced the broken file with a good one.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(saved["version"].as_u64(), Some(client.version()));
    client.shutdown().await;
}
