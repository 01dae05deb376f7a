//! Change propagation: opens N watch streams on a running `switchyard serve`, then makes ramps
//! and measures, for each ramp, the time from sending the ramp call to each watcher's receipt of
//! the change. Reports per-receipt and per-ramp ("every watcher has it") percentiles and the
//! server's resident memory per open watch (from /proc, so run it on the server's machine).
//!
//! Usage: see BENCHMARKS.md.

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::switchyard_client::SwitchyardClient;
use tokio::sync::{Barrier, mpsc};
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

/// Follows one SSE watch: waits for the snapshot, then reports each change of `key`.
async fn watch_sse(
    http: reqwest::Client,
    url: String,
    token: String,
    key: String,
    ready: Arc<Barrier>,
    tx: mpsc::UnboundedSender<(u64, Instant)>,
) {
    let response = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("SSE watch");
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut seen_snapshot = false;
    while let Some(Ok(chunk)) = body.next().await {
        let at = Instant::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            match field("event:").as_deref() {
                Some("snapshot") if !seen_snapshot => {
                    seen_snapshot = true;
                    ready.wait().await;
                }
                Some("change") => {
                    let data: serde_json::Value =
                        serde_json::from_str(&field("data:").unwrap_or_default())
                            .unwrap_or_default();
                    if data["key"] == key.as_str() {
                        let _ = tx.send((data["version"].as_u64().unwrap_or(0), at));
                    }
                }
                _ => {}
            }
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
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
    // Each watcher reports (version, receipt instant) of every change of our migration.
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let ready = Arc::new(Barrier::new(args.watchers + 1));
    // The encoded size of a change's gRPC message, as the watchers receive it.
    let message_bytes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..args.watchers {
        if args.transport == "sse" {
            tokio::spawn(watch_sse(
                http.clone(),
                format!("{}/v1/watch", args.http),
                args.token.clone(),
                key.clone(),
                ready.clone(),
                tx.clone(),
            ));
            continue;
        }
        let mut client = SwitchyardClient::new(channels[i % channels.len()].clone());
        let (tx, ready, token, key) = (tx.clone(), ready.clone(), args.token.clone(), key.clone());
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
                        let _ = tx.send((m.version, Instant::now()));
                    }
                }
            }
        });
    }
    ready.wait().await;
    // Let the server settle its buffers before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kib(args.server_pid)?;

    let mut receipts = Vec::new();
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
        let mut got = 0;
        let mut last = Duration::ZERO;
        while got < args.watchers {
            let (v, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .context("watchers stopped receiving")?
                .context("watchers ended")?;
            if v == version {
                let latency = at.saturating_duration_since(sent);
                receipts.push(latency);
                last = last.max(latency);
                got += 1;
            }
        }
        all_received.push(last);
    }
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
