//! The state the background tasks keep current and every handle reads: the applied snapshot,
//! the connection status, and the configuration they were started with.

use crate::slot::Registry;
use crate::snapshot_file::{self, SnapshotFile};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_domain::Migration;
use tokio::sync::watch;
use tonic::transport::Channel;

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

/// Configuration; see [`crate::ClientBuilder`] for each knob.
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

pub(crate) struct Shared {
    pub registry: Registry,
    pub config: Config,
    /// One lazily connected gRPC channel per server, shared by every background call.
    pub channels: Arc<Vec<Channel>>,
    sync: Mutex<SyncState>,
    status: Mutex<Status>,
    /// The applied version; the heartbeat task acknowledges each new value.
    pub applied: watch::Sender<u64>,
    /// Held while a heartbeat is in flight, and taken before its version is read, so the server
    /// records this instance's heartbeats in the order they were decided. Otherwise a slow first
    /// heartbeat (version 0, sent before any snapshot) could land after a later acknowledgement
    /// and make this instance look behind: rule 3 would then refuse its own backfill runner.
    pub heartbeat_turn: tokio::sync::Mutex<()>,
    /// Set when every server refused this client for a reason retrying cannot fix (a wrong
    /// token, a token that may not read, an address that is not the gRPC API) before it ever
    /// received a snapshot: `connect` returns it as an error.
    pub refused: watch::Sender<Option<String>>,
}

#[derive(Default)]
struct SyncState {
    version: u64,
    migrations: BTreeMap<String, Migration>,
    /// Fires once the first server snapshot is applied.
    from_server: Option<watch::Sender<bool>>,
}

impl Shared {
    /// Nothing applied yet: the fallback stages until a snapshot arrives.
    pub fn new(config: Config, registry: Registry, channels: Arc<Vec<Channel>>) -> Shared {
        Shared {
            registry,
            config,
            channels,
            sync: Mutex::new(SyncState::default()),
            status: Mutex::new(Status {
                source: Source::Fallback,
                version: 0,
                connected: false,
                server: None,
                last_error: None,
            }),
            applied: watch::channel(0).0,
            heartbeat_turn: tokio::sync::Mutex::new(()),
            refused: watch::channel(None).0,
        }
    }

    pub fn subscribe_server_snapshots(&self) -> watch::Receiver<bool> {
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
    pub fn start_offline(&self) {
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
