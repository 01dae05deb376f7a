//! A change is encoded once and the same bytes go to every watcher: read raw (the gRPC frames'
//! payloads, the SSE events' text), every watcher's copy of a change is byte-identical and
//! decodes to the change. A watcher that stops reading falls behind the broadcast and is sent a
//! fresh snapshot, never a gap: the versions it receives only go up and end at the latest.

use bytes::{Buf, Bytes};
use futures::StreamExt;
use prost::Message;
use serde_json::json;
use std::time::Duration;
use switchyard_proto::v1 as pb;
use switchyard_tests::{Db, TestServer, request_as};
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::transport::{Channel, Endpoint};

const WAIT: Duration = Duration::from_secs(20);

/// Sends `WatchRequest`s as tonic's prost codec does; receives each message's raw bytes.
#[derive(Default)]
struct Raw(tonic_prost::ProstCodec<pb::WatchRequest, pb::WatchEvent>);

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        let len = buf.remaining();
        Ok(Some(buf.copy_to_bytes(len)))
    }
}

impl Codec for Raw {
    type Encode = pb::WatchRequest;
    type Decode = Bytes;
    type Encoder = <tonic_prost::ProstCodec<pb::WatchRequest, pb::WatchEvent> as Codec>::Encoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// A `Watch` stream whose messages arrive as the bytes the server wrote.
async fn raw_watch(channel: Channel, token: &str) -> tonic::Streaming<Bytes> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("gRPC ready");
    grpc.server_streaming(
        request_as(token, pb::WatchRequest { since_version: 0 }),
        tonic::codegen::http::uri::PathAndQuery::from_static("/switchyard.v1.Switchyard/Watch"),
        Raw::default(),
    )
    .await
    .expect("Watch")
    .into_inner()
}

async fn next_raw(stream: &mut tonic::Streaming<Bytes>) -> Bytes {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a message in time")
        .expect("the stream is open")
        .expect("a message")
}

/// An SSE connection read as text, event by event (up to the blank line that ends one).
struct RawSse {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: Vec<u8>,
}

impl RawSse {
    async fn open(srv: &TestServer) -> RawSse {
        let response = srv
            .http
            .get(format!("{}/v1/watch", srv.base))
            .bearer_auth(&srv.token)
            .send()
            .await
            .expect("GET /v1/watch");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        RawSse {
            body: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
        }
    }

    /// The next event's text, keep-alive comments skipped.
    async fn next(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let event = String::from_utf8(event).expect("UTF-8");
                if event.starts_with(':') {
                    continue;
                }
                return event;
            }
            let chunk = tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("an event in time")
                .expect("the stream is open")
                .expect("a chunk");
            self.buf.extend_from_slice(&chunk);
        }
    }
}

async fn ramp(srv: &TestServer, key: &str, rollout_bp: u32) -> u64 {
    let version = srv.version_of(key).await;
    let (status, body) = srv
        .post(
            &format!("/v1/migrations/{key}/rollout"),
            json!({ "rollout_bp": rollout_bp, "expected_version": version, "reason": "fan-out" }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    body["version"].as_u64().unwrap()
}

fn grpc_channel(srv: &TestServer) -> Endpoint {
    Endpoint::from_shared(format!("http://{}", srv.server.grpc_addr)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_gets_the_same_bytes_of_a_change() {
    let srv = TestServer::start(Db::Sqlite).await;
    let key = "orders.fan-out";
    srv.at_full(key, switchyard_domain::Stage::DualWrite).await;
    ramp(&srv, key, 5_000).await;

    let channel = grpc_channel(&srv).connect().await.unwrap();
    let mut grpc = Vec::new();
    let mut sse = Vec::new();
    for _ in 0..3 {
        let mut stream = raw_watch(channel.clone(), &srv.token).await;
        next_raw(&mut stream).await; // the snapshot
        grpc.push(stream);
        let mut events = RawSse::open(&srv).await;
        assert!(events.next().await.starts_with("event: snapshot\n"));
        sse.push(events);
    }

    let version = ramp(&srv, key, 2_500).await;
    let mut frames = Vec::new();
    for stream in &mut grpc {
        frames.push(next_raw(stream).await);
    }
    assert!(frames.iter().all(|f| f == &frames[0]), "{frames:?}");
    let event = pb::WatchEvent::decode(frames[0].clone()).expect("a WatchEvent");
    let Some(pb::watch_event::Event::Change(m)) = event.event else {
        panic!("not a change: {event:?}");
    };
    assert_eq!(
        (m.key.as_str(), m.version, m.rollout_bp),
        (key, version, 2_500)
    );

    let mut texts = Vec::new();
    for events in &mut sse {
        texts.push(events.next().await);
    }
    assert!(texts.iter().all(|t| t == &texts[0]), "{texts:?}");
    let lines: Vec<&str> = texts[0].lines().collect();
    assert_eq!(lines[..2], ["event: change", &format!("id: {version}")]);
    let data: serde_json::Value =
        serde_json::from_str(lines[2].strip_prefix("data: ").expect("a data line")).unwrap();
    assert_eq!(
        (data["key"].as_str(), data["rollout_bp"].as_u64()),
        (Some(key), Some(2_500))
    );
    srv.stop().await;
}

/// A watcher that stops reading (its HTTP/2 window full, so the server stops writing to it)
/// while more changes happen than the broadcast holds gets a fresh snapshot when it reads
/// again: the versions it sees only go up and end at the latest, with no change skipped
/// outside a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_falls_behind_gets_a_fresh_snapshot() {
    let srv = TestServer::start(Db::Sqlite).await;
    let key = "orders.laggard";
    // Changes of more than 256 bytes: h2 ends a connection that buffers too many smaller DATA
    // frames its application has not read (a guard against framing floods), which here would
    // end the stream before it can fall behind.
    srv.at_full_with(
        key,
        switchyard_domain::Stage::DualWrite,
        json!({ "description": "a migration whose watcher stops reading ".repeat(10) }),
    )
    .await;
    let small_window = grpc_channel(&srv)
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut stream = raw_watch(small_window, &srv.token).await;
    next_raw(&mut stream).await;
    // More changes than the broadcast buffers (1,024), while the watcher reads nothing.
    let mut latest = 0;
    for i in 0..1_300u32 {
        latest = ramp(&srv, key, 1 + i % 2).await;
    }
    let mut last = 0;
    let mut snapshots = 0;
    while last < latest {
        let event = pb::WatchEvent::decode(next_raw(&mut stream).await).unwrap();
        let version = match event.event.expect("an event") {
            pb::watch_event::Event::Snapshot(s) => {
                snapshots += 1;
                s.version
            }
            pb::watch_event::Event::Change(m) => {
                // Changes come one version at a time (each ramp is one version here).
                assert!(
                    last == 0 || m.version == last + 1,
                    "{} after {last}",
                    m.version
                );
                m.version
            }
        };
        assert!(version > last, "went from {last} to {version}");
        last = version;
    }
    assert_eq!(last, latest);
    assert!(snapshots >= 1, "the watcher never fell behind");
    srv.stop().await;
}
