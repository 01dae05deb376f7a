//! The client's migrator against the real server: for every stage at 100% it runs the sides
//! the stage table (README, "Concepts") says, in the order the migrator's docs say
//! (authoritative write first), returns the authoritative value and compares shadow reads on the
//! migration's sample; failures of the authoritative side fail the operation and stop it, failures
//! of the other side are counted and swallowed; and every count reaches the server exactly
//! (HTTP, gRPC and CLI traffic views, and the instances list).

use clap::Parser;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_client::{Client, ClientBuilder, Source, Stage};
use switchyard_domain::traffic::{Histogram, SideCounts, TrafficCounts};
use switchyard_proto::v1 as pb;
use switchyard_tests::{Db, TestServer, eventually};

/// How long anything asynchronous (a change reaching the client, a report reaching the server)
/// may take before a test fails.
const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// What ran, in order.
type Rec = Arc<Mutex<Vec<&'static str>>>;
type Op<T> = BoxFuture<'static, Result<T, String>>;

fn recorder() -> Rec {
    Arc::default()
}

/// Everything recorded since the last call.
fn ran(rec: &Rec) -> Vec<&'static str> {
    std::mem::take(&mut *rec.lock().unwrap())
}

/// Everything recorded since the last call, sorted (for concurrent reads).
fn ran_sorted(rec: &Rec) -> Vec<&'static str> {
    let mut sides = ran(rec);
    sides.sort_unstable();
    sides
}

/// One side's operation: records `name` when it runs and yields `result`.
fn side<T: Send + 'static>(
    rec: &Rec,
    name: &'static str,
    result: Result<T, &'static str>,
) -> impl FnOnce() -> Op<T> + use<T> {
    let rec = rec.clone();
    move || {
        Box::pin(async move {
            rec.lock().unwrap().push(name);
            result.map_err(str::to_owned)
        })
    }
}

/// One side's operation that records its start and its end around a yield to the scheduler, so
/// that concurrent runs interleave visibly and serial runs do not.
fn slow_side<T: Send + 'static>(
    rec: &Rec,
    start: &'static str,
    end: &'static str,
    value: T,
) -> impl FnOnce() -> Op<T> + use<T> {
    let rec = rec.clone();
    move || {
        Box::pin(async move {
            rec.lock().unwrap().push(start);
            tokio::task::yield_now().await;
            rec.lock().unwrap().push(end);
            Ok(value)
        })
    }
}

/// A migration on the server, driven through the HTTP API; tracks the version to expect.
struct Flow<'a> {
    srv: &'a TestServer,
    key: String,
    version: u64,
    stage: String,
    rollout_bp: u64,
    expand_applied: bool,
}

impl<'a> Flow<'a> {
    async fn create(srv: &'a TestServer, key: &str, shadow_sample_bp: u32) -> Flow<'a> {
        let (status, body) = srv
            .post(
                "/v1/migrations",
                json!({
                    "key": key, "entity_kind": "user_id", "shadow_sample_bp": shadow_sample_bp,
                    "reason": "client_migrator test setup",
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let mut flow = Flow {
            srv,
            key: key.to_owned(),
            version: 0,
            stage: String::new(),
            rollout_bp: 0,
            expand_applied: false,
        };
        flow.update(&body);
        assert_eq!(flow.shadow_sample(&body), u64::from(shadow_sample_bp));
        flow
    }

    fn shadow_sample(&self, m: &Value) -> u64 {
        m["shadow_sample_bp"].as_u64().expect("shadow_sample_bp")
    }

    fn update(&mut self, m: &Value) {
        self.version = m["version"].as_u64().expect("version");
        self.stage = m["stage"].as_str().expect("stage").to_owned();
        self.rollout_bp = m["rollout_bp"].as_u64().expect("rollout_bp");
        self.expand_applied = m["expand_applied"].as_bool().expect("expand_applied");
    }

    async fn mutate(&mut self, action: &str, mut body: Value) -> u64 {
        body["expected_version"] = json!(self.version);
        body["reason"] = json!("client_migrator test");
        let (status, m) = self
            .srv
            .post(
                &format!("/v1/migrations/{}/{action}", self.key),
                body.clone(),
            )
            .await;
        assert!(
            status.is_success(),
            "{} {action} {body}: {status} {m}",
            self.key
        );
        self.update(&m);
        self.version
    }

    async fn advance(&mut self) -> u64 {
        self.mutate("advance", json!({})).await
    }

    async fn ramp(&mut self, rollout_bp: u32) -> u64 {
        self.mutate("rollout", json!({ "rollout_bp": rollout_bp }))
            .await
    }

    /// Walks the front to `(stage, 100%)` (any stage before `complete`): expand recorded, each
    /// stage ramped to 100% and advanced. Returns the version of that state.
    async fn walk_to_full(&mut self, stage: Stage) -> u64 {
        assert!(
            stage.index() < Stage::Complete.index(),
            "complete needs rule 5: see the tests"
        );
        let index = |name: &str| Stage::parse(name).unwrap().index();
        while index(&self.stage) < stage.index() {
            if self.rollout_bp != 10_000 {
                self.ramp(10_000).await;
            }
            if self.stage == "off" && !self.expand_applied {
                self.mutate("events", json!({ "event": "expand_applied" }))
                    .await;
            }
            self.advance().await;
        }
        if self.rollout_bp != 10_000 {
            self.ramp(10_000).await;
        }
        assert_eq!(
            (self.stage.as_str(), self.rollout_bp),
            (stage.as_str(), 10_000)
        );
        self.version
    }
}

/// A client of `srv` (service `api`, a reader token) reporting every 100 ms.
async fn connect(
    srv: &TestServer,
    instance: &str,
    configure: impl FnOnce(ClientBuilder) -> ClientBuilder,
) -> Client {
    let token = srv.token_with_role(instance, "reader").await;
    let builder = Client::builder(format!("http://{}", srv.server.grpc_addr), token, "api")
        .instance_id(instance)
        .telemetry_interval(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(200));
    let client = configure(builder).connect().await.expect("connecting");
    assert_eq!(client.status().source, Source::Server);
    client
}

/// Waits until the client applied `version`.
async fn applied(client: &Client, version: u64) {
    tokio::time::timeout(WAIT, client.wait_for_version(version))
        .await
        .unwrap_or_else(|_| panic!("the client never applied version {version}"));
}

/// Waits until the client applied `version` and the server knows it (GET /v1/clients).
async fn acknowledged(srv: &TestServer, client: &Client, version: u64) {
    applied(client, version).await;
    let id = client.instance_id();
    eventually(WAIT, "the client's acknowledgement", || async {
        let (status, body) = srv.get("/v1/clients").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["instances"].as_array().is_some_and(|list| {
            list.iter()
                .any(|i| i["instance_id"] == id && i["applied_version"].as_u64() >= Some(version))
        })
    })
    .await;
}

/// GET /v1/migrations/{key}/traffic: the total.
async fn traffic(srv: &TestServer, key: &str) -> TrafficCounts {
    let (status, body) = srv.get(&format!("/v1/migrations/{key}/traffic")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["key"], key);
    let total: switchyard_proto::json::TrafficCounts =
        serde_json::from_value(body["total"].clone()).expect("traffic total");
    total.into()
}

/// The counts without their latency histograms (which the test cannot predict).
fn without_latency(mut c: TrafficCounts) -> TrafficCounts {
    c.old.latency = Histogram::default();
    c.new.latency = Histogram::default();
    c
}

/// Waits until the server's traffic total for `key` equals `expected` (latencies aside: each
/// side's histogram must hold exactly one sample per operation). Counts only grow, so equality
/// once means every report has arrived. Returns the total.
async fn traffic_reaches(srv: &TestServer, key: &str, expected: TrafficCounts) -> TrafficCounts {
    let last = Mutex::new(None::<TrafficCounts>);
    let what = format!("the traffic of {key} to reach {expected:?}");
    eventually(WAIT, &what, || async {
        let got = traffic(srv, key).await;
        let mut last = last.lock().unwrap();
        if *last != Some(got) {
            // Shown (captured) if the wait times out.
            eprintln!("traffic of {key} now: {:?}", without_latency(got));
            *last = Some(got);
        }
        without_latency(got) == expected
    })
    .await;
    let got = last.into_inner().unwrap().expect("observed");
    assert_eq!(got.old.latency.count(), got.old.operations(), "{got:?}");
    assert_eq!(got.new.latency.count(), got.new.operations(), "{got:?}");
    got
}

/// Expected counts, built up as operations run.
#[derive(Default)]
struct Expect(TrafficCounts);

impl Expect {
    fn side(&mut self, name: &str) -> &mut SideCounts {
        match name {
            "old" => &mut self.0.old,
            "new" => &mut self.0.new,
            other => panic!("no side {other}"),
        }
    }

    fn read(&mut self, name: &str, ok: bool) {
        let s = self.side(name);
        s.reads += 1;
        s.errors += u64::from(!ok);
    }

    fn write(&mut self, name: &str, ok: bool) {
        let s = self.side(name);
        s.writes += 1;
        s.errors += u64::from(!ok);
    }

    fn comparison(&mut self, matched: bool) {
        self.0.comparisons += 1;
        self.0.mismatches += u64::from(!matched);
    }
}

fn from_wire(m: &pb::TrafficMinute) -> TrafficCounts {
    TrafficCounts {
        old: m.old.as_ref().map(SideCounts::from).unwrap_or_default(),
        new: m.new.as_ref().map(SideCounts::from).unwrap_or_default(),
        comparisons: m.comparisons,
        mismatches: m.mismatches,
        evaluations_without_entity: m.evaluations_without_entity,
        fallback_evaluations: m.fallback_evaluations,
    }
}

// ---------------------------------------------------------------------------------------------
// The stage table
// ---------------------------------------------------------------------------------------------

/// One row of the README's stage table, as the migrator must run it.
struct Row {
    stage: Stage,
    /// The writes, in the order they must run (authoritative first).
    writes: &'static [&'static str],
    /// The side whose write result is returned.
    write_returns: &'static str,
    /// The sides read (sorted).
    reads: &'static [&'static str],
    /// The side whose read value is returned.
    read_returns: &'static str,
    compares: bool,
}

const TABLE: [Row; 6] = [
    Row {
        stage: Stage::Off,
        writes: &["old"],
        write_returns: "old",
        reads: &["old"],
        read_returns: "old",
        compares: false,
    },
    Row {
        stage: Stage::DualWrite,
        writes: &["old", "new"],
        write_returns: "old",
        reads: &["old"],
        read_returns: "old",
        compares: false,
    },
    Row {
        stage: Stage::Shadow,
        writes: &["old", "new"],
        write_returns: "old",
        reads: &["new", "old"],
        read_returns: "old",
        compares: true,
    },
    Row {
        stage: Stage::Live,
        writes: &["new", "old"],
        write_returns: "new",
        reads: &["new", "old"],
        read_returns: "new",
        compares: true,
    },
    Row {
        stage: Stage::Rampdown,
        writes: &["new", "old"],
        write_returns: "new",
        reads: &["new"],
        read_returns: "new",
        compares: false,
    },
    Row {
        stage: Stage::Complete,
        writes: &["new"],
        write_returns: "new",
        reads: &["new"],
        read_returns: "new",
        compares: false,
    },
];

fn value(side: &str, what: &str) -> String {
    format!("{side}-{what}")
}

switchyard_tests::both_databases!(every_stage_runs_the_sides_of_its_row);

/// Walks one migration (shadow sample 100%) through every stage at 100%, the client following;
/// at each stage one write and one read with distinct old and new values.
async fn every_stage_runs_the_sides_of_its_row(db: Db) {
    const KEY: &str = "stages.users-handle";
    let srv = TestServer::start(db).await;
    let mut flow = Flow::create(&srv, KEY, 10_000).await;
    let client = connect(&srv, "api-stages", |b| b).await;
    let migrator = client.migrator(KEY);
    let rec = recorder();
    let mut expect = Expect::default();

    for row in &TABLE {
        let version = if row.stage == Stage::Complete {
            // (complete, 0%) stops no old writes; ramping it up needs rule 5: every live client
            // (this one) acknowledged (rampdown, 100%), which the previous round waited for.
            flow.advance().await;
            flow.ramp(10_000).await
        } else {
            flow.walk_to_full(row.stage).await
        };
        acknowledged(&srv, &client, version).await;
        let stage = row.stage;
        assert_eq!(client.stage(KEY, "user-1"), stage);
        assert_eq!(migrator.handle().stage_for_id(7), stage);
        assert_eq!(client.stage_without_entity(KEY), stage, "(S, 100%) is S");
        expect.0.evaluations_without_entity += 1;
        assert_eq!(client.plan(KEY, "user-1"), stage.plan());

        // Write: the row's sides, authoritative first; its result is returned.
        let written = migrator
            .write(
                "user-1",
                side(&rec, "old", Ok(value("old", "write"))),
                side(&rec, "new", Ok(value("new", "write"))),
            )
            .await;
        assert_eq!(written, Ok(value(row.write_returns, "write")), "{stage}");
        assert_eq!(ran(&rec), row.writes, "{stage}: writes and their order");
        for s in row.writes {
            expect.write(s, true);
        }

        // Read: the row's sides (concurrently where both), the authoritative value returned,
        // compared (sample 100%) where the row says so; old and new differ: a mismatch.
        let read = migrator
            .read(
                "user-1",
                side(&rec, "old", Ok(value("old", "read"))),
                side(&rec, "new", Ok(value("new", "read"))),
            )
            .await;
        assert_eq!(read, Ok(value(row.read_returns, "read")), "{stage}");
        assert_eq!(ran_sorted(&rec), row.reads, "{stage}: sides read");
        for s in row.reads {
            expect.read(s, true);
        }
        if row.compares {
            expect.comparison(false);
        }

        // read_with: the same, with a comparison that accepts the pair.
        let compared = Mutex::new(Vec::new());
        let read = migrator
            .read_with(
                "user-2",
                side(&rec, "old", Ok(value("old", "read"))),
                side(&rec, "new", Ok(value("new", "read"))),
                |old: &String, new: &String| {
                    compared.lock().unwrap().push((old.clone(), new.clone()));
                    true
                },
            )
            .await;
        assert_eq!(read, Ok(value(row.read_returns, "read")), "{stage}");
        assert_eq!(ran_sorted(&rec), row.reads, "{stage}: sides read");
        for s in row.reads {
            expect.read(s, true);
        }
        let compared = compared.into_inner().unwrap();
        if row.compares {
            expect.comparison(true);
            assert_eq!(
                compared,
                [(value("old", "read"), value("new", "read"))],
                "{stage}: the comparison gets (old, new)"
            );
        } else {
            assert!(compared.is_empty(), "{stage}: no comparison");
        }

        // Everything so far, on the server.
        traffic_reaches(&srv, KEY, expect.0).await;
    }
    client.shutdown().await;
    assert_eq!(without_latency(traffic(&srv, KEY).await), expect.0);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Failures, comparisons and ordering
// ---------------------------------------------------------------------------------------------

/// At each dual-write stage, a failing authoritative write fails the operation and the other
/// side does not run; a failing other write is counted and the authoritative value returned.
/// At the single-side stages the one write's failure is the operation's. Reads: a failing
/// non-authoritative read is counted and the authoritative value returned (nothing compared); a
/// failing authoritative read fails the operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_of_each_side() {
    let srv = TestServer::start(Db::Sqlite).await;
    let stages = [
        Stage::Off,
        Stage::DualWrite,
        Stage::Shadow,
        Stage::Live,
        Stage::Rampdown,
    ];
    let mut newest = 0;
    for stage in stages {
        let mut flow = Flow::create(&srv, &format!("fail.{stage}"), 10_000).await;
        newest = newest.max(flow.walk_to_full(stage).await);
    }
    let client = connect(&srv, "api-failures", |b| b).await;
    applied(&client, newest).await;
    let rec = recorder();

    for stage in stages {
        let key = format!("fail.{stage}");
        let migrator = client.migrator(&key);
        assert_eq!(migrator.handle().stage("user-1"), stage);
        let plan = stage.plan();
        let (auth, other) = match plan.authoritative_write {
            switchyard_client::Side::Old => ("old", "new"),
            _ => ("new", "old"),
        };
        let dual = plan.write == switchyard_client::Side::Both;
        let mut expect = Expect::default();
        let fails = |name: &'static str, failing: &str, what: &str| {
            if name == failing {
                Err(if name == "old" {
                    "old failed"
                } else {
                    "new failed"
                })
            } else {
                Ok(value(name, what))
            }
        };

        // The authoritative write fails: its error, and the other side never runs.
        let written = migrator
            .write(
                "user-1",
                side(&rec, "old", fails("old", auth, "write")),
                side(&rec, "new", fails("new", auth, "write")),
            )
            .await;
        assert_eq!(written, Err(format!("{auth} failed")), "{stage}");
        assert_eq!(
            ran(&rec),
            [auth],
            "{stage}: only the authoritative side ran"
        );
        expect.write(auth, false);

        if dual {
            // The other write fails: the authoritative result, the failure counted.
            let written = migrator
                .write(
                    "user-1",
                    side(&rec, "old", fails("old", other, "write")),
                    side(&rec, "new", fails("new", other, "write")),
                )
                .await;
            assert_eq!(written, Ok(value(auth, "write")), "{stage}");
            assert_eq!(ran(&rec), [auth, other], "{stage}");
            expect.write(auth, true);
            expect.write(other, false);
        }

        if plan.read == switchyard_client::Side::Both {
            let (ret, non) = match plan.return_value {
                switchyard_client::Side::Old => ("old", "new"),
                _ => ("new", "old"),
            };
            // The non-authoritative read fails: the authoritative value, the error counted,
            // nothing compared.
            let read = migrator
                .read(
                    "user-1",
                    side(&rec, "old", fails("old", non, "read")),
                    side(&rec, "new", fails("new", non, "read")),
                )
                .await;
            assert_eq!(read, Ok(value(ret, "read")), "{stage}");
            assert_eq!(ran_sorted(&rec), ["new", "old"], "{stage}");
            expect.read(ret, true);
            expect.read(non, false);

            // The authoritative read fails: its error (both ran).
            let read = migrator
                .read(
                    "user-1",
                    side(&rec, "old", fails("old", ret, "read")),
                    side(&rec, "new", fails("new", ret, "read")),
                )
                .await;
            assert_eq!(read, Err(format!("{ret} failed")), "{stage}");
            assert_eq!(ran_sorted(&rec), ["new", "old"], "{stage}");
            expect.read(ret, false);
            expect.read(non, true);

            // Equal values: a comparison, no mismatch; different ones: a mismatch.
            let same: Result<u32, String> = migrator
                .read("user-1", || async { Ok(7) }, || async { Ok(7) })
                .await;
            assert_eq!(same, Ok(7));
            expect.read("old", true);
            expect.read("new", true);
            expect.comparison(true);
            let differ: Result<u32, String> = migrator
                .read("user-1", || async { Ok(1) }, || async { Ok(2) })
                .await;
            assert_eq!(differ, Ok(if ret == "old" { 1 } else { 2 }), "{stage}");
            expect.read("old", true);
            expect.read("new", true);
            expect.comparison(false);

            // A caller's comparison decides: case-insensitive names match, and a comparison
            // that rejects equal values reports a mismatch.
            let read: Result<String, String> = migrator
                .read_with(
                    "user-1",
                    || async { Ok("Alice".to_owned()) },
                    || async { Ok("alice".to_owned()) },
                    |old, new| old.eq_ignore_ascii_case(new),
                )
                .await;
            assert_eq!(
                read.as_deref(),
                Ok(if ret == "old" { "Alice" } else { "alice" })
            );
            expect.read("old", true);
            expect.read("new", true);
            expect.comparison(true);
            let read: Result<u32, String> = migrator
                .read_with(
                    "user-1",
                    || async { Ok(3) },
                    || async { Ok(3) },
                    |_, _| false,
                )
                .await;
            assert_eq!(read, Ok(3));
            expect.read("old", true);
            expect.read("new", true);
            expect.comparison(false);
        } else {
            // One side read: its failure is the operation's.
            let read = migrator
                .read(
                    "user-1",
                    side(&rec, "old", fails("old", auth, "read")),
                    side(&rec, "new", fails("new", auth, "read")),
                )
                .await;
            assert_eq!(read, Err(format!("{auth} failed")), "{stage}");
            assert_eq!(ran(&rec), [auth], "{stage}");
            expect.read(auth, false);
        }

        traffic_reaches(&srv, &key, expect.0).await;
    }
    client.shutdown().await;
    srv.stop().await;
}

/// `serial_reads(true)` reads one side after the other, authoritative first; by default the two
/// reads of `shadow` and `live` run concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_reads_run_the_authoritative_side_first() {
    let srv = TestServer::start(Db::Sqlite).await;
    let mut shadow = Flow::create(&srv, "serial.shadow", 10_000).await;
    shadow.walk_to_full(Stage::Shadow).await;
    let mut live = Flow::create(&srv, "serial.live", 10_000).await;
    let newest = live.walk_to_full(Stage::Live).await;
    let client = connect(&srv, "api-serial", |b| b).await;
    applied(&client, newest).await;
    let rec = recorder();

    for (key, expected_serial, returned) in [
        (
            "serial.shadow",
            ["old:start", "old:end", "new:start", "new:end"],
            "old",
        ),
        (
            "serial.live",
            ["new:start", "new:end", "old:start", "old:end"],
            "new",
        ),
    ] {
        let serial = client.migrator(key).serial_reads(true);
        let read = serial
            .read(
                "user-1",
                slow_side(&rec, "old:start", "old:end", "old"),
                slow_side(&rec, "new:start", "new:end", "new"),
            )
            .await;
        assert_eq!(read, Ok(returned), "{key}");
        assert_eq!(
            ran(&rec),
            expected_serial,
            "{key}: serial, authoritative first"
        );

        let concurrent = client.migrator(key);
        let read = concurrent
            .read(
                "user-1",
                slow_side(&rec, "old:start", "old:end", "old"),
                slow_side(&rec, "new:start", "new:end", "new"),
            )
            .await;
        assert_eq!(read, Ok(returned), "{key}");
        let order = ran(&rec);
        let at = |e: &str| order.iter().position(|x| *x == e).unwrap();
        assert_eq!(order.len(), 4, "{order:?}");
        assert!(
            at("old:start") < at("new:end") && at("new:start") < at("old:end"),
            "{key}: the default reads overlap: {order:?}"
        );

        // Both were counted and compared (sample 100%), serial or not.
        let mut expect = Expect::default();
        for _ in 0..2 {
            expect.read("old", true);
            expect.read("new", true);
            expect.comparison(false);
        }
        traffic_reaches(&srv, key, expect.0).await;
    }
    client.shutdown().await;
    srv.stop().await;
}

/// Shadow comparisons follow the migration's sample: 100% compares every read, 2% about one in
/// fifty, 0% none; every read still runs both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_comparisons_follow_the_sample() {
    const READS: u64 = 1_000;
    let srv = TestServer::start(Db::Sqlite).await;
    let mut newest = 0;
    for (key, sample) in [
        ("sample.all", 10_000),
        ("sample.two-percent", 200),
        ("sample.none", 0),
    ] {
        let mut flow = Flow::create(&srv, key, sample).await;
        newest = newest.max(flow.walk_to_full(Stage::Shadow).await);
    }
    let client = connect(&srv, "api-sample", |b| b).await;
    applied(&client, newest).await;
    for key in ["sample.all", "sample.two-percent", "sample.none"] {
        let migrator = client.migrator(key);
        for i in 0..READS {
            let entity = format!("user-{i}");
            let read: Result<u64, String> = migrator
                .read(&entity, || async { Ok(i) }, || async { Ok(i + 1) })
                .await;
            assert_eq!(read, Ok(i));
        }
    }
    // Every report, up to the last one sent at shutdown.
    client.shutdown().await;
    let mut comparisons = Vec::new();
    for key in ["sample.all", "sample.two-percent", "sample.none"] {
        let t = traffic(&srv, key).await;
        assert_eq!((t.old.reads, t.new.reads), (READS, READS), "{key}: {t:?}");
        assert_eq!(
            t.comparisons, t.mismatches,
            "{key}: every pair differs: {t:?}"
        );
        comparisons.push(t.comparisons);
    }
    assert_eq!(comparisons[0], READS, "sample 100%: {comparisons:?}");
    // Binomial(1000, 0.02): mean 20; 0 or 100+ are beyond any plausible draw.
    assert!(
        (1..100).contains(&comparisons[1]),
        "sample 2%: {comparisons:?}"
    );
    assert_eq!(comparisons[2], 0, "sample 0%: {comparisons:?}");
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Counts on the server
// ---------------------------------------------------------------------------------------------

switchyard_tests::both_databases!(counts_reach_every_traffic_view_exactly);

/// A known mix of operations at (live, 100%) and evaluations without entity; a migration the
/// client evaluates at its fallback stage before the server has it; then the HTTP, gRPC and CLI
/// traffic views and the instances list.
async fn counts_reach_every_traffic_view_exactly(db: Db) {
    const KEY: &str = "counts.users-handle";
    const LATE: &str = "counts.created-later";
    let srv = TestServer::start(db).await;
    let mut flow = Flow::create(&srv, KEY, 10_000).await;
    let live = flow.walk_to_full(Stage::Live).await;
    let client = connect(&srv, "api-1", |b| b.fallback(LATE, Stage::DualWrite)).await;
    applied(&client, live).await;
    let migrator = client.migrator(KEY);
    let mut expect = Expect::default();
    let ok = |v: &'static str| move || async move { Ok::<_, String>(v) };
    let err = || || async { Err::<&'static str, _>("down".to_owned()) };

    for _ in 0..10 {
        assert_eq!(migrator.write("u", ok("o"), ok("n")).await, Ok("n"));
        expect.write("new", true);
        expect.write("old", true);
    }
    for _ in 0..3 {
        assert!(migrator.write("u", ok("o"), err()).await.is_err());
        expect.write("new", false);
    }
    for _ in 0..4 {
        assert_eq!(migrator.write("u", err(), ok("n")).await, Ok("n"));
        expect.write("new", true);
        expect.write("old", false);
    }
    for _ in 0..20 {
        assert_eq!(migrator.read("u", ok("x"), ok("x")).await, Ok("x"));
        expect.read("old", true);
        expect.read("new", true);
        expect.comparison(true);
    }
    for _ in 0..5 {
        assert_eq!(migrator.read("u", ok("o"), ok("n")).await, Ok("n"));
        expect.read("old", true);
        expect.read("new", true);
        expect.comparison(false);
    }
    for _ in 0..2 {
        assert_eq!(migrator.read("u", err(), ok("n")).await, Ok("n"));
        expect.read("old", false);
        expect.read("new", true);
    }
    assert!(migrator.read("u", ok("o"), err()).await.is_err());
    expect.read("old", true);
    expect.read("new", false);
    for _ in 0..6 {
        let same = migrator
            .read_with("u", ok("Alice"), ok("alice"), |o, n| {
                o.eq_ignore_ascii_case(n)
            })
            .await;
        assert_eq!(same, Ok("alice"));
        expect.read("old", true);
        expect.read("new", true);
        expect.comparison(true);
    }
    for _ in 0..7 {
        assert_eq!(client.stage_without_entity(KEY), Stage::Live);
    }
    for _ in 0..3 {
        assert_eq!(migrator.handle().stage_without_entity(), Stage::Live);
    }
    expect.0.evaluations_without_entity += 10;

    // A migration the server does not have yet: the client evaluates it at its fallback stage,
    // and counts those evaluations (the migrator's included).
    let mut late_expect = Expect::default();
    for i in 0..9 {
        assert_eq!(client.stage(LATE, format!("user-{i}")), Stage::DualWrite);
    }
    let late = client.migrator(LATE);
    for _ in 0..2 {
        assert_eq!(late.write("u", ok("o"), ok("n")).await, Ok("o"));
        late_expect.write("old", true);
        late_expect.write("new", true);
    }
    late_expect.0.fallback_evaluations = 11;
    let (status, _) = srv.get(&format!("/v1/migrations/{LATE}/traffic")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no traffic view before it exists"
    );
    // Created now: the client applies it and stops counting fallback evaluations.
    let created = Flow::create(&srv, LATE, 10_000).await.version;
    applied(&client, created).await;
    assert_eq!(client.stage(LATE, "user-1"), Stage::Off);
    assert_eq!(late.handle().version(), created);

    let total = traffic_reaches(&srv, KEY, expect.0).await;
    traffic_reaches(&srv, LATE, late_expect.0).await;

    // gRPC: the same totals, histograms included.
    let answer = srv
        .grpc
        .clone()
        .traffic(srv.req(pb::TrafficRequest {
            key: KEY.to_owned(),
            minutes: 0,
        }))
        .await
        .expect("Traffic rpc")
        .into_inner();
    assert_eq!(answer.key, KEY);
    assert_eq!(from_wire(answer.total.as_ref().expect("total")), total);
    let summed = answer
        .minutes
        .iter()
        .fold(TrafficCounts::default(), |mut sum, m| {
            sum.add(&from_wire(m));
            sum
        });
    assert_eq!(summed, total, "the minutes add up to the total");

    // The CLI: `switchyard traffic KEY --json` succeeds; an unknown migration is a usage error.
    let cli = |key: &str| {
        switchyard_server::cli::Cli::try_parse_from([
            "switchyard",
            "--server",
            &srv.base,
            "--token",
            &srv.token,
            "traffic",
            key,
            "--json",
        ])
        .expect("CLI arguments")
    };
    let c = cli(KEY);
    assert_eq!(switchyard_server::cli::run(c.remote, c.command).await, 0);
    let c = cli("counts.nobody-made-this");
    assert_eq!(switchyard_server::cli::run(c.remote, c.command).await, 2);

    // The instances of the migration: this client, at the version it applied.
    let version = client.version();
    assert!(version >= created);
    eventually(WAIT, "the instance list", || async {
        let (status, body) = srv.get(&format!("/v1/migrations/{KEY}/instances")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let list = body["instances"].as_array().cloned().unwrap_or_default();
        list.len() == 1
            && list[0]["service"] == "api"
            && list[0]["instance_id"] == "api-1"
            && list[0]["applied_version"].as_u64() == Some(version)
            && list[0]["live"] == true
    })
    .await;

    // Nothing more arrives: the totals were exact.
    client.shutdown().await;
    assert_eq!(traffic(&srv, KEY).await, total);
    srv.stop().await;
}

/// One migrator shared by reference across 8 threads × 200 operations: every operation is
/// counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_migrator_counts_exactly() {
    const KEY: &str = "shared.users-handle";
    const THREADS: u64 = 8;
    const OPS: u64 = 200;
    let srv = TestServer::start(Db::Sqlite).await;
    let mut flow = Flow::create(&srv, KEY, 10_000).await;
    let live = flow.walk_to_full(Stage::Live).await;
    let client = connect(&srv, "api-shared", |b| b).await;
    applied(&client, live).await;
    let migrator = client.migrator(KEY);

    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let migrator = &migrator;
            scope.spawn(move || {
                futures::executor::block_on(async move {
                    for i in 0..OPS {
                        let entity = format!("user-{t}-{i}");
                        match i % 4 {
                            0 => {
                                let w: Result<u64, String> = migrator
                                    .write(&entity, || async { Ok(1) }, || async { Ok(2) })
                                    .await;
                                assert_eq!(w, Ok(2));
                            }
                            1 => {
                                let w: Result<u64, String> = migrator
                                    .write(
                                        &entity,
                                        || async { Err("old down".to_owned()) },
                                        || async { Ok(2) },
                                    )
                                    .await;
                                assert_eq!(w, Ok(2));
                            }
                            2 => {
                                let r: Result<u64, String> = migrator
                                    .read(&entity, || async { Ok(i) }, || async { Ok(i) })
                                    .await;
                                assert_eq!(r, Ok(i));
                            }
                            _ => {
                                let r: Result<u64, String> = migrator
                                    .read(&entity, || async { Ok(i) }, || async { Ok(i + 1) })
                                    .await;
                                assert_eq!(r, Ok(i + 1));
                            }
                        }
                        if i % 10 == 0 {
                            assert_eq!(migrator.handle().stage_without_entity(), Stage::Live);
                        }
                    }
                });
            });
        }
    });

    let quarter = THREADS * OPS / 4;
    let mut expect = TrafficCounts::default();
    expect.old.writes = 2 * quarter;
    expect.new.writes = 2 * quarter;
    expect.old.errors = quarter;
    expect.old.reads = 2 * quarter;
    expect.new.reads = 2 * quarter;
    expect.comparisons = 2 * quarter;
    expect.mismatches = quarter;
    expect.evaluations_without_entity = THREADS * OPS / 10;
    let total = traffic_reaches(&srv, KEY, expect).await;
    client.shutdown().await;
    assert_eq!(traffic(&srv, KEY).await, total, "nothing counted twice");
    srv.stop().await;
}
