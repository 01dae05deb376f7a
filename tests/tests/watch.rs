//! Watch streams, end to end: gRPC `Watch` and HTTP server-sent events (`GET /v1/watch`) send
//! the full snapshot first and then every change exactly once in version order; a reconnecting
//! client never receives an older state than it had; a change committed through one replica
//! reaches watchers of another (Postgres); open streams end cleanly on shutdown; and
//! `GET /v1/snapshot` supports ETag polling.
//!
//! Every wait is bounded by `WAIT`, so a bug fails the test instead of hanging it.

use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::switchyard_client::SwitchyardClient;
use switchyard_tests::{Db, TestClock, TestServer, parse_migration, request_as};
use tonic::transport::Channel;

/// Generous bound on every wait for a stream item or a shutdown.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// A transport-neutral view of what a watcher receives.

/// One migration's state as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    key: String,
    version: u64,
    stage: String,
    rollout_bp: u64,
}

impl State {
    /// From the HTTP JSON form of a migration.
    fn from_json(m: &Value) -> State {
        State {
            key: m["key"].as_str().expect("migration key").to_owned(),
            version: m["version"].as_u64().expect("migration version"),
            stage: m["stage"].as_str().expect("migration stage").to_owned(),
            rollout_bp: m["rollout_bp"].as_u64().expect("migration rollout_bp"),
        }
    }

    /// From the protobuf form; the stage is spelled as in JSON (`STAGE_DUAL_WRITE` → `dual_write`).
    fn from_pb(m: &pb::Migration) -> State {
        let stage = pb::Stage::try_from(m.stage)
            .expect("a known stage")
            .as_str_name()
            .trim_start_matches("STAGE_")
            .to_ascii_lowercase();
        State {
            key: m.key.clone(),
            version: m.version,
            stage,
            rollout_bp: u64::from(m.rollout_bp),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Snapshot {
        version: u64,
        migrations: Vec<State>,
    },
    Change(State),
}

fn snapshot_item(version: u64, mut migrations: Vec<State>) -> Item {
    migrations.sort_by(|a, b| a.key.cmp(&b.key));
    Item::Snapshot {
        version,
        migrations,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Grpc,
    Sse,
}

/// How a reconnecting client names the last version it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    /// gRPC `since_version`.
    GrpcSince,
    /// SSE `?since=`.
    SseQuery,
    /// SSE `Last-Event-ID` header, as a browser's EventSource sends it.
    SseLastEventId,
}

impl Resume {
    fn transport(self) -> Transport {
        match self {
            Resume::GrpcSince => Transport::Grpc,
            Resume::SseQuery | Resume::SseLastEventId => Transport::Sse,
        }
    }
}

/// What a watcher needs to reach one server; cheap to clone into a task.
#[derive(Clone)]
struct Conn {
    base: String,
    http: reqwest::Client,
    grpc: SwitchyardClient<Channel>,
    token: String,
}

impl Conn {
    fn of(server: &TestServer) -> Conn {
        Conn {
            base: server.base.clone(),
            http: server.http.clone(),
            grpc: server.grpc.clone(),
            token: server.token.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal SSE parser over reqwest's byte stream (the parts of the EventSource format the
// server uses: `event:`, `id:`, `data:`, comments, blank-line dispatch).

#[derive(Debug, Default)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Vec<u8>>> + Send>>;

struct SseStream {
    body: ByteStream,
    buf: Vec<u8>,
    pending: SseEvent,
    has_fields: bool,
}

impl SseStream {
    async fn open(conn: &Conn, since_query: Option<u64>, last_event_id: Option<u64>) -> SseStream {
        let query = since_query.map_or_else(String::new, |v| format!("?since={v}"));
        let mut request = conn
            .http
            .get(format!("{}/v1/watch{query}", conn.base))
            .bearer_auth(&conn.token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("SSE request");
        assert_eq!(response.status(), StatusCode::OK, "GET /v1/watch");
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "content type {content_type:?}"
        );
        SseStream {
            body: Box::pin(response.bytes_stream().map(|c| c.map(|b| b.to_vec()))),
            buf: Vec::new(),
            pending: SseEvent::default(),
            has_fields: false,
        }
    }

    fn next_line(&mut self) -> Option<String> {
        let end = self.buf.iter().position(|&b| b == b'\n')?;
        let mut line: Vec<u8> = self.buf.drain(..=end).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(String::from_utf8(line).expect("SSE is UTF-8"))
    }

    /// The next event, or `None` when the server ends the stream cleanly. A transport error or
    /// a stream cut inside an event fails the test.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(line) = self.next_line() {
                if line.is_empty() {
                    if self.has_fields {
                        self.has_fields = false;
                        return Some(std::mem::take(&mut self.pending));
                    }
                    continue;
                }
                if line.starts_with(':') {
                    continue; // a comment (keep-alive)
                }
                let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => self.pending.event = value.to_owned(),
                    "id" => self.pending.id = Some(value.to_owned()),
                    "data" => {
                        if !self.pending.data.is_empty() {
                            self.pending.data.push('\n');
                        }
                        self.pending.data.push_str(value);
                    }
                    _ => continue,
                }
                self.has_fields = true;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => panic!("the SSE stream failed instead of ending cleanly: {e}"),
                None => {
                    assert!(
                        !self.has_fields && self.buf.iter().all(u8::is_ascii_whitespace),
                        "the SSE stream ended inside an event"
                    );
                    return None;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A watcher over either transport.

enum Watcher {
    Grpc(tonic::Streaming<pb::WatchEvent>),
    Sse(SseStream),
}

impl Watcher {
    async fn connect(conn: &Conn, transport: Transport) -> Watcher {
        match transport {
            Transport::Grpc => Self::grpc(conn, 0).await,
            Transport::Sse => Watcher::Sse(SseStream::open(conn, None, None).await),
        }
    }

    async fn resume(conn: &Conn, resume: Resume, since: u64) -> Watcher {
        match resume {
            Resume::GrpcSince => Self::grpc(conn, since).await,
            Resume::SseQuery => Watcher::Sse(SseStream::open(conn, Some(since), None).await),
            Resume::SseLastEventId => Watcher::Sse(SseStream::open(conn, None, Some(since)).await),
        }
    }

    async fn grpc(conn: &Conn, since_version: u64) -> Watcher {
        let response = conn
            .grpc
            .clone()
            .watch(request_as(&conn.token, pb::WatchRequest { since_version }))
            .await
            .expect("gRPC Watch");
        Watcher::Grpc(response.into_inner())
    }

    /// The next item, or `None` when the stream ended cleanly.
    async fn next(&mut self) -> Option<Item> {
        match self {
            Watcher::Grpc(stream) => {
                let event = stream
                    .message()
                    .await
                    .unwrap_or_else(|s| panic!("the gRPC watch stream failed: {s:?}"))?;
                Some(match event.event.expect("a watch event carries an event") {
                    pb::watch_event::Event::Snapshot(s) => {
                        snapshot_item(s.version, s.migrations.iter().map(State::from_pb).collect())
                    }
                    pb::watch_event::Event::Change(m) => Item::Change(State::from_pb(&m)),
                })
            }
            Watcher::Sse(stream) => {
                let event = stream.next().await?;
                let data: Value = serde_json::from_str(&event.data)
                    .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {:?}", event.data));
                let item = match event.event.as_str() {
                    "snapshot" => snapshot_item(
                        data["version"].as_u64().expect("snapshot version"),
                        data["migrations"]
                            .as_array()
                            .expect("snapshot migrations")
                            .iter()
                            .map(State::from_json)
                            .collect(),
                    ),
                    "change" => Item::Change(State::from_json(&data)),
                    other => panic!("unexpected SSE event {other:?}: {}", event.data),
                };
                let version = match &item {
                    Item::Snapshot { version, .. } => *version,
                    Item::Change(m) => m.version,
                };
                assert_eq!(
                    event.id,
                    Some(version.to_string()),
                    "an SSE event's id is its version"
                );
                Some(item)
            }
        }
    }

    /// The next item within `WAIT`; the stream ending or stalling fails the test.
    async fn expect_next(&mut self, what: &str) -> Item {
        tokio::time::timeout(WAIT, self.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("the stream ended while waiting for {what}"))
    }

    async fn expect_snapshot(&mut self) -> (u64, Vec<State>) {
        match self.expect_next("the snapshot").await {
            Item::Snapshot {
                version,
                migrations,
            } => (version, migrations),
            other => panic!("the first item must be the snapshot, got {other:?}"),
        }
    }

    /// Waits for the stream to end; it must end cleanly (no error) and send nothing more.
    async fn expect_end(&mut self, what: &str) {
        let next = tokio::time::timeout(WAIT, self.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: the watch stream did not end within {WAIT:?}"));
        assert_eq!(next, None, "{what}: nothing more is sent before the end");
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations through the HTTP API; each returns the migration's new JSON.

async fn mutate(server: &TestServer, key: &str, action: &str, body: Value) -> Value {
    let path = format!("/v1/migrations/{key}/{action}");
    let (status, body) = server.post(&path, body).await;
    assert_eq!(status, StatusCode::OK, "POST {path}: {body}");
    body
}

async fn record_expand(server: &TestServer, key: &str, version: u64) -> Value {
    let body = json!({ "event": "expand_applied", "expected_version": version, "reason": "ddl" });
    mutate(server, key, "events", body).await
}

async fn advance(server: &TestServer, key: &str, version: u64) -> Value {
    let body = json!({ "expected_version": version, "reason": "next stage" });
    mutate(server, key, "advance", body).await
}

async fn ramp(server: &TestServer, key: &str, version: u64, rollout_bp: u32) -> Value {
    let body = json!({
        "rollout_bp": rollout_bp, "expected_version": version, "reason": "ramp",
    });
    mutate(server, key, "rollout", body).await
}

fn version(m: &Value) -> u64 {
    m["version"].as_u64().expect("version")
}

/// A migration moved to dual_write at 0%: create, record expand applied, advance.
async fn dual_write(server: &TestServer, key: &str) -> Vec<Value> {
    let created = server.create(key, false, &[]).await;
    let expanded = record_expand(server, key, version(&created)).await;
    let advanced = advance(server, key, version(&expanded)).await;
    assert_eq!(advanced["stage"], "dual_write", "{advanced}");
    vec![created, expanded, advanced]
}

// ---------------------------------------------------------------------------------------------
// Snapshot first, then each change exactly once, in version order.

async fn snapshot_then_each_change_once(db: Db, transport: Transport) {
    let server = TestServer::start(db).await;
    let existing = server.create("watch.existing", false, &[]).await;
    let conn = Conn::of(&server);
    let mut watcher = Watcher::connect(&conn, transport).await;

    // Nothing changes concurrently, so the snapshot is exactly the current state.
    let (snapshot_version, migrations) = watcher.expect_snapshot().await;
    assert_eq!(snapshot_version, server.snapshot_version().await);
    assert_eq!(migrations, vec![State::from_json(&existing)]);

    let mut made: Vec<Value> = dual_write(&server, "watch.m").await;
    let mut last = version(made.last().unwrap());
    for bp in [1000, 5000] {
        let m = ramp(&server, "watch.m", last, bp).await;
        last = version(&m);
        made.push(m);
    }
    made.push(server.create("watch.other", false, &[]).await);
    let m = ramp(&server, "watch.m", last, 10_000).await;
    made.push(m.clone());
    let m = advance(&server, "watch.m", version(&m)).await;
    assert_eq!(m["stage"], "shadow", "{m}");
    made.push(m);
    // A last change on another migration: nothing may arrive between the changes above and
    // this one (no duplicate, no re-sent snapshot).
    made.push(server.create("watch.sentinel", false, &[]).await);

    let expected: Vec<Item> = made
        .iter()
        .map(|m| Item::Change(State::from_json(m)))
        .collect();
    let versions: Vec<u64> = made.iter().map(version).collect();
    assert!(versions[0] > snapshot_version, "{versions:?}");
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");

    let mut received = Vec::new();
    for (i, _) in expected.iter().enumerate() {
        received.push(watcher.expect_next(&format!("change #{i}")).await);
    }
    assert_eq!(
        received, expected,
        "{transport:?}: every change exactly once, in version order, after the snapshot"
    );
    server.stop().await;
}

async fn grpc_snapshot_then_each_change_once(db: Db) {
    snapshot_then_each_change_once(db, Transport::Grpc).await
}

async fn sse_snapshot_then_each_change_once(db: Db) {
    snapshot_then_each_change_once(db, Transport::Sse).await
}

// ---------------------------------------------------------------------------------------------
// Reconnect with the last version: a snapshot at or after it first, never an older state.

async fn reconnect_never_goes_back(db: Db, resume: Resume) {
    let server = TestServer::start(db).await;
    let conn = Conn::of(&server);
    let created = server.create("resume.a", false, &[]).await;

    let mut watcher = Watcher::connect(&conn, resume.transport()).await;
    let (first_version, _) = watcher.expect_snapshot().await;
    assert_eq!(first_version, version(&created));
    let expanded = record_expand(&server, "resume.a", version(&created)).await;
    assert_eq!(
        watcher.expect_next("the expand change").await,
        Item::Change(State::from_json(&expanded))
    );
    let last_seen = version(&expanded);
    drop(watcher);

    // Changes while the client is away.
    let advanced = advance(&server, "resume.a", last_seen).await;
    let b = server.create("resume.b", false, &[]).await;
    let a = ramp(&server, "resume.a", version(&advanced), 2500).await;
    let current = server.snapshot_version().await;
    assert_eq!(current, version(&a));

    let mut watcher = Watcher::resume(&conn, resume, last_seen).await;
    let (resumed_version, migrations) = watcher.expect_snapshot().await;
    assert!(
        resumed_version >= last_seen,
        "{resume:?}: resumed at {resumed_version}, older than the client's {last_seen}"
    );
    assert_eq!(
        snapshot_item(resumed_version, migrations),
        snapshot_item(current, vec![State::from_json(&a), State::from_json(&b)]),
        "{resume:?}: the resumed snapshot is the current state"
    );
    let a = ramp(&server, "resume.a", version(&a), 5000).await;
    assert_eq!(
        watcher.expect_next("the change after resuming").await,
        Item::Change(State::from_json(&a)),
        "{resume:?}: after the snapshot, only newer changes"
    );
    drop(watcher);

    // A version this database never had (only possible if it went back, e.g. restored from a
    // backup: replicas share one database) is refused with that explanation instead of a
    // stream that waits forever; a replica merely behind the database waits (replicas.rs,
    // client_resilience.rs).
    let ahead = version(&a) + 1;
    let refused = match resume {
        Resume::GrpcSince => server
            .grpc
            .clone()
            .watch(server.req(switchyard_proto::v1::WatchRequest {
                since_version: ahead,
            }))
            .await
            .map(|_| ())
            .map_err(|s| s.message().to_owned()),
        Resume::SseQuery | Resume::SseLastEventId => {
            let (status, body) = server.get(&format!("/v1/watch?since={ahead}")).await;
            if status == StatusCode::BAD_REQUEST {
                Err(body["message"].as_str().unwrap_or("").to_owned())
            } else {
                Ok(())
            }
        }
    };
    let message = refused.expect_err("a version from the future is refused");
    assert!(
        message.contains("newer than this server's newest state"),
        "{message}"
    );
    server.stop().await;
}

async fn grpc_reconnect_with_since_version(db: Db) {
    reconnect_never_goes_back(db, Resume::GrpcSince).await
}

async fn sse_reconnect_with_since_query(db: Db) {
    reconnect_never_goes_back(db, Resume::SseQuery).await
}

async fn sse_reconnect_with_last_event_id(db: Db) {
    reconnect_never_goes_back(db, Resume::SseLastEventId).await
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown ends open streams cleanly.

async fn shutdown_ends_open_watch_streams(db: Db) {
    let server = TestServer::start(db).await;
    server.create("shutdown.m", false, &[]).await;
    let conn = Conn::of(&server);
    let mut grpc = Watcher::connect(&conn, Transport::Grpc).await;
    let mut sse = Watcher::connect(&conn, Transport::Sse).await;
    grpc.expect_snapshot().await;
    sse.expect_snapshot().await;
    drop(conn);

    let (stopped, (), ()) = tokio::join!(
        tokio::time::timeout(WAIT, server.stop()),
        grpc.expect_end("gRPC"),
        sse.expect_end("SSE"),
    );
    stopped.expect("the server did not stop within the limit while watch streams were open");
}

// ---------------------------------------------------------------------------------------------
// ETag polling of the snapshot.

async fn get_snapshot(server: &TestServer, if_none_match: Option<&str>) -> reqwest::Response {
    let mut request = server
        .http
        .get(format!("{}/v1/snapshot", server.base))
        .bearer_auth(&server.token);
    if let Some(tag) = if_none_match {
        request = request.header(IF_NONE_MATCH, tag);
    }
    request.send().await.expect("GET /v1/snapshot")
}

fn etag_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(ETAG)
        .expect("an ETag header")
        .to_str()
        .expect("an ASCII ETag")
        .to_owned()
}

async fn snapshot_etag(db: Db) {
    let server = TestServer::start(db).await;
    let m = server.create("etag.m", false, &[]).await;

    let response = get_snapshot(&server, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let etag = etag_of(&response);
    let body: Value = response.json().await.unwrap();
    let v = body["version"].as_u64().unwrap();
    assert_eq!(v, version(&m));
    assert_eq!(etag, format!("\"v{v}\""));

    // Unchanged: 304, no body, the same ETag.
    for tag in [etag.clone(), format!("\"v0\", {etag}"), "*".to_owned()] {
        let response = get_snapshot(&server, Some(&tag)).await;
        assert_eq!(
            response.status(),
            StatusCode::NOT_MODIFIED,
            "If-None-Match: {tag}"
        );
        assert_eq!(etag_of(&response), etag);
        assert!(
            response.bytes().await.unwrap().is_empty(),
            "a 304 has no body"
        );
    }

    // After a change: 200 with the new state and a new ETag, which is then current.
    let m = record_expand(&server, "etag.m", v).await;
    let response = get_snapshot(&server, Some(&etag)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let new_etag = etag_of(&response);
    let body: Value = response.json().await.unwrap();
    let new_v = body["version"].as_u64().unwrap();
    assert_eq!(new_v, version(&m));
    assert!(new_v > v);
    assert_eq!(new_etag, format!("\"v{new_v}\""));
    assert_eq!(body["migrations"][0]["expand_applied"], true, "{body}");
    let response = get_snapshot(&server, Some(&new_etag)).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    server.stop().await;
}

/// RFC 9110 §13.1.2: If-None-Match uses the weak comparison, so `W/"v5"` (as a proxy that
/// compresses the body sends back) matches `"v5"`.
async fn snapshot_etag_weak_comparison(db: Db) {
    let server = TestServer::start(db).await;
    let v = server.snapshot_version().await;
    let response = get_snapshot(&server, Some(&format!("W/\"v{v}\""))).await;
    assert_eq!(
        response.status(),
        StatusCode::NOT_MODIFIED,
        "If-None-Match: W/\"v{v}\" must match ETag \"v{v}\" (weak comparison)"
    );
    server.stop().await;
}

/// A poller holding a version this database never had is refused at once, as a watcher's
/// `since` is (one rule for both), instead of waiting and answering 503.
async fn snapshot_etag_from_the_future_is_refused_at_once(db: Db) {
    let server = TestServer::start(db).await;
    server.create("etag.future", false, &[]).await;
    let newest = server.snapshot_version().await;
    for held in [newest + 1, u64::MAX] {
        let started = std::time::Instant::now();
        let response = get_snapshot(&server, Some(&format!("\"v{held}\""))).await;
        let took = started.elapsed();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "v{held}");
        assert!(took < Duration::from_secs(1), "v{held} took {took:?}");
        let body: Value = response.json().await.unwrap();
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!(
                "If-None-Match version {held} is newer than this server's newest state \
                 ({newest}); allowed up to {newest}"
            )),
            "{body}"
        );

        let (status, body) = server.get(&format!("/v1/watch?since={held}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("is newer than this server's newest state")),
            "{body}"
        );
    }
    // The current version still polls as before.
    let response = get_snapshot(&server, Some(&format!("\"v{newest}\""))).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// gRPC carries what HTTP shows: `full_since`, keyed by the stage's JSON name.

async fn grpc_migrations_carry_full_since(db: Db) {
    let server = TestServer::start(db).await;
    let made = dual_write(&server, "watch.full").await;
    ramp(&server, "watch.full", version(made.last().unwrap()), 10_000).await;
    let http = server.migration("watch.full").await;
    let expected: BTreeMap<String, u64> =
        serde_json::from_value(http["full_since"].clone()).expect("full_since: stage → version");
    assert!(expected.contains_key("dual_write"), "{http}");

    let mut grpc = server.grpc.clone();
    let request = pb::GetMigrationRequest {
        key: "watch.full".into(),
    };
    let got = grpc
        .get_migration(server.req(request))
        .await
        .expect("GetMigration")
        .into_inner();
    assert_eq!(
        got.full_since.into_iter().collect::<BTreeMap<_, _>>(),
        expected,
        "GetMigration"
    );
    let snapshot = grpc
        .get_snapshot(server.req(pb::GetSnapshotRequest {}))
        .await
        .expect("GetSnapshot")
        .into_inner();
    let in_snapshot = snapshot
        .migrations
        .into_iter()
        .find(|m| m.key == "watch.full")
        .expect("the migration in the snapshot");
    assert_eq!(
        in_snapshot
            .full_since
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        expected,
        "GetSnapshot"
    );
    server.stop().await;
}

/// HTTP and gRPC expose the same fields: a migration that has been at live (so it carries a
/// closed live window and `full_since` entries) reads the same through both, and both list the
/// same applicable events.
async fn http_and_grpc_carry_the_same_migration(db: Db) {
    let server = TestServer::start(db).await;
    let key = "watch.same";
    let mut m = dual_write(&server, key).await.pop().unwrap();
    for next in ["shadow", "live"] {
        m = ramp(&server, key, version(&m), 10_000).await;
        m = advance(&server, key, version(&m)).await;
        assert_eq!(m["stage"], next, "{m}");
    }
    m = ramp(&server, key, version(&m), 5_000).await;
    m = ramp(&server, key, version(&m), 0).await;
    let body = json!({ "expected_version": version(&m), "reason": "back to shadow" });
    mutate(&server, key, "retreat", body).await;

    let http = server.migration(key).await;
    assert!(http["live_window"]["ended_at_ms"].is_i64(), "{http}");
    let grpc = server
        .grpc
        .clone()
        .get_migration(server.req(pb::GetMigrationRequest { key: key.into() }))
        .await
        .expect("GetMigration")
        .into_inner();
    let events: Vec<String> = grpc
        .applicable_events()
        .map(|e| {
            switchyard_domain::EventKind::try_from(e)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(json!(events), http["applicable_events"]);
    assert_eq!(
        switchyard_domain::Migration::try_from(grpc).expect("gRPC migration"),
        parse_migration(http).expect("HTTP migration"),
    );
    server.stop().await;
}

switchyard_tests::both_databases!(
    http_and_grpc_carry_the_same_migration,
    grpc_migrations_carry_full_since,
    grpc_snapshot_then_each_change_once,
    sse_snapshot_then_each_change_once,
    grpc_reconnect_with_since_version,
    sse_reconnect_with_since_query,
    sse_reconnect_with_last_event_id,
    shutdown_ends_open_watch_streams,
    snapshot_etag,
    snapshot_etag_weak_comparison,
    snapshot_etag_from_the_future_is_refused_at_once,
);

// ---------------------------------------------------------------------------------------------
// Postgres: two replicas on one database.

/// Reads from every watcher until each has received `expected`, exactly, in order.
async fn expect_all(watchers: &mut [(&str, &mut Watcher)], expected: &[Value], what: &str) {
    for (name, watcher) in watchers.iter_mut() {
        for m in expected {
            let want = Item::Change(State::from_json(m));
            let got = watcher
                .expect_next(&format!("{what} on {name}: {want:?}"))
                .await;
            assert_eq!(got, want, "{what} on {name}: in order, exactly once");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_change_through_one_replica_reaches_watchers_of_another() {
    let a = TestServer::start(Db::Postgres).await;
    let b = TestServer::start_on(a.db.clone(), TestClock::new()).await;
    let conn_b = Conn::of(&b);
    let mut grpc = Watcher::connect(&conn_b, Transport::Grpc).await;
    let mut sse = Watcher::connect(&conn_b, Transport::Sse).await;
    let (v_grpc, _) = grpc.expect_snapshot().await;
    let (v_sse, _) = sse.expect_snapshot().await;
    assert_eq!(v_grpc, a.snapshot_version().await);
    assert_eq!(v_sse, v_grpc);
    let mut watchers = [("B/gRPC", &mut grpc), ("B/SSE", &mut sse)];

    // One change at a time through A; each reaches B's watchers before the next is made.
    let created = a.create("replica.m", false, &[]).await;
    expect_all(&mut watchers, std::slice::from_ref(&created), "create").await;
    let expanded = record_expand(&a, "replica.m", version(&created)).await;
    expect_all(
        &mut watchers,
        std::slice::from_ref(&expanded),
        "expand applied",
    )
    .await;
    let advanced = advance(&a, "replica.m", version(&expanded)).await;
    expect_all(&mut watchers, std::slice::from_ref(&advanced), "advance").await;
    let mut last = advanced;
    for bp in [100, 2500] {
        last = ramp(&a, "replica.m", version(&last), bp).await;
        expect_all(&mut watchers, std::slice::from_ref(&last), "ramp").await;
    }

    // A burst through A on distinct migrations: every one arrives, in version order, once.
    let mut burst = Vec::new();
    for i in 0..5 {
        burst.push(a.create(&format!("replica.burst-{i}"), false, &[]).await);
    }
    expect_all(&mut watchers, &burst, "burst of creates").await;

    // A burst on one migration: B follows the change log, so every intermediate state
    // arrives too, in order, exactly once.
    let mut accepted = Vec::new();
    for bp in [3000, 4000, 5000, 6000] {
        last = ramp(&a, "replica.m", version(&last), bp).await;
        accepted.push(last.clone());
    }
    expect_all(&mut watchers, &accepted, "ramp burst on one migration").await;

    // A sentinel: nothing else arrives before it.
    let sentinel = a.create("replica.sentinel", false, &[]).await;
    expect_all(&mut watchers, std::slice::from_ref(&sentinel), "sentinel").await;

    // A client that saw a version through A and reconnects to B at once (before B may have
    // read it) never gets an older state.
    for (round, resume) in [Resume::GrpcSince, Resume::SseQuery, Resume::SseLastEventId]
        .into_iter()
        .enumerate()
    {
        last = ramp(&a, "replica.m", version(&last), 7000 + round as u32).await;
        let seen = version(&last);
        let mut resumed = Watcher::resume(&conn_b, resume, seen).await;
        let (v, migrations) = resumed.expect_snapshot().await;
        assert!(
            v >= seen,
            "{resume:?} on B: snapshot {v} is older than {seen}"
        );
        let m = migrations.iter().find(|m| m.key == "replica.m").unwrap();
        assert_eq!(m, &State::from_json(&last), "{resume:?} on B");
        drop(resumed);
        expect_all(
            &mut watchers,
            std::slice::from_ref(&last),
            &format!("{resume:?} round"),
        )
        .await;
    }
    drop(grpc);
    drop(sse);
    b.stop().await;
    a.stop().await;
}
