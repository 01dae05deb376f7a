//! A client that can never work as configured says so from `connect()` instead of starting on
//! its fallback stages and retrying forever: a wrong token, or the server's HTTP address where
//! the gRPC one belongs. A server that is merely unreachable is not a configuration error: the
//! client still starts (from its saved state or fallbacks) and keeps trying.

use std::time::{Duration, Instant};
use switchyard_client::{Client, ClientError, Source};
use switchyard_tests::{Db, TestServer};

/// Well under the start-up timeout: a refusal is known at the first answer.
const STARTUP: Duration = Duration::from_secs(10);

async fn connect(url: String, token: &str) -> (Result<Client, ClientError>, Duration) {
    let started = Instant::now();
    let result = Client::builder(url, token, "api")
        .startup_timeout(STARTUP)
        .connect()
        .await;
    (result, started.elapsed())
}

fn refusal(result: Result<Client, ClientError>) -> String {
    match result {
        Err(ClientError::Refused(why)) => why,
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(client) => panic!("connected: {:?}", client.status()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_fails_connect_with_what_to_fix() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (result, took) =
        connect(format!("http://{}", srv.server.grpc_addr), "sy_not_a_token").await;
    let why = refusal(result);
    assert!(why.contains("refused the token"), "{why}");
    assert!(why.contains("switchyard token create"), "{why}");
    assert!(
        took < STARTUP,
        "answered at once, not after the timeout: {took:?}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_address_fails_connect_naming_the_grpc_one() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (result, took) = connect(format!("http://{}", srv.server.http_addr), &srv.token).await;
    let why = refusal(result);
    assert!(why.contains("gRPC address"), "{why}");
    assert!(why.contains("50051"), "{why}");
    assert!(took < STARTUP, "{took:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_good_server_among_refusing_ones_is_enough() {
    let srv = TestServer::start(Db::Sqlite).await;
    let client = Client::builder(
        format!("http://{}", srv.server.http_addr),
        &srv.token,
        "api",
    )
    .server(format!("http://{}", srv.server.grpc_addr))
    .startup_timeout(STARTUP)
    .connect()
    .await
    .expect("the gRPC address answers");
    assert_eq!(client.status().source, Source::Server);
    client.shutdown().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_still_starts_on_fallbacks() {
    // A port nobody listens on: refused connections are an outage, not a misconfiguration.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder(format!("http://127.0.0.1:{port}"), "sy_any", "api")
        .startup_timeout(Duration::from_millis(500))
        .connect()
        .await
        .expect("an outage is not an error at start-up");
    assert_eq!(client.status().source, Source::Fallback);
    client.shutdown().await;
}
