//! The client when the server goes away: it keeps serving its last state through an outage,
//! reconnects to a server restarted on the same address and picks up what changed meanwhile,
//! starts without a server (saved snapshot, bootstrap file, fallback stages), fails over to a
//! replica that lags without ever applying an older snapshot, and never goes back below a
//! saved snapshot's version.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_client::{Client, ClientBuilder, Side, SnapshotFile, Source, Stage};
use switchyard_domain::rules::{self, Operation};
use switchyard_domain::{BasisPoints, Migration, bucket};
use switchyard_server::store::Store;
use switchyard_tests::{
    CLIENT_TTL, Db, TempDir, TestClock, TestServer, eventually, parse_migration,
};
use tokio::task::JoinHandle;

/// Upper bound for every condition the tests wait on.
const WAIT: Duration = Duration::from_secs(20);

/// How many entities the traffic evaluates.
const ENTITIES: usize = 500;

// ---------------------------------------------------------------------------------------------
// Helpers.

fn grpc_url(srv: &TestServer) -> String {
    format!("http://{}", srv.server.grpc_addr)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

fn entity_keys() -> Arc<Vec<String>> {
    Arc::new((0..ENTITIES).map(|i| format!("user-{i}")).collect())
}

/// A client builder with the short intervals the tests run on.
fn fast(url: &str, token: &str) -> ClientBuilder {
    Client::builder(url, token, "api")
        .heartbeat_interval(Duration::from_millis(100))
        .telemetry_interval(Duration::from_millis(150))
        .backoff(Duration::from_millis(10), Duration::from_millis(200))
}

async fn within<F: std::future::Future>(future: F, what: &str) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

async fn wait_version(client: &Client, version: u64, what: &str) {
    within(client.wait_for_version(version), what).await;
}

/// A mutation through the HTTP API; returns the migration's new state.
async fn mutate(srv: &TestServer, key: &str, action: &str, body: Value) -> Migration {
    let path = format!("/v1/migrations/{key}/{action}");
    let (status, body) = srv.post(&path, body).await;
    assert_eq!(status, StatusCode::OK, "POST {path}: {body}");
    parse_migration(body).expect("a migration")
}

async fn advance(srv: &TestServer, m: &Migration) -> Migration {
    let body = json!({ "expected_version": m.version.0, "reason": "next stage" });
    mutate(srv, m.key.as_str(), "advance", body).await
}

async fn ramp(srv: &TestServer, m: &Migration, rollout_bp: u32) -> Migration {
    let body =
        json!({ "rollout_bp": rollout_bp, "expected_version": m.version.0, "reason": "ramp" });
    mutate(srv, m.key.as_str(), "rollout", body).await
}

/// A new migration moved to `dual_write` at 0%.
async fn dual_write(srv: &TestServer, key: &str) -> Migration {
    let created = parse_migration(srv.create(key, false, &[]).await).unwrap();
    let body = json!({
        "event": "expand_applied", "expected_version": created.version.0, "reason": "ddl",
    });
    let expanded = mutate(srv, key, "events", body).await;
    let m = advance(srv, &expanded).await;
    assert_eq!(m.stage, Stage::DualWrite);
    m
}

/// A new migration with its front at `live` / `rollout_bp`: part of the entities read the new
/// shape, the rest still read the old one (in `shadow`).
async fn live_at(srv: &TestServer, key: &str, rollout_bp: u32) -> Migration {
    let mut m = dual_write(srv, key).await;
    for _ in [Stage::Shadow, Stage::Live] {
        m = ramp(srv, &m, 10_000).await;
        m = advance(srv, &m).await;
    }
    assert_eq!(m.stage, Stage::Live);
    ramp(srv, &m, rollout_bp).await
}

/// What every entity's stage should be, computed from the migration itself (the published
/// bucketing), independently of the client.
fn reference(m: &Migration, keys: &[String]) -> Vec<Stage> {
    keys.iter()
        .map(|k| m.front().stage_for(Some(bucket(m.salt, k.as_bytes()))))
        .collect()
}

/// The client's decisions for every entity, by name; checks the handle agrees.
fn decisions(client: &Client, key: &str, keys: &[String]) -> Vec<Stage> {
    let handle = client.handle(key);
    keys.iter()
        .map(|k| {
            let by_name = client.stage(key, k);
            assert_eq!(handle.stage(k), by_name, "{key}/{k}: by name and by handle");
            by_name
        })
        .collect()
}

fn assert_split(stages: &[Stage], a: Stage, b: Stage) {
    let (na, nb) = (
        stages.iter().filter(|s| **s == a).count(),
        stages.iter().filter(|s| **s == b).count(),
    );
    assert!(
        na > 0 && nb > 0 && na + nb == stages.len(),
        "the front splits the entities between {a} ({na}) and {b} ({nb})"
    );
}

/// Changes the rollout straight in the store (as `App::mutate` does), with no server running.
async fn ramp_in_store(db_url: &str, key: &str, rollout_bp: u32, now_ms: i64) -> Migration {
    let store = Store::connect(db_url).await.expect("opening the store");
    let op = Operation::SetRollout {
        stage: None,
        rollout: BasisPoints::new(rollout_bp).unwrap(),
    };
    let done = store
        .mutate(
            key,
            "test:offline",
            now_ms,
            CLIENT_TTL,
            |current, fleet, next_version| {
                let (next, reason) = rules::apply(
                    current,
                    current.version,
                    "ramped while the server was down",
                    &op,
                    fleet,
                    next_version,
                    now_ms,
                )?;
                Ok((next, reason, op.action().to_owned()))
            },
        )
        .await
        .expect("the offline change");
    store.close().await;
    done.migration
}

/// A server on `db` at the same addresses as a stopped one.
async fn restart(
    db: Arc<switchyard_tests::TestDb>,
    clock: TestClock,
    http: std::net::SocketAddr,
    grpc: std::net::SocketAddr,
) -> TestServer {
    TestServer::start_configured(db, clock, |c| {
        c.http_addr = http;
        c.grpc_addr = grpc;
    })
    .await
}

fn saved_version(path: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(path).expect("the saved snapshot");
    serde_json::from_str::<SnapshotFile>(&text)
        .expect("a snapshot file")
        .version
}

// ---------------------------------------------------------------------------------------------
// Background traffic: each client evaluates a fixed set of entities by name and by handle and
// runs migrator reads and writes (in-memory, always succeeding), checking every decision
// against the table the test expects for the current phase.

#[derive(Default)]
struct Counts {
    rounds: AtomicU64,
    errors: AtomicU64,
    old_reads: AtomicU64,
    new_reads: AtomicU64,
    old_writes: AtomicU64,
    new_writes: AtomicU64,
}

struct TrafficShared {
    key: String,
    keys: Arc<Vec<String>>,
    /// What every entity must evaluate to; `None` while the state may be changing.
    expect: Mutex<Option<Arc<Vec<Stage>>>>,
    mismatches: Mutex<Vec<String>>,
    stop: AtomicBool,
}

struct Traffic {
    shared: Arc<TrafficShared>,
    counts: Vec<Arc<Counts>>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    errors: u64,
    old_reads: u64,
    new_reads: u64,
    old_writes: u64,
    new_writes: u64,
}

fn sides(side: Side) -> (bool, bool) {
    match side {
        Side::Old => (true, false),
        Side::New => (false, true),
        Side::Both => (true, true),
    }
}

impl Traffic {
    fn start(clients: &[Client], key: &str, keys: Arc<Vec<String>>) -> Traffic {
        let shared = Arc::new(TrafficShared {
            key: key.to_owned(),
            keys,
            expect: Mutex::new(None),
            mismatches: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let counts: Vec<Arc<Counts>> = clients.iter().map(|_| Arc::default()).collect();
        let tasks = clients
            .iter()
            .zip(&counts)
            .enumerate()
            .map(|(i, (c, n))| tokio::spawn(serve(i, c.clone(), shared.clone(), n.clone())))
            .collect();
        Traffic {
            shared,
            counts,
            tasks,
        }
    }

    fn expect(&self, stages: Option<Vec<Stage>>) {
        *self.shared.expect.lock().unwrap() = stages.map(Arc::new);
    }

    /// Waits until every client has completed `n` more full rounds.
    async fn rounds(&self, n: u64) {
        let start: Vec<u64> = self.counts.iter().map(|c| c.rounds.load(Relaxed)).collect();
        eventually(WAIT, &format!("{n} more rounds of traffic"), || async {
            self.counts
                .iter()
                .zip(&start)
                .all(|(c, s)| c.rounds.load(Relaxed) >= s + n)
        })
        .await;
    }

    /// Sets the expectation and waits until every round in progress started under it.
    async fn phase(&self, stages: Option<Vec<Stage>>) {
        self.expect(stages);
        self.rounds(2).await;
    }

    fn assert_clean(&self, what: &str) {
        let mismatches = self.shared.mismatches.lock().unwrap();
        assert!(
            mismatches.is_empty(),
            "{what}: {} decisions differ from the expected ones, e.g. {:?}",
            mismatches.len(),
            &mismatches[..mismatches.len().min(10)]
        );
        let errors: u64 = self.counts.iter().map(|c| c.errors.load(Relaxed)).sum();
        assert_eq!(errors, 0, "{what}: the migrator returned errors");
    }

    async fn stop(self) -> Totals {
        self.shared.stop.store(true, Relaxed);
        for t in self.tasks {
            t.await.expect("a traffic task panicked");
        }
        let mut totals = Totals::default();
        for c in &self.counts {
            totals.errors += c.errors.load(Relaxed);
            totals.old_reads += c.old_reads.load(Relaxed);
            totals.new_reads += c.new_reads.load(Relaxed);
            totals.old_writes += c.old_writes.load(Relaxed);
            totals.new_writes += c.new_writes.load(Relaxed);
        }
        totals
    }
}

async fn serve(index: usize, client: Client, shared: Arc<TrafficShared>, counts: Arc<Counts>) {
    let key = shared.key.as_str();
    let handle = client.handle(key);
    let migrator = client.migrator(key);
    let mismatch = |message: String| {
        let mut list = shared.mismatches.lock().unwrap();
        if list.len() < 100 {
            list.push(format!("client {index}: {message}"));
        }
    };
    while !shared.stop.load(Relaxed) {
        let expect = shared.expect.lock().unwrap().clone();
        for (i, entity) in shared.keys.iter().enumerate() {
            let by_name = client.stage(key, entity);
            let by_handle = handle.stage(entity);
            let flags: [AtomicBool; 4] = Default::default();
            let [old_r, new_r, old_w, new_w] = &flags;
            let read = migrator
                .read_with(
                    entity,
                    move || async move {
                        old_r.store(true, Relaxed);
                        Ok::<Side, String>(Side::Old)
                    },
                    move || async move {
                        new_r.store(true, Relaxed);
                        Ok(Side::New)
                    },
                    |_, _| true,
                )
                .await;
            let write = migrator
                .write(
                    entity,
                    move || async move {
                        old_w.store(true, Relaxed);
                        Ok::<Side, String>(Side::Old)
                    },
                    move || async move {
                        new_w.store(true, Relaxed);
                        Ok(Side::New)
                    },
                )
                .await;
            let [old_r, new_r, old_w, new_w] = flags.map(AtomicBool::into_inner);
            for (counter, ran) in [
                (&counts.old_reads, old_r),
                (&counts.new_reads, new_r),
                (&counts.old_writes, old_w),
                (&counts.new_writes, new_w),
            ] {
                counter.fetch_add(u64::from(ran), Relaxed);
            }
            if read.is_err() || write.is_err() {
                counts.errors.fetch_add(1, Relaxed);
            }
            let Some(expect) = &expect else { continue };
            let want = expect[i];
            let plan = want.plan();
            if by_name != want || by_handle != want {
                mismatch(format!(
                    "{entity}: by name {by_name}, by handle {by_handle}, expected {want}"
                ));
            }
            if read != Ok(plan.return_value) || (old_r, new_r) != sides(plan.read) {
                mismatch(format!(
                    "{entity} at {want}: read returned {read:?} after reading old {old_r} new {new_r}"
                ));
            }
            if write != Ok(plan.authoritative_write) || (old_w, new_w) != sides(plan.write) {
                mismatch(format!(
                    "{entity} at {want}: write returned {write:?} after writing old {old_w} new {new_w}"
                ));
            }
        }
        counts.rounds.fetch_add(1, Relaxed);
        // Pacing, so the traffic leaves CPU to the server and the client's background tasks.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A background record of every version a client reports.

struct VersionLog {
    seen: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl VersionLog {
    fn start(client: &Client) -> VersionLog {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (client, seen, stop) = (client.clone(), seen.clone(), stop.clone());
            async move {
                let mut last = None;
                while !stop.load(Relaxed) {
                    for v in [client.version(), client.status().version] {
                        if last != Some(v) {
                            seen.lock().unwrap().push(v);
                            last = Some(v);
                        }
                    }
                    let next = last.unwrap_or(0) + 1;
                    // Wake on the next applied version, and sample regularly besides (a
                    // version going down would not wake `wait_for_version`).
                    let _ = tokio::time::timeout(
                        Duration::from_millis(1),
                        client.wait_for_version(next),
                    )
                    .await;
                }
            }
        });
        VersionLog { seen, stop, task }
    }

    /// Stops recording; returns every distinct version observed, in order.
    async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Relaxed);
        self.task.await.expect("the version log task panicked");
        Arc::try_unwrap(self.seen)
            .expect("the task is done")
            .into_inner()
            .unwrap()
    }
}

fn assert_never_below(seen: &[u64], floor: u64, what: &str) {
    assert!(!seen.is_empty(), "{what}: no version observed");
    assert!(
        seen.iter().all(|v| *v >= floor),
        "{what}: a version below {floor} was observed: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "{what}: the version went down: {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. An outage: clients keep serving their last state, then reconnect to a server restarted
//    on the same address and pick up a change made while it was down.

async fn outage_keeps_serving_then_reconnects(db: Db) {
    let srv = TestServer::start(db).await;
    let key = "outage.m";
    let before_m = live_at(&srv, key, 5_000).await;
    let v_before = before_m.version.0;
    let url = grpc_url(&srv);
    let dir = TempDir::new(&unique("switchyard-outage"));
    let mut clients = Vec::new();
    for i in 0..3 {
        let client = fast(&url, &srv.token)
            .instance_id(format!("api-{i}"))
            .snapshot_file(dir.0.join(format!("client-{i}.json")))
            .connect()
            .await
            .unwrap();
        assert_eq!(client.status().source, Source::Server);
        wait_version(&client, v_before, "the ramp reaching a client").await;
        clients.push(client);
    }
    let keys = entity_keys();
    let before = reference(&before_m, &keys);
    assert_split(&before, Stage::Live, Stage::Shadow);
    for client in &clients {
        assert_eq!(decisions(client, key, &keys), before, "before the outage");
    }

    let traffic = Traffic::start(&clients, key, keys.clone());
    traffic.phase(Some(before.clone())).await;
    traffic.rounds(3).await;
    traffic.assert_clean("with the server up");

    // The server goes away.
    let (http_addr, grpc_addr) = (srv.server.http_addr, srv.server.grpc_addr);
    let (db_handle, clock) = (srv.db.clone(), srv.clock.clone());
    srv.stop().await;
    for (i, client) in clients.iter().enumerate() {
        eventually(WAIT, &format!("client {i} noticing the outage"), || async {
            !client.status().connected
        })
        .await;
    }
    traffic.rounds(20).await;
    traffic.assert_clean("during the outage");
    for client in &clients {
        let status = client.status();
        assert_eq!(status.version, v_before, "{status:?}");
        assert_eq!(
            status.source,
            Source::Server,
            "the last state came from the server"
        );
        assert_eq!(decisions(client, key, &keys), before, "during the outage");
    }

    // A release manager changes the migration while the server is down (straight in the store).
    let after_m = ramp_in_store(&db_handle.url, key, 8_000, (clock.clock())()).await;
    let v_after = after_m.version.0;
    assert!(v_after > v_before);
    let after = reference(&after_m, &keys);
    assert_split(&after, Stage::Live, Stage::Shadow);
    assert_ne!(after, before, "the new front moves some entities");
    traffic.rounds(3).await;
    traffic.assert_clean("after the offline change, server still down");
    // From here the decisions may change at any moment.
    traffic.phase(None).await;

    // The server comes back on the same addresses and the same database.
    let srv = restart(db_handle, clock, http_addr, grpc_addr).await;
    for (i, client) in clients.iter().enumerate() {
        wait_version(
            client,
            v_after,
            &format!("client {i} receiving the offline change"),
        )
        .await;
        eventually(WAIT, &format!("client {i} reconnecting"), || async {
            let s = client.status();
            s.connected && s.source == Source::Server && s.server.as_deref() == Some(url.as_str())
        })
        .await;
        assert_eq!(client.version(), v_after);
        assert_eq!(decisions(client, key, &keys), after, "after reconnecting");
        assert_eq!(
            saved_version(&dir.0.join(format!("client-{i}.json"))),
            v_after,
            "client {i} saved the new snapshot"
        );
    }
    traffic.phase(Some(after.clone())).await;
    traffic.rounds(3).await;
    traffic.assert_clean("after reconnecting");
    let totals = traffic.stop().await;
    assert_eq!(totals.errors, 0);

    // Every instance acknowledges the new version to the restarted server.
    eventually(WAIT, "every instance acknowledging the change", || async {
        let (_, body) = srv.get(&format!("/v1/migrations/{key}/instances")).await;
        let acked = body["instances"].as_array().map_or(0, |list| {
            list.iter()
                .filter(|i| i["applied_version"].as_u64() == Some(v_after))
                .count()
        });
        acked == clients.len()
    })
    .await;

    // Nothing counted before, during or after the outage is lost or counted twice.
    for client in &clients {
        client.shutdown().await;
    }
    let (status, t) = srv.get(&format!("/v1/migrations/{key}/traffic")).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let reported = Totals {
        errors: t["total"]["old"]["errors"].as_u64().unwrap()
            + t["total"]["new"]["errors"].as_u64().unwrap(),
        old_reads: t["total"]["old"]["reads"].as_u64().unwrap(),
        new_reads: t["total"]["new"]["reads"].as_u64().unwrap(),
        old_writes: t["total"]["old"]["writes"].as_u64().unwrap(),
        new_writes: t["total"]["new"]["writes"].as_u64().unwrap(),
    };
    assert_eq!(
        reported, totals,
        "the server's counts are the clients' counts"
    );
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Start-up with the server down: from the saved snapshot, from a bootstrap file, or from the
//    fallback stages; then the server comes back and every client switches to it.

async fn start_without_server(db: Db) {
    let srv = TestServer::start(db).await;
    let key = "startup.m";
    let m = ramp(&srv, &dual_write(&srv, key).await, 5_000).await;
    let v = m.version.0;
    let url = grpc_url(&srv);
    let dir = TempDir::new(&unique("switchyard-startup"));
    let saved = dir.0.join("saved.json");
    let bootstrap = dir.0.join("bootstrap.json");
    let keys = entity_keys();
    let expected = reference(&m, &keys);
    assert_split(&expected, Stage::DualWrite, Stage::Off);

    // A client that ran before: it saved its snapshot.
    let old = fast(&url, &srv.token)
        .snapshot_file(&saved)
        .connect()
        .await
        .unwrap();
    wait_version(&old, v, "the first client").await;
    let old_decisions = decisions(&old, key, &keys);
    assert_eq!(old_decisions, expected);
    old.shutdown().await;
    assert_eq!(saved_version(&saved), v);
    // A bootstrap file, as `GET /v1/snapshot` gives it.
    let (status, snapshot) = srv.get("/v1/snapshot").await;
    assert_eq!(status, StatusCode::OK, "{snapshot}");
    assert_eq!(snapshot["version"].as_u64(), Some(v));
    std::fs::write(&bootstrap, serde_json::to_vec(&snapshot).unwrap()).unwrap();

    let (http_addr, grpc_addr) = (srv.server.http_addr, srv.server.grpc_addr);
    let (db_handle, clock, token) = (srv.db.clone(), srv.clock.clone(), srv.token.clone());
    srv.stop().await;

    let offline = |builder: ClientBuilder| {
        builder
            .startup_timeout(Duration::from_millis(300))
            .connect()
    };
    let from_saved = offline(fast(&url, &token).snapshot_file(&saved))
        .await
        .unwrap();
    let status = from_saved.status();
    assert_eq!(status.source, Source::SavedSnapshot, "{status:?}");
    assert_eq!(status.version, v, "{status:?}");
    assert!(!status.connected, "{status:?}");
    assert_eq!(from_saved.version(), v);
    assert_eq!(decisions(&from_saved, key, &keys), old_decisions);

    let from_bootstrap = offline(fast(&url, &token).bootstrap_file(&bootstrap))
        .await
        .unwrap();
    let status = from_bootstrap.status();
    assert_eq!(status.source, Source::BootstrapFile, "{status:?}");
    assert_eq!(status.version, v, "{status:?}");
    assert_eq!(decisions(&from_bootstrap, key, &keys), old_decisions);

    // A saved snapshot takes precedence over the bootstrap file.
    let both = offline(
        fast(&url, &token)
            .snapshot_file(&saved)
            .bootstrap_file(&bootstrap),
    )
    .await
    .unwrap();
    assert_eq!(both.status().source, Source::SavedSnapshot);

    let from_fallback = offline(fast(&url, &token).fallback(key, Stage::DualWrite))
        .await
        .unwrap();
    let status = from_fallback.status();
    assert_eq!(status.source, Source::Fallback, "{status:?}");
    assert_eq!(status.version, 0, "{status:?}");
    assert!(
        decisions(&from_fallback, key, &keys)
            .iter()
            .all(|s| *s == Stage::DualWrite),
        "the fallback stage applies to every entity"
    );
    assert_eq!(
        from_fallback.handle(key).stage_without_entity(),
        Stage::DualWrite
    );
    assert_eq!(from_fallback.stage("startup.unknown", "user-1"), Stage::Off);
    assert_eq!(
        from_fallback
            .handle("startup.unknown")
            .stage_without_entity(),
        Stage::Off
    );

    // The server comes back on the same address: every offline-started client switches to it.
    let srv = restart(db_handle, clock, http_addr, grpc_addr).await;
    let started_offline = [
        ("saved snapshot", &from_saved),
        ("bootstrap file", &from_bootstrap),
        ("saved snapshot and bootstrap file", &both),
        ("fallback", &from_fallback),
    ];
    for (what, client) in started_offline {
        eventually(WAIT, &format!("the {what} client connecting"), || async {
            let s = client.status();
            s.connected && s.source == Source::Server && s.version >= v
        })
        .await;
        assert_eq!(decisions(client, key, &keys), old_decisions, "{what}");
    }
    // And follows changes from then on.
    let next = ramp(&srv, &m, 7_000).await;
    let next_expected = reference(&next, &keys);
    for (what, client) in started_offline {
        wait_version(client, next.version.0, what).await;
        assert_eq!(decisions(client, key, &keys), next_expected, "{what}");
        client.shutdown().await;
    }
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. A client restarted with a saved snapshot never reports an older version.

async fn restart_with_saved_snapshot_never_goes_back(db: Db) {
    let srv = TestServer::start(db).await;
    let key = "floor.m";
    let m = ramp(&srv, &dual_write(&srv, key).await, 3_000).await;
    let v = m.version.0;
    let url = grpc_url(&srv);
    let dir = TempDir::new(&unique("switchyard-floor"));
    let saved = dir.0.join("saved.json");
    let keys = entity_keys();

    let first = fast(&url, &srv.token)
        .snapshot_file(&saved)
        .connect()
        .await
        .unwrap();
    wait_version(&first, v, "the first client").await;
    first.shutdown().await;
    assert_eq!(saved_version(&saved), v);

    // The server's database is at the saved version.
    let again = fast(&url, &srv.token)
        .snapshot_file(&saved)
        .connect()
        .await
        .unwrap();
    let log = VersionLog::start(&again);
    assert!(again.version() >= v);
    eventually(WAIT, "the restarted client connecting", || async {
        let s = again.status();
        s.connected && s.source == Source::Server
    })
    .await;
    assert_eq!(decisions(&again, key, &keys), reference(&m, &keys));
    again.shutdown().await;
    let seen = log.finish().await;
    assert_never_below(&seen, v, "against a server at the saved version");
    assert_eq!(seen, vec![v], "nothing else was applied");

    // The server's database moved on.
    let next = ramp(&srv, &m, 6_000).await;
    let restarted = fast(&url, &srv.token)
        .snapshot_file(&saved)
        .connect()
        .await
        .unwrap();
    let log = VersionLog::start(&restarted);
    wait_version(&restarted, next.version.0, "the newer state").await;
    assert_eq!(restarted.status().source, Source::Server);
    assert_eq!(decisions(&restarted, key, &keys), reference(&next, &keys));
    restarted.shutdown().await;
    assert_never_below(
        &log.finish().await,
        v,
        "against a server ahead of the snapshot",
    );
    srv.stop().await;
}

switchyard_tests::both_databases!(
    outage_keeps_serving_then_reconnects,
    start_without_server,
    restart_with_saved_snapshot_never_goes_back,
);

// ---------------------------------------------------------------------------------------------
// 3. Postgres: failover to a replica that lags. The client never applies an older snapshot,
//    keeps the newest decisions, and follows the replica once it catches up.

/// A replica that learns of changes only when something is committed through it.
async fn lagging_replica(of: &TestServer) -> TestServer {
    let replica = TestServer::start_configured(of.db.clone(), TestClock::new(), |c| {
        c.change_notifications = false;
        c.change_poll_interval = Duration::from_secs(3600);
    })
    .await;
    // Its follower reads once at start-up; only after that read does it stop learning.
    eventually(
        Duration::from_secs(10),
        "the replica's first read",
        || async { replica.server.app.hub.refreshes() > 0 },
    )
    .await;
    replica
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_failover_to_a_lagging_replica_never_goes_back() {
    let a = TestServer::start(Db::Postgres).await;
    let key = "failover.m";
    let initial = dual_write(&a, key).await;
    // B and C start now and then lag: they miss every change made through A below.
    let b = lagging_replica(&a).await;
    let c = lagging_replica(&a).await;
    let lagging_at = b.snapshot_version().await;
    assert_eq!(lagging_at, initial.version.0);
    let mut m = initial;
    for bp in [1_000, 2_500, 4_000] {
        m = ramp(&a, &m, bp).await;
    }
    let created = a.create("failover.other", false, &[]).await;
    let v_n = created["version"].as_u64().unwrap();
    assert!(v_n > m.version.0);
    assert_eq!(b.snapshot_version().await, lagging_at, "B lags");
    assert_eq!(c.snapshot_version().await, lagging_at, "C lags");

    let (url_a, url_b, url_c) = (grpc_url(&a), grpc_url(&b), grpc_url(&c));
    let dir = TempDir::new(&unique("switchyard-failover"));
    let saved = dir.0.join("saved.json");
    let client = fast(&url_a, &a.token)
        .server(&url_b)
        .snapshot_file(&saved)
        .connect()
        .await
        .unwrap();
    wait_version(&client, v_n, "the client following A").await;
    let status = client.status();
    assert_eq!(status.server.as_deref(), Some(url_a.as_str()), "{status:?}");
    let log = VersionLog::start(&client);
    let keys = entity_keys();
    let at_n = reference(&m, &keys);
    assert_split(&at_n, Stage::DualWrite, Stage::Off);
    assert_eq!(decisions(&client, key, &keys), at_n);

    // A goes away: the client fails over to B, which is behind it.
    a.stop().await;
    eventually(WAIT, "the client failing over to B", || async {
        let s = client.status();
        // B holds the stream silent until it catches up, so the client is on B but not yet
        // connected (it has received nothing from B).
        let on_b = !s.connected && s.server.as_deref() == Some(url_b.as_str());
        // Meanwhile, it keeps deciding as of version N.
        assert_eq!(decisions(&client, key, &keys), at_n, "while failing over");
        on_b
    })
    .await;
    assert_eq!(client.version(), v_n, "nothing older was applied from B");
    assert_eq!(decisions(&client, key, &keys), at_n, "on B");
    assert_eq!(b.snapshot_version().await, lagging_at, "B still lags");

    // A change through B makes it catch up: the client receives it.
    let b_view = parse_migration(b.migration(key).await).unwrap();
    assert!(b_view.version < m.version, "B still serves its old view");
    let next = ramp(&b, &m, 7_000).await;
    assert!(next.version.0 > v_n);
    wait_version(&client, next.version.0, "the change made through B").await;
    let status = client.status();
    assert_eq!(status.source, Source::Server, "{status:?}");
    assert_eq!(status.server.as_deref(), Some(url_b.as_str()), "{status:?}");
    assert!(status.connected, "B delivered: {status:?}");
    assert_eq!(decisions(&client, key, &keys), reference(&next, &keys));
    client.shutdown().await;
    let seen = log.finish().await;
    assert_never_below(&seen, v_n, "the client failing over from A to B");
    assert_eq!(*seen.last().unwrap(), next.version.0);

    // 4. A new client starting from that saved snapshot against C, which still lags: it keeps
    //    the saved version rather than wait for, or take, C's older state.
    let saved_v = saved_version(&saved);
    assert_eq!(saved_v, next.version.0);
    assert!(c.snapshot_version().await < saved_v, "C lags");
    let on_c = fast(&url_c, &c.token)
        .snapshot_file(&saved)
        .startup_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let log = VersionLog::start(&on_c);
    let status = on_c.status();
    assert_eq!(status.source, Source::SavedSnapshot, "{status:?}");
    assert_eq!(status.version, saved_v, "{status:?}");
    assert_eq!(decisions(&on_c, key, &keys), reference(&next, &keys));
    eventually(WAIT, "the client's watch on C", || async {
        on_c.status().server.as_deref() == Some(url_c.as_str())
    })
    .await;
    assert_eq!(on_c.version(), saved_v);
    // A change through C brings it up to date, and the client with it.
    let last = ramp(&c, &next, 9_000).await;
    wait_version(&on_c, last.version.0, "the change made through C").await;
    assert_eq!(on_c.status().source, Source::Server);
    assert_eq!(decisions(&on_c, key, &keys), reference(&last, &keys));
    on_c.shutdown().await;
    let seen = log.finish().await;
    assert_never_below(&seen, saved_v, "the client starting against C");
    b.stop().await;
    c.stop().await;
}
