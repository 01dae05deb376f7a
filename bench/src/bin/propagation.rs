//! Change propagation: opens N watch streams on a running `switchyard serve`, then makes ramps
//! and measures, for each ramp, the time from sending the ramp call to each watcher's receipt of
//! the change. Reports per-receipt and per-ramp ("every watcher has it") percentiles and the
//! server's resident memory per open watch (from /proc, so run it on the server's machine).
//!
//! Usage: see BENCHMARKS.md.

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use switchyard_bench::percentile;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::switchyard_client::SwitchyardClient;
use tokio::sync::{Barrier, Notify};
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    /// Server HTTP base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http: String,
    /// Server gRPC URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    grpc: String,
    #[arg(long, env = "SWITCHYARD_TOKEN")]
    token: String,
    /// The server's process id, to read its resident memory.
    #[arg(long)]
    server_pid: u32,
    /// Open watch streams.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// HTTP/2 connections the streams are spread over (at most ~200 streams per connection).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Ramps to measure.
    #[arg(long, default_value_t = 30)]
    ramps: usize,
    /// Watch over gRPC streams or HTTP server-sent events (one connection per watcher).
    #[arg(long, value_parser = ["grpc", "sse"], default_value = "grpc")]
    transport: String,
}

/// Follows one SSE watch over a plain HTTP/1.1 connection: waits for the snapshot, then reports
/// each change of `key` with the instant its last byte was read.
///
/// Written against the socket rather than with an HTTP client: with 10,000 watchers on the
/// server's two cores, a general client's per-event work (its body channel, a JSON tree of every
/// event, an owned string per line) cost the load tool twice the server's CPU, so it measured
/// itself more than the server. Here an event costs a read into the connection's buffer, the
/// chunk framing stepped over in place, and the key read from the data without building it.
async fn watch_sse(
    address: String,
    token: String,
    key: String,
    ready: Arc<Barrier>,
    receipts: Arc<Receipts>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(&address)
        .await
        .expect("SSE connect");
    socket.set_nodelay(true).expect("TCP_NODELAY");
    socket
        .write_all(
            format!(
                "GET /v1/watch HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
                 Accept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("SSE request");
    let mut body = SseReader::new(&key);
    let mut buffer = vec![0u8; 16 * 1024];
    let mut seen_snapshot = false;
    let mut events = Vec::new();
    loop {
        let n = socket.read(&mut buffer).await.expect("SSE read");
        if n == 0 {
            return;
        }
        let at = Instant::now();
        body.feed(&buffer[..n], &mut events);
        for event in events.drain(..) {
            match event {
                SseEvent::Snapshot if !seen_snapshot => {
                    seen_snapshot = true;
                    ready.wait().await;
                }
                SseEvent::Change { version } => receipts.record(version, at),
                _ => {}
            }
        }
    }
}

/// The blank line that ends an event, its searcher built once (`memmem::find` builds one per
/// call, which showed in the load tool's profile at 10,000 watchers).
static EVENT_END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\n\n"));

/// What the bench needs of an SSE event.
#[derive(Debug, PartialEq)]
enum SseEvent {
    Snapshot,
    /// A change of the bench's migration, with its version (the event's id).
    Change {
        version: u64,
    },
    Other,
}

/// Where the reader is in the chunked body's framing.
#[derive(Debug)]
enum Framing {
    /// The response head, until its blank line.
    Head,
    /// A chunk's size in hex, so far.
    Size(usize),
    /// The rest of the size line (extensions), then the chunk of this size.
    SizeLine(usize),
    /// Bytes of the chunk still to come.
    Data(usize),
    /// The CRLF after a chunk.
    DataEnd,
}

/// Reads an HTTP/1.1 response whose chunked body carries server-sent events: the head is
/// checked, the framing stepped over byte by byte without copying, each chunk's bytes appended
/// once to the event text, and each event parsed when its blank line arrives.
struct SseReader {
    key: Vec<u8>,
    framing: Framing,
    head: Vec<u8>,
    /// Event text not yet ended by a blank line.
    text: Vec<u8>,
}

impl SseReader {
    fn new(key: &str) -> Self {
        Self {
            key: key.as_bytes().to_vec(),
            framing: Framing::Head,
            head: Vec::new(),
            text: Vec::new(),
        }
    }

    fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) {
        // Where the search for the next event's end resumes: a blank line may straddle reads.
        let searched = self.text.len().saturating_sub(1);
        while !bytes.is_empty() {
            match self.framing {
                Framing::Head => {
                    let from = self.head.len().saturating_sub(3);
                    self.head.extend_from_slice(bytes);
                    let Some(end) = memchr::memmem::find(&self.head[from..], b"\r\n\r\n") else {
                        return;
                    };
                    let end = from + end + 4;
                    let head = String::from_utf8_lossy(&self.head[..end]).to_ascii_lowercase();
                    assert!(
                        head.starts_with("http/1.1 200"),
                        "SSE watch refused: {head}"
                    );
                    assert!(
                        head.contains("transfer-encoding: chunked"),
                        "SSE body not chunked: {head}"
                    );
                    let rest = self.head.split_off(end);
                    self.framing = Framing::Size(0);
                    return self.feed(&rest, out);
                }
                Framing::Size(size) => match (bytes[0] as char).to_digit(16) {
                    Some(d) => {
                        bytes = &bytes[1..];
                        self.framing = Framing::Size(size * 16 + d as usize);
                    }
                    // The digits end: the rest of the line (unconsumed here) is skipped below.
                    None => self.framing = Framing::SizeLine(size),
                },
                Framing::SizeLine(size) => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    if b == b'\n' {
                        assert!(size > 0, "the server ended the SSE stream");
                        self.framing = Framing::Data(size);
                    }
                }
                Framing::Data(left) => {
                    let take = left.min(bytes.len());
                    self.text.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    self.framing = if take == left {
                        Framing::DataEnd
                    } else {
                        Framing::Data(left - take)
                    };
                }
                Framing::DataEnd => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    if b == b'\n' {
                        self.framing = Framing::Size(0);
                    }
                }
            }
        }
        let mut start = 0;
        let mut from = searched;
        while let Some(end) = EVENT_END.find(&self.text[from..]) {
            let end = from + end;
            out.push(self.parse(&self.text[start..end]));
            start = end + 2;
            from = start;
        }
        self.text.drain(..start);
    }

    fn parse(&self, block: &[u8]) -> SseEvent {
        let (mut name, mut id, mut ours) = (&b""[..], 0, false);
        for line in block.split(|&b| b == b'\n') {
            if let Some(value) = line.strip_prefix(b"event: ") {
                name = value;
            } else if let Some(value) = line.strip_prefix(b"id: ") {
                id = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            } else if let Some(data) = line.strip_prefix(b"data: ") {
                ours = migration_key(data).is_some_and(|k| *k == *self.key);
            }
        }
        match name {
            b"snapshot" => SseEvent::Snapshot,
            b"change" if ours => SseEvent::Change { version: id },
            _ => SseEvent::Other,
        }
    }
}

/// The `key` of a migration's JSON. The server writes it first, so it is read in place when
/// the data starts that way (a key has no characters JSON escapes); anything else is parsed.
fn migration_key(data: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    #[derive(serde::Deserialize)]
    struct Keyed<'a> {
        #[serde(borrow)]
        key: std::borrow::Cow<'a, str>,
    }
    if let Some(rest) = data.strip_prefix(br#"{"key":""#)
        && let Some(end) = memchr::memchr2(b'"', b'\\', rest)
        && rest[end] == b'"'
    {
        return Some(std::borrow::Cow::Borrowed(&rest[..end]));
    }
    let keyed = serde_json::from_slice::<Keyed>(data).ok()?;
    Some(std::borrow::Cow::Owned(keyed.key.into_owned().into_bytes()))
}

/// When each watcher received each change, by version. Watchers record without waking anyone;
/// the watcher that completes a version wakes the ramp loop once. (A channel message per
/// receipt cost the load tool a cross-thread wake per watcher per change: 10,000 futex calls a
/// ramp, CPU taken from the server it measures.)
struct Receipts {
    watchers: usize,
    by_version: Mutex<HashMap<u64, Vec<Instant>>>,
    complete: Notify,
}

impl Receipts {
    fn new(watchers: usize) -> Self {
        Self {
            watchers,
            by_version: Mutex::default(),
            complete: Notify::new(),
        }
    }

    fn record(&self, version: u64, at: Instant) {
        let mut by_version = self.by_version.lock().unwrap();
        let arrived = by_version.entry(version).or_default();
        arrived.push(at);
        if arrived.len() == self.watchers {
            self.complete.notify_one();
        }
    }

    /// Waits until every watcher has `version`, and returns when each received it.
    async fn all_of(&self, version: u64) -> Vec<Instant> {
        loop {
            {
                let mut by_version = self.by_version.lock().unwrap();
                if by_version.get(&version).map(Vec::len) == Some(self.watchers) {
                    return by_version.remove(&version).unwrap_or_default();
                }
            }
            // A completion since the check left a permit, so this cannot miss it.
            self.complete.notified().await;
        }
    }
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

fn request<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::new();
    let key = format!("bench.propagation-{}", std::process::id());
    let post = |path: String, body: serde_json::Value| {
        let http = http.clone();
        let url = format!("{}{path}", args.http);
        let token = args.token.clone();
        async move {
            let r = http.post(url).bearer_auth(token).json(&body).send().await?;
            let status = r.status();
            let body: serde_json::Value = r.json().await?;
            if !status.is_success() {
                bail!("{status}: {body}");
            }
            Ok::<_, anyhow::Error>(body)
        }
    };
    let m = post(
        "/v1/migrations".into(),
        // Sized as a real migration is described, so each change's message is as long as a
        // real one's (about 600 bytes encoded): HTTP/2 writes short frames and long ones
        // differently.
        serde_json::json!({
            "key": key,
            "reason": "bench",
            "description": "Split the customer's postal address out of the orders table into \
                addresses, keyed by customer: reads move to the new table behind the flag, \
                writes go to both until the old columns are dropped.",
            "owner": "team-orders",
            "entity_kind": "customer",
            "expected_services": ["orders-api", "billing-worker", "address-sync"],
        }),
    )
    .await?;
    let mut version = m["version"].as_u64().unwrap();
    for (path, body) in [
        ("events", serde_json::json!({"event": "expand_applied"})),
        ("advance", serde_json::json!({})),
    ] {
        let mut body = body;
        body["expected_version"] = version.into();
        body["reason"] = "bench setup".into();
        version = post(format!("/v1/migrations/{key}/{path}"), body).await?["version"]
            .as_u64()
            .unwrap();
    }

    let rss_before = rss_kib(args.server_pid)?;
    let mut channels = Vec::new();
    for _ in 0..if args.transport == "grpc" {
        args.connections
    } else {
        0
    } {
        channels.push(Channel::from_shared(args.grpc.clone())?.connect().await?);
    }
    // Each watcher records the instant it received each change of our migration.
    let receipts = Arc::new(Receipts::new(args.watchers));
    let ready = Arc::new(Barrier::new(args.watchers + 1));
    let sse_address = args
        .http
        .strip_prefix("http://")
        .context("--http must be an http:// URL")?
        .trim_end_matches('/')
        .to_owned();
    // The encoded size of a change's gRPC message, as the watchers receive it.
    let message_bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..args.watchers {
        if args.transport == "sse" {
            tokio::spawn(watch_sse(
                sse_address.clone(),
                args.token.clone(),
                key.clone(),
                ready.clone(),
                receipts.clone(),
            ));
            continue;
        }
        let mut client = SwitchyardClient::new(channels[i % channels.len()].clone());
        let (receipts, ready, token, key) = (
            receipts.clone(),
            ready.clone(),
            args.token.clone(),
            key.clone(),
        );
        let message_bytes = message_bytes.clone();
        tokio::spawn(async move {
            let mut stream = client
                .watch(request(&token, pb::WatchRequest { since_version: 0 }))
                .await
                .expect("watch")
                .into_inner();
            // The first message is the snapshot.
            stream.next().await.expect("snapshot").expect("snapshot ok");
            ready.wait().await;
            while let Some(Ok(event)) = stream.next().await {
                let size = prost::Message::encoded_len(&event);
                if let Some(pb::watch_event::Event::Change(m)) = event.event {
                    if m.key == key {
                        message_bytes.store(size, std::sync::atomic::Ordering::Relaxed);
                        receipts.record(m.version, Instant::now());
                    }
                }
            }
        });
    }
    ready.wait().await;
    // Let the server settle its buffers before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kib(args.server_pid)?;

    let mut latencies = Vec::new();
    let mut all_received = Vec::new();
    let mut answers = Vec::new();
    for i in 0..args.ramps {
        let bp = 100 + (i as u64 % 50) * 100;
        let body = serde_json::json!({"rollout_bp": bp, "expected_version": version, "reason": "bench ramp"});
        // Measured from the moment the ramp is sent: a server may deliver the change to its
        // watchers before it answers the call that made it.
        let sent = Instant::now();
        let m = post(format!("/v1/migrations/{key}/rollout"), body).await?;
        answers.push(sent.elapsed());
        version = m["version"].as_u64().unwrap();
        let arrived = tokio::time::timeout(Duration::from_secs(30), receipts.all_of(version))
            .await
            .with_context(|| format!("not every watcher received version {version}"))?;
        let ramp: Vec<Duration> = arrived
            .iter()
            .map(|at| at.saturating_duration_since(sent))
            .collect();
        all_received.push(ramp.iter().copied().max().unwrap_or_default());
        latencies.extend(ramp);
    }
    let mut receipts = latencies;
    receipts.sort();
    all_received.sort();
    answers.sort();
    let per_watch = (rss_after.saturating_sub(rss_before)) as f64 / args.watchers as f64;
    println!(
        "transport={} watchers={} connections={} ramps={}\n\
         ramp call answered: p50={:?} p99={:?}\n\
         receipt latency from the ramp's request: p50={:?} p99={:?} max={:?}\n\
         every watcher received: p50={:?} p99={:?} max={:?}\n\
         server RSS: {} KiB before, {} KiB with watches open: {:.1} KiB per watch\n\
         a change's gRPC message: {} bytes",
        args.transport,
        args.watchers,
        if args.transport == "grpc" {
            args.connections
        } else {
            args.watchers
        },
        args.ramps,
        percentile(&answers, 0.5),
        percentile(&answers, 0.99),
        percentile(&receipts, 0.5),
        percentile(&receipts, 0.99),
        receipts.last().copied().unwrap_or_default(),
        percentile(&all_received, 0.5),
        percentile(&all_received, 0.99),
        all_received.last().copied().unwrap_or_default(),
        rss_before,
        rss_after,
        per_watch,
        message_bytes.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, id: u64, key: &str) -> String {
        format!(
            "event: {name}\nid: {id}\ndata: {{\"key\":\"{key}\",\"description\":\"a\\nb\"}}\n\n"
        )
    }

    /// The stream as the server writes it: a head, then one chunk per event, and a keep-alive.
    fn response() -> Vec<u8> {
        let mut bytes = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
            transfer-encoding: chunked\r\n\r\n"
            .to_vec();
        for chunk in [
            event("snapshot", 3, "ours"),
            event("change", 4, "theirs"),
            ":\n\n".to_owned(),
            event("change", 5, "ours"),
        ] {
            bytes.extend_from_slice(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
        }
        bytes
    }

    #[test]
    fn events_are_read_however_the_reads_split_the_stream() {
        let bytes = response();
        let expected = vec![
            SseEvent::Snapshot,
            SseEvent::Other,
            SseEvent::Other,
            SseEvent::Change { version: 5 },
        ];
        for piece in 1..=bytes.len() {
            let mut reader = SseReader::new("ours");
            let mut events = Vec::new();
            for read in bytes.chunks(piece) {
                reader.feed(read, &mut events);
            }
            assert_eq!(events, expected, "reads of {piece} bytes");
        }
    }

    #[test]
    fn a_key_not_written_first_is_still_found() {
        assert_eq!(
            migration_key(br#"{"version":2,"key":"ours"}"#).as_deref(),
            Some(&b"ours"[..])
        );
        assert_eq!(
            migration_key(br#"{"key":"ou\u0072s"}"#).as_deref(),
            Some(&b"ours"[..])
        );
    }
}
