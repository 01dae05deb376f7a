//! The operations side: health, readiness, metrics, the OpenAPI document, gRPC health and
//! reflection, and the first admin token.

use reqwest::StatusCode;
use serde_json::json;
use switchyard_tests::{Db, TestServer, both_databases};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

async fn health_and_readiness(db: Db) {
    let srv = TestServer::start(db).await;
    let plain = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let response = plain
            .get(format!("{}{path}", srv.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", srv.server.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "switchyard.v1.Switchyard".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    srv.stop().await;
}

async fn readiness_fails_when_the_database_is_gone(db: Db) {
    let srv = TestServer::start(db).await;
    srv.server.app.store.close().await;
    let response = reqwest::get(format!("{}/readyz", srv.base)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Liveness does not depend on the database.
    let response = reqwest::get(format!("{}/healthz", srv.base)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

both_databases!(
    health_and_readiness,
    readiness_fails_when_the_database_is_gone
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_watches_versions_and_refusals() {
    let srv = TestServer::start(Db::Sqlite).await;
    srv.create("ops.metrics", false, &[]).await;
    let version = srv.version_of("ops.metrics").await;
    // Refused by rule 2: the expand DDL is not recorded.
    let (status, _) = srv
        .post(
            "/v1/migrations/ops.metrics/advance",
            json!({ "expected_version": version, "reason": "too early" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let text = reqwest::get(format!("{}/metrics", srv.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "switchyard_http_requests_total{route=\"/v1/migrations\",status=\"201\"}",
        "switchyard_refusals_total{rule=\"2\"}",
        "switchyard_snapshot_version",
        "switchyard_open_watches",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    srv.stop().await;
}

/// Clients such as the dashboard take names from the server instead of keeping copies: the
/// vocabulary is the domain's, the role's permissions come with `whoami`, and each migration
/// says which events apply to it now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sends_its_vocabulary() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (status, vocabulary) = srv.get("/v1/vocabulary").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        vocabulary["stages"],
        json!([
            "off",
            "dual_write",
            "shadow",
            "live",
            "rampdown",
            "complete",
            "contracted"
        ])
    );
    let events = vocabulary["events"].as_array().unwrap();
    assert_eq!(events.len(), switchyard_domain::EventKind::ALL.len());
    assert_eq!(
        events[0],
        json!({"name": "expand_applied", "label": "Expand DDL applied",
               "permission": "record_schema", "milestone": true})
    );
    let paused = events
        .iter()
        .find(|e| e["name"] == "backfill_paused")
        .unwrap();
    assert_eq!(paused["permission"], "operate");
    assert_eq!(paused["milestone"], false);
    let buckets = vocabulary["latency_buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 16);
    assert_eq!(
        buckets[0],
        json!({"upper_bound_us": 50, "label": "≤ 50 µs"})
    );
    assert_eq!(
        buckets[14],
        json!({"upper_bound_us": 2_500_000, "label": "≤ 2.5 s"})
    );
    // The overflow bucket holds everything slower than the largest bound.
    assert_eq!(
        buckets[15],
        json!({"upper_bound_us": null, "label": "> 2.5 s"})
    );

    let gate = srv.token_with_role("pipeline", "gate").await;
    let (_, me) = srv
        .call_as(&gate, reqwest::Method::GET, "/v1/whoami", None)
        .await;
    assert_eq!(me["permissions"], json!(["read", "record_schema"]));

    let created = srv.create("users.rename", true, &[]).await;
    assert_eq!(
        created["applicable_events"],
        json!(["expand_applied", "backfill_started"])
    );
    let (_, snapshot) = srv.get("/v1/snapshot").await;
    assert_eq!(
        snapshot["migrations"][0]["applicable_events"],
        json!(["expand_applied", "backfill_started"])
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_every_route() {
    let srv = TestServer::start(Db::Sqlite).await;
    let doc = srv.openapi().await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in [
        ("post", "/v1/migrations"),
        ("get", "/v1/migrations"),
        ("get", "/v1/migrations/{key}"),
        ("post", "/v1/migrations/{key}/rollout"),
        ("post", "/v1/migrations/{key}/advance"),
        ("post", "/v1/migrations/{key}/retreat"),
        ("post", "/v1/migrations/{key}/events"),
        ("get", "/v1/migrations/{key}/audit"),
        ("get", "/v1/migrations/{key}/decide"),
        ("get", "/v1/snapshot"),
        ("get", "/v1/watch"),
        ("post", "/v1/clients/heartbeat"),
        ("get", "/v1/clients"),
        ("post", "/v1/clients/telemetry"),
        ("get", "/v1/migrations/{key}/traffic"),
        ("get", "/v1/migrations/{key}/instances"),
        ("get", "/v1/migrations/{key}/gate"),
        ("get", "/v1/migrations/{key}/usage"),
        ("get", "/v1/lifecycle"),
        ("get", "/v1/migrations/{key}/backfill"),
        ("put", "/v1/migrations/{key}/backfill/checkpoint"),
        ("put", "/v1/migrations/{key}/backfill/settings"),
        ("post", "/v1/tokens"),
        ("get", "/v1/tokens"),
        ("post", "/v1/tokens/{id}/revoke"),
        ("get", "/v1/whoami"),
        ("get", "/v1/vocabulary"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path}"
        );
    }
    // Every `$ref` resolves.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling $ref {name}"
        );
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_reflection_lists_the_services() {
    let srv = TestServer::start(Db::Sqlite).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", srv.server.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["switchyard.v1.Switchyard", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_admin_token_is_generated_once_and_works() {
    let db = std::sync::Arc::new(switchyard_tests::TestDb::new(Db::Sqlite).await);
    let config = |admin_token: Option<&str>| switchyard_server::startup::ServeConfig {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone(),
        client_ttl: switchyard_tests::CLIENT_TTL,
        admin_token: admin_token.map(str::to_owned),
        ..Default::default()
    };
    let clock = switchyard_server::app::system_clock();
    let first = switchyard_server::startup::Server::start(config(None), clock.clone())
        .await
        .unwrap();
    let token = first
        .generated_admin_token
        .clone()
        .expect("a generated token on an empty store");
    let response = reqwest::Client::new()
        .get(format!("http://{}/v1/tokens", first.http_addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    first.shutdown().await.unwrap();

    // A restart on the same store neither generates another nor accepts a new preset.
    let second =
        switchyard_server::startup::Server::start(config(Some("another-preset-token-xyz")), clock)
            .await
            .unwrap();
    assert_eq!(second.generated_admin_token, None);
    let client = reqwest::Client::new();
    let status = |t: &str| {
        client
            .get(format!("http://{}/v1/tokens", second.http_addr))
            .bearer_auth(t.to_owned())
            .send()
    };
    assert_eq!(status(&token).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        status("another-preset-token-xyz").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    second.shutdown().await.unwrap();
}

/// What a client generator needs: every operation named (a unique `operationId`) and tagged,
/// and a migration's schema listing exactly the fields the server returns, all required; a
/// create answers with the new migration's `Location`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_names_every_operation_and_every_field_the_server_returns() {
    let srv = TestServer::start(Db::Sqlite).await;
    let doc = srv.openapi().await;
    let tags: Vec<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            let tag = operation["tags"][0].as_str().unwrap();
            assert!(
                tags.contains(&tag),
                "{method} {path}: tag {tag} not declared"
            );
        }
    }

    let response = srv
        .http
        .post(format!("{}/v1/migrations", srv.base))
        .bearer_auth(&srv.token)
        .json(&json!({"key": "users.fields", "entity_kind": "user_id", "reason": "fields"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        response.headers()["location"].to_str().unwrap(),
        "/v1/migrations/users.fields"
    );
    let created: serde_json::Value = response.json().await.unwrap();
    let schema = &doc["components"]["schemas"]["Migration"];
    let returned: std::collections::BTreeSet<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let described: std::collections::BTreeSet<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let required: std::collections::BTreeSet<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        returned, described,
        "the fields returned and the fields described"
    );
    assert_eq!(
        required, described,
        "every field is always present, so every one is required"
    );
    srv.stop().await;
}
