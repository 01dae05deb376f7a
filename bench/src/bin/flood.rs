//! Connection flood: holds N silent and M slowloris connections open against a running server,
//! reopening each one the server closes (as an attacker would), and meanwhile measures
//! `GET /healthz` on fresh connections. The same probes run first without the flood, so both
//! figures come from one run.
//!
//! Usage: see BENCHMARKS.md.

use anyhow::{Context, bail};
use clap::Parser;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};
use switchyard_bench::raise_file_limit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    /// The server's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Connections that connect and never send a byte.
    #[arg(long, default_value_t = 5000)]
    silent: usize,
    /// Connections that send a request head one header line at a time, never finishing it.
    #[arg(long, default_value_t = 500)]
    slowloris: usize,
    /// Health checks to time in each phase.
    #[arg(long, default_value_t = 2000)]
    probes: usize,
    /// Pause between health checks.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    probe_interval: Duration,
    /// How often a slowloris connection sends its next header line.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    trickle: Duration,
}

/// One health check on a new connection: its latency, or why it failed.
async fn probe(addr: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let mut socket = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: flood\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    socket
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "answer: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(80)])
        ));
    }
    Ok(started.elapsed())
}

struct Phase {
    latencies: Vec<Duration>,
    failures: Vec<String>,
}

async fn probes(args: &Args) -> Phase {
    let mut phase = Phase {
        latencies: Vec::with_capacity(args.probes),
        failures: Vec::new(),
    };
    for _ in 0..args.probes {
        // A probe that takes seconds is a failure of the server, not of the tool.
        match tokio::time::timeout(Duration::from_secs(5), probe(&args.addr)).await {
            Ok(Ok(latency)) => phase.latencies.push(latency),
            Ok(Err(e)) => phase.failures.push(e),
            Err(_) => phase.failures.push("no answer within 5 s".to_owned()),
        }
        tokio::time::sleep(args.probe_interval).await;
    }
    phase.latencies.sort();
    phase
}

fn report(name: &str, phase: &Phase) {
    let at = |q: f64| {
        let l = &phase.latencies;
        if l.is_empty() {
            return f64::NAN;
        }
        l[((l.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
    };
    println!(
        "{name:<28} probes {:>5}  failed {:>3}  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        phase.latencies.len() + phase.failures.len(),
        phase.failures.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    for failure in phase.failures.iter().take(3) {
        println!("    e.g. {failure}");
    }
}

/// Keeps one flood connection open until `stop`: connects, optionally trickles a head that
/// never ends, and reconnects whenever the server closes it.
async fn hold(
    addr: String,
    trickle: Option<Duration>,
    stop: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    made: Arc<AtomicUsize>,
    closed_by_server: Arc<AtomicUsize>,
) {
    while !stop.load(Relaxed) {
        let Ok(mut socket) = TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        open.fetch_add(1, Relaxed);
        made.fetch_add(1, Relaxed);
        let mut buf = [0u8; 256];
        let mut line = 0u64;
        if trickle.is_some() {
            let _ = socket
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: flood\r\n")
                .await;
        }
        loop {
            let wait = trickle.unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                read = socket.read(&mut buf) => match read {
                    Ok(0) | Err(_) => {
                        closed_by_server.fetch_add(1, Relaxed);
                        break;
                    }
                    Ok(_) => {}
                },
                _ = tokio::time::sleep(wait) => {
                    if stop.load(Relaxed) {
                        break;
                    }
                    line += 1;
                    let header = format!("X-Line-{line}: slow\r\n");
                    if socket.write_all(header.as_bytes()).await.is_err() {
                        closed_by_server.fetch_add(1, Relaxed);
                        break;
                    }
                }
            }
        }
        open.fetch_sub(1, Relaxed);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let limit = raise_file_limit();
    let needed = (args.silent + args.slowloris + 64) as u64;
    if limit < needed {
        bail!(
            "this process may open {limit} files; the flood needs {needed} (raise the hard limit)"
        );
    }
    probe(&args.addr)
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("no healthy server at {}", args.addr))?;

    let quiet = probes(&args).await;
    report("no flood", &quiet);

    let stop = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicUsize::new(0));
    let made = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let mut holders = Vec::new();
    for i in 0..args.silent + args.slowloris {
        let trickle = (i >= args.silent).then_some(args.trickle);
        holders.push(tokio::spawn(hold(
            args.addr.clone(),
            trickle,
            stop.clone(),
            open.clone(),
            made.clone(),
            closed.clone(),
        )));
    }
    // Probing starts once every flood connection has connected (a server short of
    // descriptors may already have closed some: they are reconnecting).
    let target = args.silent + args.slowloris;
    let deadline = Instant::now() + Duration::from_secs(60);
    while made.load(Relaxed) < target {
        if Instant::now() > deadline {
            bail!(
                "only {} of {target} flood connections connected",
                made.load(Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let flooded_at = Instant::now();
    let flooded = probes(&args).await;
    report(
        &format!("{} silent + {} slowloris", args.silent, args.slowloris),
        &flooded,
    );
    println!(
        "flood: {} connections held at the end, {} made; the server closed {} over {:.1} s (each reopened)",
        open.load(Relaxed),
        made.load(Relaxed),
        closed.load(Relaxed),
        flooded_at.elapsed().as_secs_f64()
    );
    stop.store(true, Relaxed);
    for h in holders {
        h.abort();
    }
    Ok(())
}
