//! The background tasks: follow the server's watch stream (with failover and jittered
//! backoff), acknowledge and heartbeat, and report telemetry. Nothing here runs on the
//! application's evaluation path.

use crate::rpc::{self, OnRefusal, request};
use crate::state::{Shared, Source};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use switchyard_domain::Migration;
use switchyard_domain::traffic::{MismatchSample, TrafficCounts, minute_of};
use switchyard_proto::convert::telemetry_to_wire;
use switchyard_proto::limits::{MAX_BODY_BYTES, MAX_MISMATCH_SAMPLES, MAX_TELEMETRY_ENTRIES};
use switchyard_proto::v1 as pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub(crate) fn spawn(shared: Arc<Shared>, stop: &watch::Sender<bool>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(follow(shared.clone(), stop.subscribe())),
        tokio::spawn(heartbeat(shared.clone(), stop.subscribe())),
        tokio::spawn(report(shared, stop.subscribe())),
    ]
}

/// Resolves once `stop` is set.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Full-jitter exponential backoff: a random delay up to `initial * 2^attempt`, capped.
fn backoff(shared: &Shared, attempt: u32) -> Duration {
    let cap = shared
        .config
        .backoff_initial
        .saturating_mul(1 << attempt.min(16))
        .min(shared.config.backoff_max);
    cap.mul_f64(rand::random::<f64>())
}

/// Keeps one watch stream open, on the servers in turn.
async fn follow(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut attempt = 0u32;
    let mut server = 0usize;
    // Per server, why it refused this client for good (until a stream delivers something).
    let mut refusals: Vec<Option<String>> = vec![None; shared.config.servers.len()];
    let mut delivered = false;
    loop {
        let url = shared.config.servers[server].clone();
        let mut client = rpc::Client::new(shared.channels[server].clone());
        let since = shared.version();
        let outcome = tokio::select! {
            outcome = stream(&shared, &mut client, &url, since) => outcome,
            _ = stopped(&mut stop) => return,
        };
        shared.update_status(|s| s.connected = false);
        match outcome {
            // Something was received: the next failure starts the backoff afresh.
            Ok(()) => {
                attempt = 0;
                delivered = true;
            }
            Err(StreamError { message, permanent }) => {
                tracing::warn!(server = %url, error = %message, "watch stream lost; keeping the last state");
                shared.update_status(|s| s.last_error = Some(message));
                attempt = attempt.saturating_add(1);
                refusals[server] = permanent;
                // Before the first snapshot, a refusal from every server is a configuration
                // mistake: `connect` reports it instead of starting on fallbacks. Once running,
                // the client keeps its state and retries (a token revoked later must not stop
                // the application).
                if !delivered && refusals.iter().all(Option::is_some) {
                    let reasons: Vec<String> = refusals.iter().flatten().cloned().collect();
                    shared.refused.send_replace(Some(reasons.join("; ")));
                }
            }
        }
        server = (server + 1) % shared.config.servers.len();
        tokio::select! {
            _ = tokio::time::sleep(backoff(&shared, attempt)) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Why a stream failed; `permanent` says what to fix when retrying cannot help.
struct StreamError {
    message: String,
    permanent: Option<String>,
}

impl From<String> for StreamError {
    fn from(message: String) -> Self {
        Self {
            message,
            permanent: None,
        }
    }
}

/// What is wrong, and how to fix it, when a server's answer means this client is misconfigured
/// rather than the server unreachable: a refused token, a role that may not read, or an address
/// that does not serve the Switchyard gRPC API.
fn misconfiguration(url: &str, status: &tonic::Status) -> Option<String> {
    let message = status.message();
    match status.code() {
        tonic::Code::Unauthenticated => Some(format!(
            "{url} refused the token ({message}): give Client::builder a valid Switchyard API \
             token (`switchyard token create NAME --role reader`)"
        )),
        tonic::Code::PermissionDenied => Some(format!(
            "{url} does not let this token read migrations ({message}): use a token whose role \
             can read (reader, or the role your runner needs)"
        )),
        // A server with no such method: an HTTP listener routing gRPC paths to its 404, or
        // another gRPC service altogether.
        tonic::Code::Unimplemented => Some(format!(
            "{url} does not serve the Switchyard gRPC API ({message}): is it the HTTP address? \
             the client needs the server's gRPC address (`serve --grpc-addr`, port 50051 by \
             default)"
        )),
        _ if message.contains("content-type") || message.contains("protocol error") => {
            Some(format!(
                "{url} does not speak gRPC ({message}): the client needs the server's gRPC \
                 address (`serve --grpc-addr`, port 50051 by default), not its HTTP one"
            ))
        }
        _ => None,
    }
}

/// Follows one stream until it ends. `Ok` if it delivered anything before ending.
async fn stream(
    shared: &Shared,
    client: &mut rpc::Client,
    url: &str,
    since: u64,
) -> Result<(), StreamError> {
    let mut stream = client
        .watch(request(
            shared,
            pb::WatchRequest {
                since_version: since,
            },
        ))
        .await
        .map_err(|s| StreamError {
            message: format!("{}: {}", url, s.message()),
            permanent: misconfiguration(url, &s),
        })?
        .into_inner();
    shared.update_status(|s| s.server = Some(url.to_owned()));
    let mut received = false;
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) if received => return Ok(()),
            Ok(None) => return Err(format!("{url} ended the stream").into()),
            Err(status) if received => {
                tracing::info!(server = %url, error = %status.message(), "watch stream ended");
                return Ok(());
            }
            Err(status) => {
                return Err(StreamError {
                    message: format!("{url}: {}", status.message()),
                    permanent: misconfiguration(url, &status),
                });
            }
        };
        if !received {
            received = true;
            shared.update_status(|s| s.connected = true);
        }
        // A state the client cannot read is not applied, and so not acknowledged: the stream
        // is dropped (and retried) rather than skipping past it, so the server never counts
        // this instance as running a state it does not run.
        match event.event {
            Some(pb::watch_event::Event::Snapshot(s)) => {
                let migrations = s
                    .migrations
                    .into_iter()
                    .map(|m| convert(m, url))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StreamError::from)?;
                shared.apply_snapshot(s.version, migrations, Source::Server);
                shared.update_status(|s| s.last_error = None);
            }
            Some(pb::watch_event::Event::Change(m)) => {
                shared.apply_change(convert(m, url).map_err(StreamError::from)?);
            }
            None => {}
        }
    }
}

fn convert(m: pb::Migration, url: &str) -> Result<Migration, String> {
    let key = m.key.clone();
    Migration::try_from(m).map_err(|e| {
        format!(
            "{url} sent migration {key}, which this client cannot read ({e}); upgrade the client"
        )
    })
}

/// Acknowledges every applied version at once, and reports liveness periodically.
async fn heartbeat(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut applied = shared.applied.subscribe();
    loop {
        let turn = shared.heartbeat_turn.lock().await;
        let version = *applied.borrow_and_update();
        let message = heartbeat_message(&shared, version, false);
        let beat = |mut client: rpc::Client| {
            let request = request(&shared, message.clone());
            async move {
                client
                    .heartbeat(request)
                    .await
                    .inspect_err(|e| tracing::warn!(error = %e.message(), "heartbeat failed"))
            }
        };
        if let Ok(answer) = rpc::first_answer(&shared, OnRefusal::TryNext, beat).await {
            let server_version = answer.get_ref().snapshot_version;
            if server_version < version {
                tracing::warn!(
                    server_version,
                    applied = version,
                    "the server is behind this client; keeping the newer state"
                );
            }
        }
        drop(turn);
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(shared.config.heartbeat_interval) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// This instance's heartbeat: the version it applied and the migrations it evaluates, or its
/// goodbye (`leaving`).
pub(crate) fn heartbeat_message(
    shared: &Shared,
    applied: u64,
    leaving: bool,
) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        service: shared.config.service.clone(),
        instance_id: shared.config.instance_id.clone(),
        applied_version: applied,
        migrations: if leaving {
            Vec::new()
        } else {
            shared.registry.used_keys()
        },
        leaving,
    }
}

/// Sends counts every telemetry interval, keeping unsent ones (bounded) for the next try, and
/// once more on shutdown. An interval with nothing to count still sends an empty report: each
/// report tells the server the instance has reported everything it did until then, which the
/// gate waits for before it judges a soak (an idle instance must not hold it up).
async fn report(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut pending: BTreeMap<(i64, String), Pending> = BTreeMap::new();
    loop {
        let last = tokio::select! {
            _ = tokio::time::sleep(shared.config.telemetry_interval) => false,
            _ = stopped(&mut stop) => true,
        };
        collect(&shared, &mut pending);
        if last {
            // Bounded, so shutdown never hangs on an unreachable server.
            let _ = tokio::time::timeout(Duration::from_secs(2), send(&shared, &mut pending)).await;
            return;
        }
        send(&shared, &mut pending).await;
    }
}

/// One migration-minute waiting to be reported.
#[derive(Default)]
struct Pending {
    counts: TrafficCounts,
    samples: Vec<MismatchSample>,
}

/// Moves the counters into `pending`, attributed to the current minute, dropping the oldest
/// minutes beyond the cap.
fn collect(shared: &Shared, pending: &mut BTreeMap<(i64, String), Pending>) {
    let minute = minute_of(now_ms());
    for slot in shared.registry.slots() {
        slot.events.flush_logs(&slot.key);
        let counts = slot.counters.take();
        let samples = slot.events.take_samples();
        if !counts.is_empty() || !samples.is_empty() {
            let entry = pending.entry((minute, slot.key.to_string())).or_default();
            entry.counts.add(&counts);
            // A minute's entry keeps the first samples the server takes per entry.
            let room = MAX_MISMATCH_SAMPLES.saturating_sub(entry.samples.len());
            entry.samples.extend(samples.into_iter().take(room));
        }
    }
    let mut dropped = 0;
    while pending.len() > shared.config.max_pending_reports {
        pending.pop_first();
        dropped += 1;
    }
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "the server is unreachable; dropped the oldest telemetry minutes"
        );
    }
}

/// Sends what is pending; entries the server accepted leave `pending`.
async fn send(shared: &Shared, pending: &mut BTreeMap<(i64, String), Pending>) {
    let reports = reports(shared, pending);
    // Reports accepted so far, by any server: the next server goes on from there.
    let accepted = AtomicUsize::new(0);
    let send_rest = |mut client: rpc::Client| {
        let (reports, accepted) = (&reports, &accepted);
        async move {
            for (_, message) in &reports[accepted.load(Ordering::Relaxed)..] {
                client
                    .report_telemetry(request(shared, message.clone()))
                    .await
                    .inspect_err(
                        |e| tracing::debug!(error = %e.message(), "telemetry report failed"),
                    )?;
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    };
    let _ = rpc::first_answer(shared, OnRefusal::TryNext, send_rest).await;
    for (keys, _) in &reports[..accepted.into_inner()] {
        for k in keys {
            pending.remove(k);
        }
    }
}

/// What is pending, as reports that stay well under the server's 64 KiB message limit (and its
/// 5,000 entries) however long the backlog, each with the keys it carries.
fn reports(
    shared: &Shared,
    pending: &BTreeMap<(i64, String), Pending>,
) -> Vec<(Vec<(i64, String)>, pb::ReportTelemetryRequest)> {
    let mut reports = Vec::new();
    let mut keys = Vec::new();
    let mut entries = Vec::new();
    let mut bytes = 0;
    for (k, p) in pending {
        let entry = telemetry_to_wire(&k.1, k.0, &p.counts, &p.samples);
        let size = prost::Message::encoded_len(&entry) + 4;
        if !entries.is_empty()
            && (bytes + size > MAX_REPORT_BYTES || entries.len() >= MAX_TELEMETRY_ENTRIES)
        {
            reports.push((
                std::mem::take(&mut keys),
                report_message(shared, std::mem::take(&mut entries)),
            ));
            bytes = 0;
        }
        bytes += size;
        keys.push(k.clone());
        entries.push(entry);
    }
    // Nothing pending is still a report (see `report`).
    if !entries.is_empty() || reports.is_empty() {
        reports.push((keys, report_message(shared, entries)));
    }
    reports
}

fn report_message(
    shared: &Shared,
    entries: Vec<pb::MigrationTelemetry>,
) -> pb::ReportTelemetryRequest {
    pb::ReportTelemetryRequest {
        service: shared.config.service.clone(),
        instance_id: shared.config.instance_id.clone(),
        entries,
    }
}

/// Encoded size a telemetry report aims below: three quarters of what the server takes, which
/// leaves room for the envelope and an entry that ends past the budget.
const MAX_REPORT_BYTES: usize = MAX_BODY_BYTES / 4 * 3;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
