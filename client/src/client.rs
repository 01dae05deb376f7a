//! The client handle applications hold, and its builder.

use crate::handle::MigrationHandle;
use crate::migrator::Migrator;
use crate::rpc::{self, OnRefusal};
use crate::slot::Registry;
use crate::snapshot_file;
use crate::state::{Config, Shared, Source, Status};
use crate::sync::heartbeat_message;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_domain::{Plan, Stage};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// Every server refused this client for a reason retrying cannot fix; the message says
    /// what to change. (Unreachable servers are not this: the client starts from its saved
    /// state and keeps trying.)
    #[error("switchyard refused this client: {0}")]
    Refused(String),
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
        let channels = rpc::channels(&config);
        let registry = Registry::new(self.fallbacks, self.default_fallback);
        let shared = Arc::new(Shared::new(config, registry, channels));
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
        let mut refused = shared.refused.subscribe();
        let outcome = tokio::time::timeout(shared.config.startup_timeout, async {
            tokio::select! {
                _ = first.wait_for(|s| *s) => None,
                why = refused.wait_for(Option::is_some) => why.ok().and_then(|w| w.clone()),
            }
        })
        .await;
        match outcome {
            Ok(None) => {}
            Ok(Some(why)) => {
                // Dropping the tasks' handle stops them: nothing keeps retrying behind an error.
                drop(tasks);
                return Err(ClientError::Refused(why));
            }
            Err(_) => shared.start_offline(),
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
        let key = entity_key.as_ref();
        match self
            .shared
            .registry
            .with(migration, |slot| slot.stage_of(key))
        {
            Some(stage) => stage,
            // First sight of this name: it gets a slot (once) at its fallback stage.
            None => self.shared.registry.slot(migration).stage_of(key),
        }
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
    pub(crate) fn eval(
        &self,
        migration: &str,
        entity_key: Option<&[u8]>,
    ) -> (Stage, crate::slot::State) {
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
        let shared = &self.shared;
        let message = heartbeat_message(shared, shared.version(), true);
        let goodbye = |mut client: rpc::Client| {
            let request = rpc::request(shared, message.clone());
            async move {
                let call = client.heartbeat(request);
                match tokio::time::timeout(Duration::from_secs(2), call).await {
                    Ok(answer) => answer.inspect_err(|e| {
                        tracing::warn!(error = %e.message(), "could not say goodbye");
                    }),
                    Err(_) => {
                        tracing::warn!("could not say goodbye: the server did not answer");
                        Err(tonic::Status::deadline_exceeded(
                            "the server did not answer",
                        ))
                    }
                }
            }
        };
        let _ = rpc::first_answer(shared, OnRefusal::TryNext, goodbye).await;
    }
}

fn random_instance_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "instance".to_owned());
    format!("{host}-{:016x}", rand::random::<u64>())
}
