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
    /// The relay of each current-thread runtime's thread that has watches (see [`Feed`]).
    relays: std::sync::Mutex<Vec<(std::thread::ThreadId, broadcast::Sender<Relayed>)>>,
}

/// Where one watch receives changes from.
///
/// A change wakes every watch at once. When the watches are served by a current-thread
/// runtime, as the gRPC server is, the order of those wake-ups decides how many writes the
/// change costs: woken from that runtime's own thread, every watch runs before any connection
/// task, so each HTTP/2 connection then writes all its streams' frames in one go; woken from
/// another thread, each watch's connection task runs right after it and writes one frame. So
/// such a runtime gets a relay: one task on its thread that receives each change and passes it
/// on to the watches there.
enum Feed {
    Direct(broadcast::Receiver<Arc<Published>>),
    Relayed(broadcast::Receiver<Relayed>),
}

/// What a relay passes on: a change, or that the relay itself fell behind (each of its watches
/// then catches up from a fresh snapshot, as a watch that falls behind does).
#[derive(Clone)]
enum Relayed {
    Change(Arc<Published>),
    Behind,
}

enum Received {
    Change(Arc<Published>),
    Behind,
    Closed,
}

impl Feed {
    /// The next change (cancel-safe, as the broadcast's `recv` is).
    async fn recv(&mut self) -> Received {
        use broadcast::error::RecvError;
        match self {
            Feed::Direct(rx) => match rx.recv().await {
                Ok(p) => Received::Change(p),
                Err(RecvError::Lagged(_)) => Received::Behind,
                Err(RecvError::Closed) => Received::Closed,
            },
            Feed::Relayed(rx) => match rx.recv().await {
                Ok(Relayed::Change(p)) => Received::Change(p),
                Ok(Relayed::Behind) | Err(RecvError::Lagged(_)) => Received::Behind,
                Err(RecvError::Closed) => Received::Closed,
            },
        }
    }
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
            relays: Default::default(),
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
            let mut changes = hub.feed();
            let snapshot = hub.snapshot();
            let mut last = snapshot.version;
            yield Ok(WatchItem::Snapshot(snapshot));
            // Made once: a new one per change would join and leave the shutdown flag's list of
            // waiters each time, for every watch.
            let stop = stopped(&mut shutdown);
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    // Checked first: once revoked, not one more change goes out.
                    biased;
                    _ = &mut revoked => {
                        yield Err(TokenRevoked);
                        return;
                    }
                    _ = &mut stop => return,
                    received = changes.recv() => match received {
                        Received::Change(p) if p.migration.version > last => {
                            last = p.migration.version;
                            crate::metrics::record_fanout(p.at.elapsed());
                            yield Ok(WatchItem::Change(p));
                        }
                        Received::Change(_) => {}
                        Received::Behind => {
                            let snapshot = hub.snapshot();
                            last = snapshot.version;
                            yield Ok(WatchItem::Snapshot(snapshot));
                        }
                        Received::Closed => return,
                    },
                }
            }
        })
    }

    /// A new watch's subscription to the changes published from now on. On a current-thread
    /// runtime it comes from that thread's relay (see [`Feed`]); elsewhere from the broadcast.
    fn feed(self: &Arc<Self>) -> Feed {
        let on_one_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        if !on_one_thread {
            return Feed::Direct(self.changes.subscribe());
        }
        let thread = std::thread::current().id();
        let mut relays = self.relays.lock().expect("relay list poisoned");
        if let Some((_, local)) = relays.iter().find(|(t, _)| *t == thread) {
            return Feed::Relayed(local.subscribe());
        }
        // Subscribed here, before the caller takes its snapshot, as a direct watch would be.
        let central = self.changes.subscribe();
        let (local, rx) = broadcast::channel(BROADCAST_CAPACITY);
        relays.push((thread, local.clone()));
        tokio::spawn(self.clone().relay(central, local));
        Feed::Relayed(rx)
    }

    /// Passes each change on to the watches of one current-thread runtime, from that runtime's
    /// own thread; ends with the hub, or at the first change after its last watch has gone.
    async fn relay(
        self: Arc<Self>,
        mut central: broadcast::Receiver<Arc<Published>>,
        local: broadcast::Sender<Relayed>,
    ) {
        // Leaves the list however the relay ends (its runtime may drop it mid-wait).
        struct Listed<'a>(&'a Hub, &'a broadcast::Sender<Relayed>);
        impl Drop for Listed<'_> {
            fn drop(&mut self) {
                if let Ok(mut relays) = self.0.relays.lock() {
                    relays.retain(|(_, l)| !l.same_channel(self.1));
                }
            }
        }
        let _listed = Listed(&self, &local);
        let mut shutdown = self.shutdown.subscribe();
        loop {
            let item = tokio::select! {
                received = central.recv() => match received {
                    Ok(p) => Relayed::Change(p),
                    Err(broadcast::error::RecvError::Lagged(_)) => Relayed::Behind,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = stopped(&mut shutdown) => return,
            };
            // Nobody left to pass it to. Only this thread subscribes to this relay, so no watch
            // can join between this send and the relay leaving the list.
            if local.send(item).is_err() {
                return;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use switchyard_domain::rules::parse_reason;
    use switchyard_domain::{MigrationKey, NewMigration};

    /// A hub on a fresh SQLite store that learns of changes only when poked.
    async fn hub() -> (Arc<Hub>, Arc<Store>) {
        let dir = std::env::temp_dir().join(format!("sy-hub-{}", crate::auth::generate_token()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("hub.db").display());
        let store = Arc::new(Store::connect(&url).await.unwrap());
        let options = HubOptions {
            poll_interval: Duration::from_secs(3600),
            notifications: false,
            max_watches: 100,
        };
        let hub = Hub::start(store.clone(), options).await.unwrap();
        // Its first pass, after which it reads again only when poked.
        let first = async {
            while hub.refreshes() == 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), first)
            .await
            .expect("the hub's first read");
        (hub, store)
    }

    /// Commits a new migration without telling the hub.
    async fn create(store: &Store, key: &str) -> Version {
        let new = NewMigration::with_key(MigrationKey::parse(key).unwrap());
        let reason = parse_reason("test").unwrap();
        let m = store.create_migration(new, 1, "test", &reason, 0).await;
        m.unwrap().version
    }

    async fn next(
        watch: &mut (impl Stream<Item = Result<WatchItem, TokenRevoked>> + Unpin),
    ) -> WatchItem {
        let item = tokio::time::timeout(Duration::from_secs(10), watch.next()).await;
        item.expect("no item within 10 s")
            .expect("ended")
            .expect("revoked")
    }

    async fn relays_gone(hub: &Hub) {
        let gone = async {
            while !hub.relays.lock().unwrap().is_empty() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .expect("the relay never left");
    }

    /// On a current-thread runtime (the gRPC server's), the watches share one relay, get the
    /// published change itself, and the relay leaves once they have gone; a later watch gets a
    /// new one.
    #[tokio::test(flavor = "current_thread")]
    async fn watches_on_one_thread_share_a_relay_that_leaves_after_them() {
        let (hub, store) = hub().await;
        let mut a = Box::pin(hub.watch(Version(0), 1).unwrap());
        let mut b = Box::pin(hub.watch(Version(0), 1).unwrap());
        for w in [&mut a, &mut b] {
            assert!(matches!(next(w).await, WatchItem::Snapshot(_)));
        }
        assert_eq!(hub.relays.lock().unwrap().len(), 1, "one relay per thread");

        let version = create(&store, "orders.one").await;
        hub.poke();
        let (WatchItem::Change(x), WatchItem::Change(y)) = (next(&mut a).await, next(&mut b).await)
        else {
            panic!("a change was expected on both watches");
        };
        assert_eq!(x.migration.version, version);
        assert!(Arc::ptr_eq(&x, &y), "both got the one published change");

        drop((a, b));
        create(&store, "orders.two").await;
        hub.poke();
        relays_gone(&hub).await;

        let mut c = Box::pin(hub.watch(Version(0), 1).unwrap());
        assert!(matches!(next(&mut c).await, WatchItem::Snapshot(_)));
        let version = create(&store, "orders.three").await;
        hub.poke();
        let WatchItem::Change(z) = next(&mut c).await else {
            panic!("a change was expected");
        };
        assert_eq!(z.migration.version, version);
    }

    /// A relay that misses changes (more were published at once than the broadcast holds)
    /// sends each of its watches a fresh snapshot, as a watch that falls behind is sent.
    #[tokio::test(flavor = "current_thread")]
    async fn a_relay_that_falls_behind_sends_its_watches_a_fresh_snapshot() {
        let (hub, store) = hub().await;
        let mut w = Box::pin(hub.watch(Version(0), 1).unwrap());
        assert!(matches!(next(&mut w).await, WatchItem::Snapshot(_)));
        let mut latest = Version(0);
        for i in 0..BROADCAST_CAPACITY + 8 {
            latest = create(&store, &format!("orders.m{i}")).await;
        }
        // One pass publishes them all before the relay runs again.
        hub.poke();
        let WatchItem::Snapshot(s) = next(&mut w).await else {
            panic!("a fresh snapshot was expected");
        };
        assert_eq!(s.version, latest);
        assert_eq!(s.migrations.len(), BROADCAST_CAPACITY + 8);
    }
}
