//! Revoking a token ends the watch streams opened with it: on the replica that revoked it at
//! once (SSE and gRPC, each saying why), and on another replica sharing the Postgres database
//! through its follower (woken by the revoke's notification, or by its poll), well before the
//! token cache's entries would expire. The token is refused from then on, cached or not.
//!
//! Every wait is bounded and waits on a condition (the stream's next item), never a fixed sleep.

use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::pin::Pin;
use std::time::{Duration, Instant};
use switchyard_proto::v1 as pb;
use switchyard_server::auth::Authenticator;
use switchyard_tests::{Db, TestClock, TestServer, both_databases, grpc_detail, request_as};

/// Bound on every wait for a stream item.
const WAIT: Duration = Duration::from_secs(10);

/// How soon another replica must drop a revoked token: well inside the cache's lifetime, so
/// the change feed did it, not the entry's expiry.
const ACROSS_REPLICAS: Duration = Duration::from_secs(3);

/// Creates a reader token through `srv`; returns its id and secret.
async fn reader_token(srv: &TestServer, name: &str) -> (u64, String) {
    let (status, body) = srv
        .post("/v1/tokens", json!({ "name": name, "role": "reader" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["info"]["id"].as_u64().expect("token id"),
        body["token"].as_str().expect("token secret").to_owned(),
    )
}

async fn revoke(srv: &TestServer, id: u64) {
    let (status, body) = srv
        .post(&format!("/v1/tokens/{id}/revoke"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["revoked_at_ms"].is_i64(), "{body}");
}

/// The status of `GET /v1/snapshot` with `token`.
async fn snapshot_status(srv: &TestServer, token: &str) -> StatusCode {
    srv.call_as(token, reqwest::Method::GET, "/v1/snapshot", None)
        .await
        .0
}

// ---------------------------------------------------------------------------------------------
// A minimal SSE reader: events as (name, data), `None` once the server ends the stream.

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Vec<u8>>> + Send>>;

struct Sse {
    body: ByteStream,
    buf: Vec<u8>,
}

impl Sse {
    async fn open(srv: &TestServer, token: &str) -> Sse {
        let response = srv
            .http
            .get(format!("{}/v1/watch", srv.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("SSE request");
        assert_eq!(response.status(), StatusCode::OK, "GET /v1/watch");
        Sse {
            body: Box::pin(response.bytes_stream().map(|c| c.map(|b| b.to_vec()))),
            buf: Vec::new(),
        }
    }

    /// The next event (`event:` name and `data:`), or `None` when the stream ends cleanly.
    async fn next(&mut self) -> Option<(String, String)> {
        let (mut event, mut data) = (String::new(), String::new());
        loop {
            while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                let line = String::from_utf8(line).expect("SSE is UTF-8");
                let line = line.trim_end_matches('\r');
                if line.is_empty() {
                    if !event.is_empty() || !data.is_empty() {
                        return Some((event, data));
                    }
                    continue;
                }
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim_start().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => panic!("the SSE stream failed instead of ending cleanly: {e}"),
                None => return None,
            }
        }
    }

    async fn next_within(&mut self, what: &str) -> Option<(String, String)> {
        tokio::time::timeout(WAIT, self.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    async fn expect_snapshot(&mut self) {
        let (event, data) = self.next_within("the snapshot").await.expect("a snapshot");
        assert_eq!(event, "snapshot", "{data}");
    }

    async fn expect_change(&mut self) {
        let (event, data) = self.next_within("a change").await.expect("a change");
        assert_eq!(event, "change", "{data}");
    }

    /// The stream's last event says the token was revoked, then the stream ends.
    async fn expect_revoked_end(&mut self) {
        let (event, data) = self
            .next_within("the revocation event")
            .await
            .expect("an event saying why the stream ends");
        assert_eq!(event, "error", "{data}");
        let body: Value = serde_json::from_str(&data).expect("the error event is JSON");
        assert_eq!(body["code"], "unauthenticated", "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("was revoked"),
            "{body}"
        );
        assert_eq!(self.next_within("the end of the stream").await, None);
    }
}

async fn grpc_watch(srv: &TestServer, token: &str) -> tonic::Streaming<pb::WatchEvent> {
    let mut stream = srv
        .grpc
        .clone()
        .watch(request_as(token, pb::WatchRequest { since_version: 0 }))
        .await
        .expect("gRPC Watch")
        .into_inner();
    let first = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("timed out waiting for the snapshot")
        .expect("the snapshot")
        .expect("a first event");
    assert!(matches!(
        first.event,
        Some(pb::watch_event::Event::Snapshot(_))
    ));
    stream
}

async fn expect_grpc_change(stream: &mut tonic::Streaming<pb::WatchEvent>) {
    let event = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("timed out waiting for a change")
        .expect("a change")
        .expect("the stream is open");
    assert!(matches!(
        event.event,
        Some(pb::watch_event::Event::Change(_))
    ));
}

/// The gRPC stream ends with UNAUTHENTICATED naming the revocation.
async fn expect_grpc_revoked_end(stream: &mut tonic::Streaming<pb::WatchEvent>) {
    let err = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("timed out waiting for the gRPC stream to end")
        .expect_err("the stream ends with an error status");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("was revoked"), "{err:?}");
    assert_eq!(grpc_detail(&err).code, "unauthenticated");
}

// ---------------------------------------------------------------------------------------------

async fn revoking_a_token_ends_its_open_watches_at_once(db: Db) {
    let srv = TestServer::start(db).await;
    let (id, token) = reader_token(&srv, "dashboard").await;
    let (_, bystander) = reader_token(&srv, "bystander").await;
    let mut sse = Sse::open(&srv, &token).await;
    sse.expect_snapshot().await;
    let mut grpc = grpc_watch(&srv, &token).await;
    // Another token's watch is not touched by the revoke.
    let mut other = Sse::open(&srv, &bystander).await;
    other.expect_snapshot().await;

    let revoked_at = Instant::now();
    revoke(&srv, id).await;
    sse.expect_revoked_end().await;
    expect_grpc_revoked_end(&mut grpc).await;
    let took = revoked_at.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "streams ended after {took:?}"
    );
    assert_eq!(
        snapshot_status(&srv, &token).await,
        StatusCode::UNAUTHORIZED
    );

    // The bystander still receives changes.
    srv.create("revoke.after", false, &[]).await;
    other.expect_change().await;
    assert_eq!(snapshot_status(&srv, &bystander).await, StatusCode::OK);
    srv.stop().await;
}

both_databases!(revoking_a_token_ends_its_open_watches_at_once);

/// A watch opened with an already revoked token is refused before it starts.
async fn a_revoked_token_cannot_open_a_watch(db: Db) {
    let srv = TestServer::start(db).await;
    let (id, token) = reader_token(&srv, "gone").await;
    assert_eq!(snapshot_status(&srv, &token).await, StatusCode::OK);
    revoke(&srv, id).await;
    let (status, body) = srv
        .call_as(&token, reqwest::Method::GET, "/v1/watch", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let err = srv
        .grpc
        .clone()
        .watch(request_as(&token, pb::WatchRequest { since_version: 0 }))
        .await
        .expect_err("a revoked token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    srv.stop().await;
}

both_databases!(a_revoked_token_cannot_open_a_watch);

/// Replica B holds the token in its cache and two open watches; the revoke goes through A.
async fn another_replica_drops_a_revoked_token(
    b_hears_by: impl FnOnce(&mut switchyard_server::startup::ServeConfig),
) {
    assert_eq!(Authenticator::CACHE_TTL, Duration::from_secs(10));
    let a = TestServer::start(Db::Postgres).await;
    let b = TestServer::start_configured(a.db.clone(), TestClock::new(), b_hears_by).await;
    let (id, token) = reader_token(&a, "on-b").await;
    assert_eq!(
        snapshot_status(&b, &token).await,
        StatusCode::OK,
        "cached on B"
    );
    let mut sse = Sse::open(&b, &token).await;
    sse.expect_snapshot().await;
    let mut grpc = grpc_watch(&b, &token).await;
    // A change through A reaching both watches on B shows B's follower has finished the passes
    // anything before it asked for (each pass reads revocations before changes), so only the
    // revoke's own notification, or B's next poll, can make B read it.
    a.create("revoke.sentinel", false, &[]).await;
    sse.expect_change().await;
    expect_grpc_change(&mut grpc).await;

    let revoked_at = Instant::now();
    revoke(&a, id).await;
    sse.expect_revoked_end().await;
    expect_grpc_revoked_end(&mut grpc).await;
    assert_eq!(snapshot_status(&b, &token).await, StatusCode::UNAUTHORIZED);
    let took = revoked_at.elapsed();
    assert!(
        took < ACROSS_REPLICAS,
        "B dropped the token {took:?} after the revoke through A"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_revoke_through_one_replica_reaches_another_by_notification() {
    // B polls only hourly: the revoke's notification is what wakes its follower.
    another_replica_drops_a_revoked_token(|c| c.change_poll_interval = Duration::from_secs(3600))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_revoke_through_one_replica_reaches_another_by_polling() {
    // Notifications off: B's follower finds the revoke on its next poll.
    another_replica_drops_a_revoked_token(|c| {
        c.change_notifications = false;
        c.change_poll_interval = Duration::from_millis(500);
    })
    .await;
}
