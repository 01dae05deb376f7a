//! The background tasks: follow the server's watch stream (with failover and jittered
//! backoff), acknowledge and heartbeat, and report telemetry. Nothing here runs on the
//! application's evaluation path.

use crate::state::{Config, Shared, Source};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use switchyard_domain::Migration;
use switchyard_domain::traffic::{TrafficCounts, minute_of};
use switchyard_proto::convert::telemetry_to_wire;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::switchyard_client::SwitchyardClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// One lazily connected channel per configured server.
pub(crate) fn channels(config: &Config) -> Arc<Vec<Channel>> {
    Arc::new(
        config
            .servers
            .iter()
            .map(|url| endpoint(config, url).connect_lazy())
            .collect(),
    )
}

pub(crate) fn spawn(shared: Arc<Shared>, stop: &watch::Sender<bool>) -> Vec<JoinHandle<()>> {
    let channels = shared.channels.clone();
    vec![
        tokio::spawn(follow(shared.clone(), channels.clone(), stop.subscribe())),
        tokio::spawn(heartbeat(
            shared.clone(),
            channels.clone(),
            stop.subscribe(),
        )),
        tokio::spawn(report(shared, channels, stop.subscribe())),
    ]
}

fn endpoint(config: &Config, url: &str) -> Endpoint {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .expect("server URLs are checked by the builder")
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Notice a server that vanished without closing the connection.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(pem) = &config.tls_ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(tls)
            .expect("TLS configuration is valid");
    }
    endpoint
}

pub(crate) fn request<T>(shared: &Shared, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {}", shared.config.token).parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
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
async fn follow(shared: Arc<Shared>, channels: Arc<Vec<Channel>>, mut stop: watch::Receiver<bool>) {
    let mut attempt = 0u32;
    let mut server = 0usize;
    loop {
        let url = shared.config.servers[server].clone();
        let mut client = SwitchyardClient::new(channels[server].clone());
        let since = shared.version();
        let outcome = tokio::select! {
            outcome = stream(&shared, &mut client, &url, since) => outcome,
            _ = stopped(&mut stop) => return,
        };
        shared.update_status(|s| s.connected = false);
        match outcome {
            // Something was received: the next failure starts the backoff afresh.
            Ok(()) => attempt = 0,
            Err(e) => {
                tracing::warn!(server = %url, error = %e, "watch stream lost; keeping the last state");
                shared.update_status(|s| s.last_error = Some(e));
                attempt = attempt.saturating_add(1);
            }
        }
        server = (server + 1) % shared.config.servers.len();
        tokio::select! {
            _ = tokio::time::sleep(backoff(&shared, attempt)) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Follows one stream until it ends. `Ok` if it delivered anything before ending.
async fn stream(
    shared: &Shared,
    client: &mut SwitchyardClient<Channel>,
    url: &str,
    since: u64,
) -> Result<(), String> {
    let mut stream = client
        .watch(request(
            shared,
            pb::WatchRequest {
                since_version: since,
            },
        ))
        .await
        .map_err(|s| format!("{}: {}", url, s.message()))?
        .into_inner();
    shared.update_status(|s| s.server = Some(url.to_owned()));
    let mut received = false;
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) if received => return Ok(()),
            Ok(None) => return Err(format!("{url} ended the stream")),
            Err(status) if received => {
                tracing::info!(server = %url, error = %status.message(), "watch stream ended");
                return Ok(());
            }
            Err(status) => return Err(format!("{url}: {}", status.message())),
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
                    .collect::<Result<Vec<_>, _>>()?;
                shared.apply_snapshot(s.version, migrations, Source::Server);
                shared.update_status(|s| s.last_error = None);
            }
            Some(pb::watch_event::Event::Change(m)) => {
                shared.apply_change(convert(m, url)?);
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
async fn heartbeat(
    shared: Arc<Shared>,
    channels: Arc<Vec<Channel>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut applied = shared.applied.subscribe();
    loop {
        let version = *applied.borrow_and_update();
        let message = heartbeat_message(&shared, version, false);
        for channel in preferred(&shared, &channels) {
            let mut client = SwitchyardClient::new(channel);
            match client.heartbeat(request(&shared, message.clone())).await {
                Ok(answer) => {
                    let server_version = answer.get_ref().snapshot_version;
                    if server_version < version {
                        tracing::warn!(
                            server_version,
                            applied = version,
                            "the server is behind this client; keeping the newer state"
                        );
                    }
                    break;
                }
                Err(e) => tracing::warn!(error = %e.message(), "heartbeat failed"),
            }
        }
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

/// The channel of the server the watch stream uses first, then the others.
pub(crate) fn preferred(shared: &Shared, channels: &[Channel]) -> Vec<Channel> {
    let current = shared.status().server;
    let first = shared
        .config
        .servers
        .iter()
        .position(|u| Some(u) == current.as_ref())
        .unwrap_or(0);
    (0..channels.len())
        .map(|i| channels[(first + i) % channels.len()].clone())
        .collect()
}

/// Sends counts every telemetry interval, keeping unsent ones (bounded) for the next try, and
/// once more on shutdown.
async fn report(shared: Arc<Shared>, channels: Arc<Vec<Channel>>, mut stop: watch::Receiver<bool>) {
    let mut pending: BTreeMap<(i64, String), TrafficCounts> = BTreeMap::new();
    loop {
        let last = tokio::select! {
            _ = tokio::time::sleep(shared.config.telemetry_interval) => false,
            _ = stopped(&mut stop) => true,
        };
        collect(&shared, &mut pending);
        if !pending.is_empty() {
            if last {
                // Bounded, so shutdown never hangs on an unreachable server.
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    send(&shared, &channels, &mut pending),
                )
                .await;
            } else {
                send(&shared, &channels, &mut pending).await;
            }
        }
        if last {
            return;
        }
    }
}

/// Moves the counters into `pending`, attributed to the current minute, dropping the oldest
/// minutes beyond the cap.
fn collect(shared: &Shared, pending: &mut BTreeMap<(i64, String), TrafficCounts>) {
    let minute = minute_of(now_ms());
    for slot in shared.registry.slots() {
        let counts = slot.counters.take();
        if !counts.is_empty() {
            pending
                .entry((minute, slot.key.to_string()))
                .or_default()
                .add(&counts);
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
async fn send(
    shared: &Shared,
    channels: &[Channel],
    pending: &mut BTreeMap<(i64, String), TrafficCounts>,
) {
    for channel in preferred(shared, channels) {
        let mut client = SwitchyardClient::new(channel);
        while !pending.is_empty() {
            // Reports stay well under the server's 64 KiB message limit (and its 5,000
            // entries), however long the backlog.
            let mut chunk: Vec<(i64, String)> = Vec::new();
            let mut entries = Vec::new();
            let mut bytes = 0;
            for (k, counts) in pending.iter() {
                let entry = telemetry_to_wire(&k.1, k.0, counts);
                bytes += prost::Message::encoded_len(&entry) + 4;
                if !entries.is_empty() && (bytes > MAX_REPORT_BYTES || entries.len() >= 5_000) {
                    break;
                }
                chunk.push(k.clone());
                entries.push(entry);
            }
            let message = pb::ReportTelemetryRequest {
                service: shared.config.service.clone(),
                instance_id: shared.config.instance_id.clone(),
                entries,
            };
            match client.report_telemetry(request(shared, message)).await {
                Ok(_) => {
                    for k in &chunk {
                        pending.remove(k);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e.message(), "telemetry report failed");
                    break;
                }
            }
        }
        if pending.is_empty() {
            return;
        }
    }
}

/// Encoded size a telemetry report aims below (the server refuses messages over 64 KiB).
const MAX_REPORT_BYTES: usize = 48 * 1024;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
