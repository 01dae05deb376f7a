//! The client's backfill runner against the real server, over an in-memory "table" the batch
//! function walks in key order (keyset `UPDATE … SET new = f(old) WHERE key > cursor`): it
//! completes and records it (so rule 4 lets the migration into shadow), resumes a crashed run
//! from the server's checkpoint, waits while paused, stops when cancelled, is refused by rule 3
//! and for a token without the backfill (or operator) role, runs with a `backfill` token that
//! may do nothing else, and honours its rate limit. Two tests pin down
//! defects found here: a cancel recorded during a batch ends the run with a refusal instead of
//! `Cancelled`, and a runner started right after `connect` can be refused by rule 3 on account
//! of its own client's first heartbeat (applied version 0).

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_client::{BackfillError, BackfillOutcome, Batch, Client, Source};
use switchyard_tests::{Db, TestServer, both_databases, eventually};
use tokio::sync::watch;

const KEY: &str = "users.backfilled";

/// How long anything asynchronous (a change reaching the client, a run finishing) may take
/// before a test fails.
const WAIT: Duration = Duration::from_secs(20);

/// Rows in the table.
const ROWS: u64 = 2_000;

// ---------------------------------------------------------------------------------------------
// The application's table and batch function
// ---------------------------------------------------------------------------------------------

/// The new column's value for an old one (idempotent: it depends on `old` only).
fn f(old: &str) -> String {
    format!("handle:{}", old.to_uppercase())
}

/// A row: the old column and the new one (`None` until backfilled).
type Row = (String, Option<String>);

/// `key -> (old, new)`, plus a record of what every batch did.
#[derive(Clone, Default)]
struct Table {
    rows: Arc<Mutex<BTreeMap<u64, Row>>>,
    /// How many times each key was processed.
    touched: Arc<Mutex<BTreeMap<u64, u32>>>,
    /// The cursor each batch was called with, in order.
    starts: Arc<Mutex<Vec<Option<String>>>>,
}

impl Table {
    /// Keys 1..=n, none backfilled.
    fn new(n: u64) -> Table {
        let table = Table::default();
        table
            .rows
            .lock()
            .unwrap()
            .extend((1..=n).map(|k| (k, (format!("user-{k}"), None))));
        table
    }

    /// One batch: up to `limit` rows after `cursor`, in key order, processing only the first
    /// `process` of them (fewer than all: a batch that dies half-way).
    fn run_batch(&self, cursor: Option<String>, limit: u64, process: Option<usize>) -> Batch {
        self.starts.lock().unwrap().push(cursor.clone());
        let after = cursor.map(|c| {
            c.parse::<u64>()
                .expect("the cursor is a key the batch gave")
        });
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut rows = self.rows.lock().unwrap();
        let keys: Vec<u64> = rows
            .range((lower, Bound::Unbounded))
            .map(|(k, _)| *k)
            .take(usize::try_from(limit).unwrap())
            .collect();
        let mut touched = self.touched.lock().unwrap();
        for k in keys.iter().take(process.unwrap_or(usize::MAX)) {
            let row = rows.get_mut(k).unwrap();
            row.1 = Some(f(&row.0));
            *touched.entry(*k).or_default() += 1;
        }
        Batch::keyset(keys.len() as u64, keys.last().map(u64::to_string), limit)
    }

    /// Batches called so far.
    fn batches(&self) -> usize {
        self.starts.lock().unwrap().len()
    }

    fn starts(&self) -> Vec<Option<String>> {
        self.starts.lock().unwrap().clone()
    }

    fn touched(&self, key: u64) -> u32 {
        self.touched.lock().unwrap().get(&key).copied().unwrap_or(0)
    }

    /// Every row holds `f(old)`.
    fn assert_all_backfilled(&self) {
        let rows = self.rows.lock().unwrap();
        assert!(!rows.is_empty());
        for (k, (old, new)) in rows.iter() {
            assert_eq!(new.as_deref(), Some(f(old).as_str()), "row {k}");
        }
    }

    /// Every row was processed exactly once.
    fn assert_each_processed_once(&self) {
        for k in 1..=ROWS {
            assert_eq!(self.touched(k), 1, "row {k}");
        }
    }
}

/// The batch function of a table with nothing unusual happening.
fn plain(
    table: &Table,
) -> impl FnMut(Option<String>, u64) -> std::future::Ready<Result<Batch, String>> + use<> {
    let table = table.clone();
    move |cursor, limit| std::future::ready(Ok(table.run_batch(cursor, limit, None)))
}

/// A batch function whose `nth` batch records `events` on the server, then (with a client)
/// returns once that client has seen the last of them, and tells `recorded` its version.
fn recording_at<'a>(
    table: &Table,
    nth: usize,
    events: &'static [&'static str],
    srv: &'a TestServer,
    seen_by: Option<&'a Client>,
    recorded: watch::Sender<u64>,
) -> impl FnMut(Option<String>, u64) -> BoxFuture<'a, Result<Batch, String>> + 'a {
    let (table, recorded) = (table.clone(), Arc::new(recorded));
    move |cursor: Option<String>, limit: u64| {
        let (table, recorded) = (table.clone(), recorded.clone());
        async move {
            let batch = table.run_batch(cursor, limit, None);
            if table.batches() == nth {
                let mut version = 0;
                for e in events {
                    version = event(srv, e).await;
                }
                if let Some(client) = seen_by {
                    wait_for(client, version).await;
                }
                recorded.send_replace(version);
            }
            Ok(batch)
        }
        .boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// Server helpers
// ---------------------------------------------------------------------------------------------

/// Records `event` at the migration's current version; returns the new version.
async fn event(srv: &TestServer, event: &str) -> u64 {
    let version = srv.version_of(KEY).await;
    let (status, body) = srv
        .post(
            &format!("/v1/migrations/{KEY}/events"),
            json!({ "event": event, "expected_version": version, "reason": "test" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{event}: {body}");
    body["version"].as_u64().unwrap()
}

async fn progress(srv: &TestServer) -> Value {
    let (status, body) = srv.get(&format!("/v1/migrations/{KEY}/backfill")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Ramps the migration to shadow 100%: (status, body).
async fn to_shadow(srv: &TestServer) -> (StatusCode, Value) {
    let version = srv.version_of(KEY).await;
    srv.post(
        &format!("/v1/migrations/{KEY}/rollout"),
        json!({ "stage": "shadow", "rollout_bp": 10_000, "expected_version": version,
                "reason": "test" }),
    )
    .await
}

/// A client of `service` with `token`, following the server.
async fn connect_fresh(srv: &TestServer, token: &str, service: &str) -> Client {
    let client = Client::builder(format!("http://{}", srv.server.grpc_addr), token, service)
        .connect()
        .await
        .unwrap();
    assert_eq!(client.status().source, Source::Server);
    client
}

/// A client as [`connect_fresh`], once the server has its acknowledgement of the version it
/// applied, so what a test asserts about the fleet does not depend on when the client's first
/// heartbeat lands (a runner started at once is covered by
/// `a_runner_started_right_after_connect_is_not_refused_by_its_own_client`).
async fn connect(srv: &TestServer, token: &str, service: &str) -> Client {
    let client = connect_fresh(srv, token, service).await;
    let (id, version) = (client.instance_id().to_owned(), client.version());
    eventually(WAIT, "the client's acknowledgement", || async {
        let (status, body) = srv.get("/v1/clients").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["instances"].as_array().unwrap().iter().any(|i| {
            i["instance_id"] == id.as_str() && i["applied_version"].as_u64() >= Some(version)
        })
    })
    .await;
    client
}

async fn wait_for(client: &Client, version: u64) {
    tokio::time::timeout(WAIT, client.wait_for_version(version))
        .await
        .unwrap_or_else(|_| panic!("the client never applied version {version}"));
}

/// The actions recorded in the migration's audit log, oldest first.
async fn audit_actions(srv: &TestServer) -> Vec<String> {
    let (status, body) = srv.get(&format!("/v1/migrations/{KEY}/audit")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut actions: Vec<String> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    actions.reverse();
    actions
}

fn assert_not_started(p: &Value) {
    assert_eq!(
        (
            p["status"].as_str(),
            p["cursor"].as_str(),
            p["rows_done"].as_u64()
        ),
        (Some("not_started"), Some(""), Some(0)),
        "{p}"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. A run completes, and the migration may enter shadow
// ---------------------------------------------------------------------------------------------

async fn a_run_backfills_every_row_and_unlocks_shadow(db: Db) {
    let srv = TestServer::start(db).await;
    srv.ready_for_backfill(KEY).await;
    let (status, body) = to_shadow(&srv).await;
    assert_eq!(
        (status, body["rule"].as_u64()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(4)),
        "shadow waits for the backfill: {body}"
    );

    // The least a runner needs: the backfill role.
    let runner_token = srv.token_with_role("backfill-runner", "backfill").await;
    let client = connect(&srv, &runner_token, "billing-worker").await;
    let table = Table::new(ROWS);
    let runner = client.backfill(KEY).batch_size(150).total_estimate(ROWS);
    let outcome = tokio::time::timeout(WAIT, runner.run(plain(&table)))
        .await
        .expect("the run finishes");
    assert_eq!(outcome.unwrap(), BackfillOutcome::Completed { rows: ROWS });

    table.assert_all_backfilled();
    table.assert_each_processed_once();
    // 13 full batches of 150 and a short one of 50, each after the last key of the one before.
    let starts = table.starts();
    assert_eq!(starts.len(), 14);
    assert_eq!(starts[0], None);
    for (i, start) in starts.iter().enumerate().skip(1) {
        assert_eq!(start.as_deref(), Some((150 * i).to_string().as_str()));
    }

    let p = progress(&srv).await;
    assert_eq!(
        (
            p["status"].as_str(),
            p["rows_done"].as_u64(),
            p["rows_total_estimate"].as_u64(),
            p["cursor"].as_str(),
            p["paused"].as_bool(),
        ),
        (
            Some("complete"),
            Some(ROWS),
            Some(ROWS),
            Some("2000"),
            Some(false)
        ),
        "{p}"
    );
    assert!(
        p["runner"]
            .as_str()
            .unwrap()
            .starts_with(&format!("billing-worker/{}", client.instance_id())),
        "{p}"
    );
    assert_eq!(srv.migration(KEY).await["backfill"]["status"], "complete");
    let actions = audit_actions(&srv).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| a.starts_with("backfill"))
            .collect::<Vec<_>>(),
        ["backfill_started", "backfill_complete"]
    );

    // A finished backfill is not run again.
    let again = client
        .backfill(KEY)
        .batch_size(150)
        .run(plain(&table))
        .await;
    assert_eq!(again.unwrap(), BackfillOutcome::Completed { rows: ROWS });
    assert_eq!(table.batches(), 14);

    // Rule 4 now lets the migration into shadow.
    let (status, body) = to_shadow(&srv).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["stage"].as_str(), body["rollout_bp"].as_u64()),
        (Some("shadow"), Some(10_000))
    );
    client.shutdown().await;
    srv.stop().await;
}

both_databases!(a_run_backfills_every_row_and_unlocks_shadow);

// ---------------------------------------------------------------------------------------------
// 2. A crashed run resumes at the checkpoint
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_run_resumes_from_the_checkpoint() {
    let srv = TestServer::start(Db::Sqlite).await;
    srv.ready_for_backfill(KEY).await;
    let table = Table::new(ROWS);

    // The 5th batch dies half-way through its rows.
    let first = connect(&srv, &srv.token, "billing-worker").await;
    let crashing = {
        let table = table.clone();
        move |cursor: Option<String>, limit: u64| {
            let fail = table.batches() == 4;
            let batch = table.run_batch(cursor, limit, fail.then_some(50));
            std::future::ready(if fail {
                Err("connection reset by peer".to_owned())
            } else {
                Ok(batch)
            })
        }
    };
    let outcome = tokio::time::timeout(
        WAIT,
        first
            .backfill(KEY)
            .batch_size(100)
            .total_estimate(ROWS)
            .run(crashing),
    )
    .await
    .expect("the run ends");
    match outcome {
        Err(BackfillError::Batch(e)) => assert_eq!(e, "connection reset by peer"),
        other => panic!("expected the batch's error, got {other:?}"),
    }
    assert_eq!(table.batches(), 5);

    // The server holds the last saved position: after the 4th batch.
    let p = progress(&srv).await;
    assert_eq!(
        (
            p["status"].as_str(),
            p["cursor"].as_str(),
            p["rows_done"].as_u64(),
            p["rows_total_estimate"].as_u64()
        ),
        (Some("running"), Some("400"), Some(400), Some(ROWS)),
        "{p}"
    );
    first.shutdown().await;

    // A new process resumes there, not at the start.
    let second = connect(&srv, &srv.token, "billing-worker").await;
    let outcome = tokio::time::timeout(
        WAIT,
        second
            .backfill(KEY)
            .batch_size(100)
            .total_estimate(ROWS)
            .run(plain(&table)),
    )
    .await
    .expect("the run finishes");
    assert_eq!(outcome.unwrap(), BackfillOutcome::Completed { rows: ROWS });
    let starts = table.starts();
    assert_eq!(
        starts[5].as_deref(),
        Some("400"),
        "the resumed run starts after the checkpoint: {:?}",
        &starts[..7]
    );
    assert!(
        starts[5..].iter().all(Option::is_some),
        "the resumed run never starts over"
    );
    // 16 full batches of the rest, then an empty one that finds the end.
    assert_eq!(starts.len(), 5 + 17);

    table.assert_all_backfilled();
    for k in 1..=ROWS {
        let expected = match k {
            // Before the checkpoint: once, never again.
            1..=400 => 1,
            // The rows the crashed batch got to ran again (idempotently).
            401..=450 => 2,
            _ => 1,
        };
        assert_eq!(table.touched(k), expected, "row {k}");
    }
    let p = progress(&srv).await;
    assert_eq!(
        (
            p["status"].as_str(),
            p["cursor"].as_str(),
            p["rows_done"].as_u64()
        ),
        (Some("complete"), Some("2000"), Some(ROWS)),
        "{p}"
    );
    second.shutdown().await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Pause and resume
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_starts_no_batch_until_resumed() {
    let srv = TestServer::start(Db::Sqlite).await;
    srv.ready_for_backfill(KEY).await;
    let client = connect(&srv, &srv.token, "billing-worker").await;
    let table = Table::new(ROWS);
    let (paused_tx, mut paused_rx) = watch::channel(0u64);
    // The 3rd batch records the pause and returns once the client has seen it.
    let batches = recording_at(
        &table,
        3,
        &["backfill_paused"],
        &srv,
        Some(&client),
        paused_tx,
    );
    let runner = client.backfill(KEY).batch_size(100).total_estimate(ROWS);
    let control = async {
        paused_rx.wait_for(|v| *v > 0).await.unwrap();
        // The runner reaches the batch boundary (the 3rd batch's checkpoint) and stops there.
        eventually(WAIT, "the 3rd batch's checkpoint", || async {
            let p = progress(&srv).await;
            p["rows_done"].as_u64() == Some(300) && p["paused"] == true
        })
        .await;
        assert_eq!(table.batches(), 3);
        // Unrelated changes reach the client (and wake the waiting runner): still no batch.
        for i in 0..2 {
            let other = srv
                .create(&format!("orders.unrelated-{i}"), false, &[])
                .await;
            wait_for(&client, other["version"].as_u64().unwrap()).await;
            assert_eq!(progress(&srv).await["rows_done"].as_u64(), Some(300));
            assert_eq!(table.batches(), 3, "no batch starts while paused");
        }
        let resumed = event(&srv, "backfill_resumed").await;
        assert_eq!(progress(&srv).await["paused"], false);
        resumed
    };
    let (outcome, _) =
        tokio::time::timeout(WAIT, async { tokio::join!(runner.run(batches), control) })
            .await
            .expect("the run finishes");
    assert_eq!(outcome.unwrap(), BackfillOutcome::Completed { rows: ROWS });
    assert_eq!(table.starts()[3].as_deref(), Some("300"));
    table.assert_all_backfilled();
    table.assert_each_processed_once();
    let p = progress(&srv).await;
    assert_eq!(
        (p["status"].as_str(), p["rows_done"].as_u64()),
        (Some("complete"), Some(ROWS)),
        "{p}"
    );
    client.shutdown().await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Cancel
// ---------------------------------------------------------------------------------------------

/// A runner that has not yet heard of a cancel (its stream lags) while the backfill is started
/// again: its next checkpoint names its own, cancelled run and is refused, and it stops without
/// moving the new run's position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_of_a_cancelled_and_restarted_run_leaves_the_new_run_alone() {
    let srv = TestServer::start(Db::Sqlite).await;
    srv.ready_for_backfill(KEY).await;
    let client = connect(&srv, &srv.token, "billing-worker").await;
    let table = Table::new(ROWS);
    // Not waited for by the client: the runner learns of it from the server.
    let batches = recording_at(
        &table,
        3,
        &["backfill_cancelled", "backfill_started"],
        &srv,
        None,
        watch::channel(0).0,
    );
    let outcome = tokio::time::timeout(WAIT, client.backfill(KEY).batch_size(100).run(batches))
        .await
        .expect("the run ends");
    assert_eq!(
        outcome.unwrap(),
        BackfillOutcome::Cancelled { rows: 300 },
        "the old run ends as cancelled"
    );
    assert_eq!(
        table.batches(),
        3,
        "no batch starts after its run was replaced"
    );
    let p = progress(&srv).await;
    assert_eq!(
        (
            p["status"].as_str(),
            p["cursor"].as_str(),
            p["rows_done"].as_u64()
        ),
        (Some("running"), Some(""), Some(0)),
        "the new run's position is untouched: {p}"
    );
    client.shutdown().await;
    srv.stop().await;
}

/// A cancel recorded while a batch runs (the usual case: a runner is almost always inside a
/// batch) stops the run at the end of that batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_a_batch_stops_the_run_at_the_boundary() {
    let srv = TestServer::start(Db::Sqlite).await;
    srv.ready_for_backfill(KEY).await;
    let client = connect(&srv, &srv.token, "billing-worker").await;
    let table = Table::new(ROWS);
    let batches = recording_at(
        &table,
        3,
        &["backfill_cancelled"],
        &srv,
        Some(&client),
        watch::channel(0).0,
    );
    let outcome = tokio::time::timeout(WAIT, client.backfill(KEY).batch_size(100).run(batches))
        .await
        .expect("the run ends");
    assert_eq!(table.batches(), 3, "no batch starts after the cancel");
    assert_not_started(&progress(&srv).await);
    assert_eq!(
        srv.migration(KEY).await["backfill"]["status"],
        "not_started"
    );
    match outcome {
        Ok(BackfillOutcome::Cancelled { rows }) => assert_eq!(rows, 300),
        other => {
            panic!("expected Ok(Cancelled {{ rows: 300 }}) at the batch boundary, got {other:?}")
        }
    }
    client.shutdown().await;
    srv.stop().await;
}

/// A cancel recorded between batches (here: while paused) stops the run at once; a new run
/// starts over from the first row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_between_batches_stops_the_run_and_forgets_the_position() {
    let srv = TestServer::start(Db::Sqlite).await;
    srv.ready_for_backfill(KEY).await;
    let client = connect(&srv, &srv.token, "billing-worker").await;
    let table = Table::new(ROWS);
    let (paused_tx, mut paused_rx) = watch::channel(0u64);
    let batches = recording_at(
        &table,
        3,
        &["backfill_paused"],
        &srv,
        Some(&client),
        paused_tx,
    );
    let runner = client.backfill(KEY).batch_size(100);
    let control = async {
        paused_rx.wait_for(|v| *v > 0).await.unwrap();
        eventually(WAIT, "the 3rd batch's checkpoint", || async {
            progress(&srv).await["rows_done"].as_u64() == Some(300)
        })
        .await;
        event(&srv, "backfill_cancelled").await
    };
    let (outcome, _) =
        tokio::time::timeout(WAIT, async { tokio::join!(runner.run(batches), control) })
            .await
            .expect("the run ends");
    assert_eq!(outcome.unwrap(), BackfillOutcome::Cancelled { rows: 300 });
    assert_eq!(table.batches(), 3);
    assert_not_started(&progress(&srv).await);

    // Started again, it begins at the first row.
    let outcome = tokio::time::timeout(
        WAIT,
        client.backfill(KEY).batch_size(100).run(plain(&table)),
    )
    .await
    .expect("the run finishes");
    assert_eq!(outcome.unwrap(), BackfillOutcome::Completed { rows: ROWS });
    assert_eq!(table.starts()[3], None);
    table.assert_all_backfilled();
    let p = progress(&srv).await;
    assert_eq!(
        (p["status"].as_str(), p["rows_done"].as_u64()),
        (Some("complete"), Some(ROWS)),
        "{p}"
    );
    client.shutdown().await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Refusals: rule 3, and a token without the operator role
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_3_refuses_the_start_while_a_live_client_lags() {
    let srv = TestServer::start(Db::Sqlite).await;
    let full = srv.ready_for_backfill(KEY).await;
    // A live instance that has not applied dual_write at 100%.
    srv.heartbeat("legacy-api", "legacy-1", full - 1).await;
    let before = srv.migration(KEY).await;
    let actions_before = audit_actions(&srv).await;

    let client = connect(&srv, &srv.token, "billing-worker").await;
    let table = Table::new(ROWS);
    let outcome = tokio::time::timeout(WAIT, client.backfill(KEY).run(plain(&table)))
        .await
        .expect("the run ends");
    match outcome {
        Err(BackfillError::Refused(m)) => {
            assert!(m.contains("rule 3"), "{m}");
            assert!(
                m.contains(&format!(
                    "instance legacy-1 of legacy-api has applied version {}, needs {full}",
                    full - 1
                )),
                "{m}"
            );
        }
        other => panic!("expected a rule 3 refusal, got {other:?}"),
    }
    // Nothing ran and nothing was recorded.
    assert_eq!(table.batches(), 0);
    assert_eq!(srv.migration(KEY).await, before);
    assert_eq!(audit_actions(&srv).await, actions_before);
    assert_not_started(&progress(&srv).await);

    // Once the instance catches up, the same runner starts and completes.
    srv.heartbeat("legacy-api", "legacy-1", full).await;
    let outcome = tokio::time::timeout(WAIT, client.backfill(KEY).run(plain(&table)))
        .await
        .expect("the run finishes");
    assert_eq!(outcome.unwrap(), BackfillOutcome::Completed { rows: ROWS });
    table.assert_all_backfilled();
    client.shutdown().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_token_may_not_run_a_backfill() {
    let srv = TestServer::start(Db::Sqlite).await;
    srv.ready_for_backfill(KEY).await;
    let reader = srv.token_with_role("billing-api", "reader").await;
    let client = connect(&srv, &reader, "billing-api").await;
    let before = srv.migration(KEY).await;
    let table = Table::new(ROWS);
    let outcome = tokio::time::timeout(WAIT, client.backfill(KEY).run(plain(&table)))
        .await
        .expect("the run ends");
    match outcome {
        Err(BackfillError::Refused(m)) => {
            assert!(m.contains("has role reader"), "{m}");
            assert!(m.contains("needs backfill or operator"), "{m}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(table.batches(), 0);
    assert_eq!(srv.migration(KEY).await, before);
    assert_not_started(&progress(&srv).await);
    client.shutdown().await;
    srv.stop().await;
}

/// The backfill role runs a backfill (checkpoints, backfill-started and -complete) and may do
/// nothing else: no front moves, no pause or cancel, no schema events, no new migrations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_token_runs_the_backfill_and_nothing_else() {
    let srv = TestServer::start(Db::Sqlite).await;
    srv.ready_for_backfill(KEY).await;
    let token = srv.token_with_role("orders-backfill", "backfill").await;
    let client = connect(&srv, &token, "billing-worker").await;
    let table = Table::new(200);
    let outcome =
        tokio::time::timeout(WAIT, client.backfill(KEY).batch_size(50).run(plain(&table)))
            .await
            .expect("the run finishes");
    assert_eq!(outcome.unwrap(), BackfillOutcome::Completed { rows: 200 });
    client.shutdown().await;

    let version = srv.version_of(KEY).await;
    let denied = [
        (
            reqwest::Method::POST,
            format!("/v1/migrations/{KEY}/advance"),
            json!({}),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/migrations/{KEY}/retreat"),
            json!({}),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/migrations/{KEY}/rollout"),
            json!({"rollout_bp": 0}),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/migrations/{KEY}/events"),
            json!({"event": "backfill_paused"}),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/migrations/{KEY}/events"),
            json!({"event": "backfill_cancelled"}),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/migrations/{KEY}/events"),
            json!({"event": "contracted"}),
        ),
        (
            reqwest::Method::POST,
            "/v1/migrations".to_owned(),
            json!({"key": "orders.other"}),
        ),
        (
            reqwest::Method::POST,
            "/v1/tokens".to_owned(),
            json!({"name": "x", "role": "admin"}),
        ),
    ];
    for (method, path, mut body) in denied {
        if path.starts_with(&format!("/v1/migrations/{KEY}/")) {
            body["expected_version"] = version.into();
        }
        if path != "/v1/tokens" {
            body["reason"] = "a runner oversteps".into();
        }
        let (status, answer) = srv.call_as(&token, method, &path, Some(body)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("has role backfill"),
            "{answer}"
        );
    }
    assert_eq!(srv.version_of(KEY).await, version, "nothing changed");
    // It reads like any client.
    let (status, _) = srv
        .call_as(
            &token,
            reqwest::Method::GET,
            &format!("/v1/migrations/{KEY}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Rate limit
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_spreads_the_batches_out() {
    const N: u64 = 200;
    const RATE: f64 = 500.0;
    let srv = TestServer::start(Db::Sqlite).await;
    srv.ready_for_backfill(KEY).await;
    let client = connect(&srv, &srv.token, "billing-worker").await;
    let table = Table::new(N);
    let runner = client
        .backfill(KEY)
        .batch_size(20)
        .max_rows_per_second(RATE);
    let started = Instant::now();
    let outcome = tokio::time::timeout(WAIT, runner.run(plain(&table)))
        .await
        .expect("the run finishes");
    let elapsed = started.elapsed();
    assert_eq!(outcome.unwrap(), BackfillOutcome::Completed { rows: N });
    // 200 rows at 500 rows/s: the batch that finds the end starts no sooner than 0.4 s in.
    let floor = Duration::from_secs_f64(N as f64 / RATE * 0.9);
    assert!(elapsed >= floor, "{elapsed:?} < {floor:?}");
    assert_eq!(table.batches(), 11);
    table.assert_all_backfilled();
    client.shutdown().await;
    srv.stop().await;
}

/// The limit averages over time spent running: after a long pause the runner goes on at the
/// limited rate instead of spending the paused time in a burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_does_not_bank_a_burst_for_afterwards() {
    const N: u64 = 200;
    const BATCH: u64 = 20;
    const RATE: f64 = 500.0;
    let srv = TestServer::start(Db::Sqlite).await;
    srv.ready_for_backfill(KEY).await;
    let client = connect(&srv, &srv.token, "billing-worker").await;
    let table = Table::new(N);
    let (paused_tx, mut paused_rx) = watch::channel(0u64);
    // The first batch records the pause and returns once the client has seen it.
    let batches = recording_at(
        &table,
        1,
        &["backfill_paused"],
        &srv,
        Some(&client),
        paused_tx,
    );
    let runner = client
        .backfill(KEY)
        .batch_size(BATCH)
        .max_rows_per_second(RATE);
    let control = async {
        paused_rx.wait_for(|v| *v > 0).await.unwrap();
        eventually(WAIT, "the first batch's checkpoint", || async {
            let p = progress(&srv).await;
            p["rows_done"].as_u64() == Some(BATCH) && p["paused"] == true
        })
        .await;
        // A pause far longer than the whole run would take at the limit: the point of the test.
        tokio::time::sleep(Duration::from_secs(1)).await;
        event(&srv, "backfill_resumed").await;
        Instant::now()
    };
    let (outcome, resumed_at) =
        tokio::time::timeout(WAIT, async { tokio::join!(runner.run(batches), control) })
            .await
            .expect("the run finishes");
    let after_resume = resumed_at.elapsed();
    assert_eq!(outcome.unwrap(), BackfillOutcome::Completed { rows: N });
    // The 180 rows after the resume take at least 180 / 500 s.
    let floor = Duration::from_secs_f64((N - BATCH) as f64 / RATE * 0.9);
    assert!(after_resume >= floor, "{after_resume:?} < {floor:?}");
    table.assert_all_backfilled();
    client.shutdown().await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7. A runner started as soon as its client connects
// ---------------------------------------------------------------------------------------------

/// `connect` returns once the client has applied the server's snapshot (here: dual_write at
/// 100%), so a runner started right then must not be refused by rule 3 on account of its own
/// client. The server is kept busy with other instances' heartbeats (as a large fleet does),
/// which widens the window in which the client's first heartbeat — applied version 0, sent
/// before its snapshot — is the server's latest word on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_started_right_after_connect_is_not_refused_by_its_own_client() {
    const ATTEMPTS: usize = 15;
    let srv = TestServer::start(Db::Sqlite).await;
    let mut keys = Vec::new();
    for i in 0..ATTEMPTS {
        let key = format!("users.fresh-{i}");
        srv.create(&key, true, &[]).await;
        for (path, body) in [
            ("events", json!({ "event": "expand_applied" })),
            ("advance", json!({})),
            ("rollout", json!({ "rollout_bp": 10_000 })),
        ] {
            let mut body = body;
            body["expected_version"] = srv.version_of(&key).await.into();
            body["reason"] = "test".into();
            let (status, answer) = srv
                .post(&format!("/v1/migrations/{key}/{path}"), body)
                .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
        keys.push(key);
    }
    let latest = srv.snapshot_version().await;
    let done = AtomicBool::new(false);
    // Other services' instances, all current, heartbeating back to back.
    let fleet = futures::future::join_all((0..8).map(|i| {
        let (srv, done) = (&srv, &done);
        async move {
            while !done.load(Ordering::Relaxed) {
                srv.heartbeat("fleet", &format!("fleet-{i}"), latest).await;
            }
        }
    }));
    let runs = async {
        let mut refusals = Vec::new();
        for key in &keys {
            let client = connect_fresh(&srv, &srv.token, "billing-worker").await;
            let table = Table::new(10);
            let outcome = tokio::time::timeout(WAIT, client.backfill(key).run(plain(&table)))
                .await
                .expect("the run ends");
            match outcome {
                Ok(BackfillOutcome::Completed { rows: 10 }) => {}
                other => refusals.push(format!(
                    "{key}: {other:?} (this client: {})",
                    client.instance_id()
                )),
            }
            client.shutdown().await;
        }
        done.store(true, Ordering::Relaxed);
        refusals
    };
    let (_, refusals) = tokio::join!(fleet, runs);
    assert!(
        refusals.is_empty(),
        "{} of {ATTEMPTS} runners were refused because of their own client:\n{}",
        refusals.len(),
        refusals.join("\n")
    );
    srv.stop().await;
}
