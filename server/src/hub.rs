//! The in-memory snapshot and its fan-out to watchers.
//!
//! One follower task per server owns the snapshot: it reads every change committed after the
//! version it holds (`Store::changes_since`, one state per version), swaps in the new snapshot,
//! then broadcasts each change in version order. It wakes when this replica commits (`poke`), when
//! Postgres announces a commit made through another replica (LISTEN/NOTIFY), and on a short
//! timer as a safety net for a missed notification. Because the database commits in version
//! order (see `store`), reading "everything after N" never skips a change.
//!
//! Readers (decide, snapshot, watch) only clone an `Arc` under a briefly held lock.
//!
//! The follower also reads the tokens revoked since it last looked (a revoke sends the same
//! notification but takes no snapshot version) into the replica's [`Revocations`]: the
//! authenticator refuses them from then on, cached or not, and every watch stream opened with
//! one ends.

use crate::auth::Revocations;
use crate::store::{Backend, Store};
use futures::Stream;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use switchyard_domain::{Migration, Version};
use tokio::sync::{Notify, broadcast, watch};

/// All migrations at one snapshot version.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: Version,
    pub migrations: BTreeMap<String, Arc<Migration>>,
    /// Its wire encodings, made by the first watcher that sends it (see [`Encodings`]).
    pub encoded: Encodings,
}

/// One change as the follower publishes it to every watcher.
#[derive(Debug)]
pub struct Published {
    pub migration: Arc<Migration>,
    /// When this replica published it (for the fan-out delay).
    pub at: std::time::Instant,
    pub encoded: Encodings,
}

/// A message's encodings for the watch transports (gRPC's protobuf frame, SSE's event), each
/// made once by the first watcher that sends it and then shared by every other: a change
/// reaching 10,000 watchers is serialized once per transport, not 10,000 times. Opaque to the
/// hub; a clone starts empty (a cloned snapshot is about to be changed).
#[derive(Debug, Default)]
pub struct Encodings {
    grpc: std::sync::OnceLock<bytes::Bytes>,
    sse: std::sync::OnceLock<bytes::Bytes>,
}

impl Clone for Encodings {
    fn clone(&self) -> Self {
        Encodings::default()
    }
}

impl Encodings {
    /// The gRPC encoding, made by `encode` if no watcher has made it yet.
    pub fn grpc(&self, encode: impl FnOnce() -> bytes::Bytes) -> bytes::Bytes {
        self.grpc.get_or_init(encode).clone()
    }

    /// The SSE encoding, made by `encode` if no watcher has made it yet.
    pub fn sse(&self, encode: impl FnOnce() -> bytes::Bytes) -> bytes::Bytes {
        self.sse.get_or_init(encode).clone()
    }
}

/// Why a watch stream ended early: the token it was opened with was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRevoked;

/// What a watcher receives: the full snapshot first (and again after falling behind), then each
/// change with its version.
#[derive(Debug, Clone)]
pub enum WatchItem {
    Snapshot(Arc<Snapshot>),
    Change(Arc<Published>),
}

pub struct Hub {
    store: Arc<Store>,
    current: RwLock<Arc<Snapshot>>,
    /// Each change, as this replica published it.
    changes: broadcast::Sender<Arc<Published>>,
    version: watch::Sender<Version>,
    poke: Notify,
    shutdown: watch::Sender<bool>,
    revocations: Arc<Revocations>,
    options: HubOptions,
    /// When the follower last read the database successfully (ms since the hub started).
    last_refresh_ok: std::sync::atomic::AtomicU64,
    /// Successful reads by the follower (see [`Hub::refreshes`]).
    refreshes: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
    open_watches: Arc<std::sync::atomic::AtomicUsize>,
}

/// How the hub learns of changes committed through other replicas.
#[derive(Debug, Clone, Copy)]
pub struct HubOptions {
    /// Safety-net refresh period: bounds how stale a replica can be if a notification is lost
    /// (or notifications are off).
    pub poll_interval: Duration,
    /// Listen for Postgres notifications.
    pub notifications: bool,
    /// Watch streams open at once, gRPC and SSE together; one more is refused.
    pub max_watches: usize,
}

/// A watch was refused: as many are open as the server allows.
#[derive(Debug, thiserror::Error)]
#[error(
    "too many watch streams are open ({max}, the server's --max-watch-streams); retry shortly, \
     or poll /v1/snapshot with If-None-Match meanwhile"
)]
pub struct WatchesFull {
    pub max: usize,
}

/// Changes buffered per watcher before it counts as lagging and is sent a fresh snapshot.
const BROADCAST_CAPACITY: usize = 1024;

/// How far before the latest revoke time it has seen the follower looks again. Revoke times
/// come from the revoking replica's clock and are taken a little before their transaction
/// commits, so a revoke can land with an earlier time than one already seen; re-reading a
/// margin (and ignoring the ids already known) catches it. Clock skew beyond this margin
/// between replicas would leave such a revoke to the cache's expiry.
const REVOCATION_LOOKBACK_MS: i64 = 5 * 60 * 1000;

impl Hub {
    /// Loads the full snapshot and starts the follower (and, on Postgres, the listener).
    pub async fn start(
        store: Arc<Store>,
        options: HubOptions,
    ) -> Result<Arc<Self>, crate::store::StoreError> {
        let (migrations, version) = store.changed_since(Version(0)).await?;
        let snapshot = Snapshot {
            version,
            migrations: migrations
                .into_iter()
                .map(|m| (m.key.to_string(), Arc::new(m)))
                .collect(),
            encoded: Encodings::default(),
        };
        let hub = Arc::new(Self {
            store,
            current: RwLock::new(Arc::new(snapshot)),
            changes: broadcast::channel(BROADCAST_CAPACITY).0,
            version: watch::channel(version).0,
            poke: Notify::new(),
            shutdown: watch::channel(false).0,
            revocations: Arc::new(Revocations::default()),
            options,
            last_refresh_ok: std::sync::atomic::AtomicU64::new(0),
            refreshes: std::sync::atomic::AtomicU64::new(0),
            started: std::time::Instant::now(),
            open_watches: Arc::default(),
        });
        tokio::spawn(hub.clone().follow());
        if hub.store.backend() == Backend::Postgres && options.notifications {
            tokio::spawn(hub.clone().listen());
        }
        Ok(hub)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().expect("snapshot lock poisoned").clone()
    }

    pub fn get(&self, key: &str) -> Option<Arc<Migration>> {
        self.current
            .read()
            .expect("snapshot lock poisoned")
            .migrations
            .get(key)
            .cloned()
    }

    /// The tokens this replica knows to be revoked (shared with the authenticator).
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// Asks the follower to read new changes now.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Waits until the snapshot holds `version` (or `timeout` passes), so a caller that just
    /// committed reads its own write from the snapshot.
    pub async fn caught_up(&self, version: Version, timeout: Duration) -> bool {
        self.poke();
        let mut rx = self.version.subscribe();
        tokio::time::timeout(timeout, reach(&mut rx, version))
            .await
            .unwrap_or(false)
    }

    /// How long ago the follower last read the database successfully: a replica that cannot
    /// follow serves an ever older snapshot, so readiness fails past a bound.
    pub fn since_last_refresh(&self) -> Duration {
        let last = self
            .last_refresh_ok
            .load(std::sync::atomic::Ordering::Relaxed);
        self.started
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }

    /// How many times the follower has read the database successfully. The first read, right
    /// after start-up, covers changes committed between loading the snapshot and listening for
    /// notifications; a test that needs a replica to stop learning waits for it.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The longest `since_last_refresh` of a ready replica.
    pub fn staleness_bound(&self) -> Duration {
        (self.options.poll_interval * 5).max(Duration::from_secs(15))
    }

    /// Ends every watch stream and stops the background tasks.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
        self.poke.notify_one();
    }

    /// The watch stream of the caller holding token `token_id`: never an older state than
    /// `since`, then every change exactly once in version order. Ends when the server shuts
    /// down, and with `Err(TokenRevoked)` as its last item once the token is revoked (through
    /// this replica or, as the follower learns of it, another). Refused when
    /// `HubOptions::max_watches` streams are open.
    pub fn watch(
        self: &Arc<Self>,
        since: Version,
        token_id: u64,
    ) -> Result<impl Stream<Item = Result<WatchItem, TokenRevoked>> + Send + use<>, WatchesFull>
    {
        let slot = crate::metrics::OpenWatch::take(&self.open_watches, self.options.max_watches)
            .ok_or(WatchesFull {
                max: self.options.max_watches,
            })?;
        let hub = self.clone();
        let mut shutdown = self.shutdown.subscribe();
        // Subscribed before the first item: a revoke made since the caller authenticated is
        // seen at once.
        let revoked = self.revocations.revoked(token_id);
        Ok(async_stream::stream! {
            let _open = slot;
            tokio::pin!(revoked);
            // A replica behind the caller waits until it has caught up rather than send an
            // older state.
            let mut version_rx = hub.version.subscribe();
            tokio::select! {
                reached = reach(&mut version_rx, since) => if !reached { return },
                _ = stopped(&mut shutdown) => return,
                _ = &mut revoked => {
                    yield Err(TokenRevoked);
                    return;
                }
            }
            let mut changes = hub.changes.subscribe();
            let snapshot = hub.snapshot();
            let mut last = snapshot.version;
            yield Ok(WatchItem::Snapshot(snapshot));
            loop {
                tokio::select! {
                    // Checked first: once revoked, not one more change goes out.
                    biased;
                    _ = &mut revoked => {
                        yield Err(TokenRevoked);
                        return;
                    }
                    _ = stopped(&mut shutdown) => return,
                    received = changes.recv() => match received {
                        Ok(p) if p.migration.version > last => {
                            last = p.migration.version;
                            crate::metrics::record_fanout(p.at.elapsed());
                            yield Ok(WatchItem::Change(p));
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let snapshot = hub.snapshot();
                            last = snapshot.version;
                            yield Ok(WatchItem::Snapshot(snapshot));
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        })
    }

    async fn follow(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        // The latest revoke time read so far; `None` until the first read, which takes every
        // revoked token (a handful: tokens are made by hand).
        let mut revoked_until: Option<i64> = None;
        loop {
            // Revocations first: a stream whose token was revoked before this pass ends rather
            // than receive the changes the pass reads.
            if let Err(e) = self.refresh_revocations(&mut revoked_until).await {
                tracing::warn!(error = %e, "reading revoked tokens failed; retrying");
            }
            match self.refresh().await {
                Ok(()) => {
                    self.last_refresh_ok.store(
                        self.started.elapsed().as_millis() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    self.refreshes
                        .fetch_add(1, std::sync::atomic::Ordering::Release);
                }
                Err(e) => tracing::warn!(error = %e, "reading new changes failed; retrying"),
            }
            tokio::select! {
                _ = self.poke.notified() => {}
                _ = tokio::time::sleep(self.options.poll_interval) => {}
                _ = stopped(&mut shutdown) => return,
            }
        }
    }

    async fn refresh(&self) -> Result<(), crate::store::StoreError> {
        let held = self.snapshot();
        let (changed, version) = self.store.changes_since(held.version).await?;
        if version <= held.version {
            return Ok(());
        }
        let mut next = (*held).clone();
        next.version = version;
        let changed: Vec<Arc<Migration>> = changed.into_iter().map(Arc::new).collect();
        for m in &changed {
            next.migrations.insert(m.key.to_string(), m.clone());
        }
        *self.current.write().expect("snapshot lock poisoned") = Arc::new(next);
        let at = std::time::Instant::now();
        for migration in changed {
            // No receivers is fine: nobody is watching.
            let _ = self.changes.send(Arc::new(Published {
                migration,
                at,
                encoded: Encodings::default(),
            }));
        }
        self.version.send_replace(version);
        metrics::gauge!("switchyard_snapshot_version").set(version.0 as f64);
        Ok(())
    }

    /// Reads the tokens revoked since `until` (less the look-back margin) into the revocation
    /// set, which ends their streams and refuses them on this replica.
    async fn refresh_revocations(
        &self,
        until: &mut Option<i64>,
    ) -> Result<(), crate::store::StoreError> {
        let after = until.map_or(i64::MIN, |t| t.saturating_sub(REVOCATION_LOOKBACK_MS));
        let (ids, latest) = self.store.tokens_revoked_after(after).await?;
        self.revocations.revoke(ids);
        *until = (*until).max(latest);
        Ok(())
    }

    /// Postgres: wakes the follower on every change committed through any replica.
    async fn listen(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        let mut backoff = Duration::from_millis(100);
        loop {
            let listener = async {
                let mut listener = self.store.change_listener().await?;
                // Anything committed while we were not listening.
                self.poke();
                loop {
                    listener.changed().await?;
                    self.poke();
                }
                #[allow(unreachable_code)]
                Ok::<(), crate::store::StoreError>(())
            };
            tokio::select! {
                result = listener => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "change listener lost; reconnecting");
                    }
                }
                _ = stopped(&mut shutdown) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped(&mut shutdown) => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it before anything else awaits.
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Resolves to whether the published version reached `version` (false if the hub is gone).
async fn reach(rx: &mut watch::Receiver<Version>, version: Version) -> bool {
    rx.wait_for(|v| *v >= version).await.map(|_| ()).is_ok()
}
