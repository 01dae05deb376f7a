//! The client handle applications hold, its builder, and its status.

use crate::migrator::Migrator;
use crate::slot::{Registry, Slot};
use crate::snapshot_file::{self, SnapshotFile};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_domain::{Migration, Plan, Stage};
use switchyard_proto::v1::switchyard_client::SwitchyardClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where the client's state currently comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A snapshot streamed from the server.
    Server,
    /// The snapshot this client saved on an earlier run (the server was unreachable).
    SavedSnapshot,
    /// The bootstrap file the application gave (no server, no saved snapshot).
    BootstrapFile,
    /// Only the application's fallback stages (and `off` for anything else).
    Fallback,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Server => "the server",
            Source::SavedSnapshot => "the saved snapshot",
            Source::BootstrapFile => "the bootstrap file",
            Source::Fallback => "fallback stages",
        })
    }
}

/// A point-in-time view of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub source: Source,
    /// The snapshot version applied (0: none).
    pub version: u64,
    /// Whether a watch stream is open and has delivered the server's state (a replica that is
    /// behind this client holds the stream silent until it catches up: not connected yet).
    pub connected: bool,
    /// The server the stream is open to (or was last).
    pub server: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid client configuration: {0}")]
    Config(String),
}

/// Configuration; see [`ClientBuilder`] for each knob.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub servers: Vec<String>,
    pub token: String,
    pub service: String,
    pub instance_id: String,
    pub startup_timeout: Duration,
    pub snapshot_path: Option<PathBuf>,
    pub bootstrap_path: Option<PathBuf>,
    pub heartbeat_interval: Duration,
    pub telemetry_interval: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub max_pending_reports: usize,
    pub tls_ca_pem: Option<Vec<u8>>,
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    config: Config,
    fallbacks: HashMap<String, Stage>,
    default_fallback: Stage,
}

impl ClientBuilder {
    /// Another server (replica) to fail over to; the client tries them in turn.
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.config.servers.push(url.into());
        self
    }

    /// This process's instance id (default: a random one).
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.config.instance_id = id.into();
        self
    }

    /// How long `connect` waits for the server's first snapshot (default 5 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.config.startup_timeout = timeout;
        self
    }

    /// Where the client keeps its own copy of the snapshot, rewritten atomically on every
    /// change and used at start-up when the server is unreachable.
    pub fn snapshot_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.snapshot_path = Some(path.into());
        self
    }

    /// A snapshot to start from when neither the server nor a saved snapshot is available
    /// (same format as `GET /v1/snapshot`).
    pub fn bootstrap_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.bootstrap_path = Some(path.into());
        self
    }

    /// The stage a migration evaluates at while no snapshot knows it (default `off`).
    pub fn fallback(mut self, migration: impl Into<String>, stage: Stage) -> Self {
        self.fallbacks.insert(migration.into(), stage);
        self
    }

    /// How often the client reports that it is live (default 10 s; keep it well under the
    /// server's client TTL). It also reports at once after applying a new version.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = interval;
        self
    }

    /// How often counts are sent (default 5 s).
    pub fn telemetry_interval(mut self, interval: Duration) -> Self {
        self.config.telemetry_interval = interval;
        self
    }

    /// Reconnection backoff: first delay and cap (default 100 ms and 10 s, with full jitter).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.backoff_initial = initial;
        self.config.backoff_max = max;
        self
    }

    /// Per-migration minute reports kept while the server is unreachable (default 10,000);
    /// the oldest are dropped beyond it.
    pub fn max_pending_reports(mut self, n: usize) -> Self {
        self.config.max_pending_reports = n;
        self
    }

    /// A PEM CA certificate to trust for `https://` servers.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.config.tls_ca_pem = Some(pem.into());
        self
    }

    /// Starts the background task and waits (up to the start-up timeout) for the server's
    /// first snapshot; failing that, starts from the saved snapshot, the bootstrap file, or the
    /// fallback stages, and says which (see [`Client::status`]). Needs a Tokio runtime.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let config = self.config;
        for url in &config.servers {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ClientError::Config(format!(
                    "server URL {url:?} must start with http:// or https:// (the gRPC address)"
                )));
            }
        }
        if config.servers.is_empty() || config.service.trim().is_empty() {
            return Err(ClientError::Config(
                "a server URL and a service name are required".to_owned(),
            ));
        }
        // An unreadable saved snapshot must not keep the application from starting: it is
        // only a fallback. Say so loudly and go on without it.
        let saved = match config.snapshot_path.as_deref().map(snapshot_file::load) {
            Some(Ok(saved)) => saved,
            Some(Err(e)) => {
                tracing::error!(error = %e, "ignoring the saved snapshot");
                None
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            channels: crate::sync::channels(&config),
            registry: Registry::new(self.fallbacks, self.default_fallback),
            sync: Mutex::new(SyncState::default()),
            status: Mutex::new(Status {
                source: Source::Fallback,
                version: 0,
                connected: false,
                server: None,
                last_error: None,
            }),
            applied: watch::channel(0).0,
            config,
        });
        // The saved snapshot is the floor: the client never moves to an older state, even
        // if the first server it reaches is behind.
        if let Some(saved) = saved {
            shared.apply_snapshot(saved.version, saved.migrations, Source::SavedSnapshot);
        }
        let (stop, _) = watch::channel(false);
        let mut first = shared.subscribe_server_snapshots();
        let handles = crate::sync::spawn(shared.clone(), &stop);
        let tasks = Arc::new(Tasks {
            stop,
            handles: Mutex::new(handles),
        });
        let reached = tokio::time::timeout(shared.config.startup_timeout, first.wait_for(|s| *s))
            .await
            .is_ok();
        if !reached {
            shared.start_offline();
        }
        let status = shared.status();
        tracing::info!(
            source = %status.source,
            version = status.version,
            service = %shared.config.service,
            instance = %shared.config.instance_id,
            "switchyard client running on {}",
            status.source
        );
        Ok(Client { shared, tasks })
    }
}

pub(crate) struct Shared {
    pub registry: Registry,
    pub config: Config,
    /// One lazily connected gRPC channel per server, shared by every background call.
    pub channels: Arc<Vec<tonic::transport::Channel>>,
    sync: Mutex<SyncState>,
    status: Mutex<Status>,
    /// The applied version; the heartbeat task acknowledges each new value.
    pub applied: watch::Sender<u64>,
}

#[derive(Default)]
struct SyncState {
    version: u64,
    migrations: BTreeMap<String, Migration>,
    /// Fires once the first server snapshot is applied.
    from_server: Option<watch::Sender<bool>>,
}

impl Shared {
    fn subscribe_server_snapshots(&self) -> watch::Receiver<bool> {
        let mut sync = self.lock_sync();
        sync.from_server
            .get_or_insert_with(|| watch::channel(false).0)
            .subscribe()
    }

    fn lock_sync(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn version(&self) -> u64 {
        self.lock_sync().version
    }

    /// The full record of one migration as last applied (not for hot paths: it clones).
    pub fn migration(&self, key: &str) -> Option<Migration> {
        self.lock_sync().migrations.get(key).cloned()
    }

    /// Applies a full snapshot unless it is older than what the client has. Returns whether
    /// it was applied.
    pub fn apply_snapshot(&self, version: u64, migrations: Vec<Migration>, source: Source) -> bool {
        let mut sync = self.lock_sync();
        if version < sync.version {
            tracing::warn!(
                offered = version,
                have = sync.version,
                %source,
                "ignoring a snapshot older than the one applied"
            );
            return false;
        }
        self.registry.apply(&migrations);
        sync.version = version;
        sync.migrations = migrations
            .into_iter()
            .map(|m| (m.key.to_string(), m))
            .collect();
        self.after_apply(&mut sync, source);
        true
    }

    /// Applies one change unless it is not newer than what the client has.
    pub fn apply_change(&self, migration: Migration) -> bool {
        let mut sync = self.lock_sync();
        if migration.version.0 <= sync.version {
            return false;
        }
        self.registry.apply(std::slice::from_ref(&migration));
        sync.version = migration.version.0;
        sync.migrations.insert(migration.key.to_string(), migration);
        self.after_apply(&mut sync, Source::Server);
        true
    }

    fn after_apply(&self, sync: &mut SyncState, source: Source) {
        if let Some(path) = &self.config.snapshot_path {
            if source != Source::SavedSnapshot {
                let file = SnapshotFile {
                    version: sync.version,
                    migrations: sync.migrations.values().cloned().collect(),
                };
                if let Err(e) = snapshot_file::save(path, &file) {
                    tracing::warn!(path = %path.display(), error = %e, "saving the snapshot failed");
                }
            }
        }
        let version = sync.version;
        self.update_status(|s| {
            s.version = version;
            s.source = source;
        });
        if source == Source::Server {
            if let Some(tx) = &sync.from_server {
                tx.send_replace(true);
            }
        }
        self.applied.send_replace(version);
    }

    /// The server did not answer in time: fall back to the bootstrap file if the client has
    /// no saved snapshot.
    fn start_offline(&self) {
        if self.status().source != Source::Fallback {
            return;
        }
        if let Some(path) = &self.config.bootstrap_path {
            match snapshot_file::load(path) {
                Ok(Some(file)) => {
                    self.apply_snapshot(file.version, file.migrations, Source::BootstrapFile);
                }
                Ok(None) => {
                    tracing::error!(path = %path.display(), "the bootstrap file does not exist")
                }
                Err(e) => tracing::error!(error = %e, "ignoring the bootstrap file"),
            }
        }
    }
}

struct Tasks {
    stop: watch::Sender<bool>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// The application's handle on Switchyard: cheap to clone, shared across tasks and threads.
///
/// Evaluation (`stage`, `plan`, and the same on a [`MigrationHandle`]) reads local memory only:
/// no network, no lock, no allocation. A background task keeps that memory current.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    tasks: Arc<Tasks>,
}

impl Client {
    /// Starts building a client for `server` (its gRPC URL, e.g. `http://flags:50051`).
    pub fn builder(
        server: impl Into<String>,
        token: impl Into<String>,
        service: impl Into<String>,
    ) -> ClientBuilder {
        ClientBuilder {
            config: Config {
                servers: vec![server.into()],
                token: token.into(),
                service: service.into(),
                instance_id: random_instance_id(),
                startup_timeout: Duration::from_secs(5),
                snapshot_path: None,
                bootstrap_path: None,
                heartbeat_interval: Duration::from_secs(10),
                telemetry_interval: Duration::from_secs(5),
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_secs(10),
                max_pending_reports: 10_000,
                tls_ca_pem: None,
            },
            fallbacks: HashMap::new(),
            default_fallback: Stage::Off,
        }
    }

    /// The stage of `entity_key` in `migration`.
    #[inline]
    pub fn stage(&self, migration: &str, entity_key: impl AsRef<[u8]>) -> Stage {
        self.eval(migration, Some(entity_key.as_ref())).0
    }

    /// The stage for an operation without an entity: the trailing stage.
    #[inline]
    pub fn stage_without_entity(&self, migration: &str) -> Stage {
        self.eval(migration, None).0
    }

    /// What an operation on `entity_key` does: where to read and write, whose value counts.
    #[inline]
    pub fn plan(&self, migration: &str, entity_key: impl AsRef<[u8]>) -> Plan {
        self.stage(migration, entity_key).plan()
    }

    #[inline]
    fn eval(&self, migration: &str, entity_key: Option<&[u8]>) -> (Stage, crate::slot::State) {
        match self
            .shared
            .registry
            .with(migration, |slot| slot.stage(entity_key))
        {
            Some(found) => found,
            // First sight of this name: it gets a slot (once) at its fallback stage.
            None => self.shared.registry.slot(migration).stage(entity_key),
        }
    }

    /// A pre-resolved handle: the fastest way to evaluate one migration on a hot path.
    pub fn handle(&self, migration: &str) -> MigrationHandle {
        let slot = self.shared.registry.slot(migration);
        slot.mark_used();
        MigrationHandle { slot }
    }

    /// A migrator for `migration`: runs the old and new reads and writes its stage calls for.
    pub fn migrator(&self, migration: &str) -> Migrator {
        Migrator::new(self.handle(migration))
    }

    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// The snapshot version applied.
    pub fn version(&self) -> u64 {
        self.shared.version()
    }

    /// Resolves once the client has applied `version` or a later one (e.g. to wait for a change
    /// a release manager just made). Wrap it in a timeout: it waits as long as it takes.
    pub async fn wait_for_version(&self, version: u64) {
        let mut applied = self.shared.applied.subscribe();
        let _ = applied.wait_for(|v| *v >= version).await.map(|_| ());
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn instance_id(&self) -> &str {
        &self.shared.config.instance_id
    }

    /// Stops the background tasks after a last telemetry report, then tells the server this
    /// instance is leaving, so the rules and the gate stop waiting for it now rather than after
    /// the client TTL. Call it once the application has stopped serving operations: evaluation
    /// still answers afterwards, from a state nothing keeps current any more. Bounded: an
    /// unreachable server costs a few seconds, and the instance then ages out by its TTL.
    pub async fn shutdown(&self) {
        self.tasks.stop.send_replace(true);
        let handles =
            std::mem::take(&mut *self.tasks.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            let _ = h.await;
        }
        let message = crate::sync::heartbeat_message(&self.shared, self.shared.version(), true);
        for channel in crate::sync::preferred(&self.shared, &self.shared.channels) {
            let mut client = SwitchyardClient::new(channel);
            let call = client.heartbeat(crate::sync::request(&self.shared, message.clone()));
            match tokio::time::timeout(Duration::from_secs(2), call).await {
                Ok(Ok(_)) => return,
                Ok(Err(e)) => tracing::warn!(error = %e.message(), "could not say goodbye"),
                Err(_) => tracing::warn!("could not say goodbye: the server did not answer"),
            }
        }
    }
}

/// One migration, resolved once: evaluation is a few atomic loads and, when the front splits
/// the entities, one hash.
#[derive(Clone)]
pub struct MigrationHandle {
    pub(crate) slot: Arc<Slot>,
}

impl MigrationHandle {
    pub fn key(&self) -> &str {
        &self.slot.key
    }

    #[inline]
    pub fn stage(&self, entity_key: impl AsRef<[u8]>) -> Stage {
        self.slot.stage(Some(entity_key.as_ref())).0
    }

    /// The stage of an integer entity (bucketed by its decimal text, formatted on the stack).
    #[inline]
    pub fn stage_for_id(&self, id: u64) -> Stage {
        let mut buf = [0u8; 20];
        self.stage(decimal(id, &mut buf))
    }

    #[inline]
    pub fn stage_without_entity(&self) -> Stage {
        self.slot.stage(None).0
    }

    #[inline]
    pub fn plan(&self, entity_key: impl AsRef<[u8]>) -> Plan {
        self.stage(entity_key).plan()
    }

    /// The snapshot version of this migration's state (0 if no snapshot knows it).
    pub fn version(&self) -> u64 {
        self.slot.version()
    }
}

/// `id` in decimal, written into `buf`.
#[inline]
fn decimal(mut id: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (id % 10) as u8;
        id /= 10;
        if id == 0 {
            return &buf[i..];
        }
    }
}

fn random_instance_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "instance".to_owned());
    format!("{host}-{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_bucketed_by_their_decimal_text() {
        let mut buf = [0u8; 20];
        for id in [0u64, 7, 42, 1_000_000, u64::MAX] {
            assert_eq!(super::decimal(id, &mut buf), id.to_string().as_bytes());
        }
    }
}
