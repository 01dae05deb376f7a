//! Backfills that yield to the database, on own PostgreSQL clusters ([`PgCluster`]): the runner
//! holds between batches while a standby's replay is paused (and names the standby and its
//! lag in the progress), goes on when it resumes and copies every row; it yields after an
//! application session waited on a batch's locks; and thresholds and the batch size changed on
//! the server (`switchyard backfill set`) take effect at the next batch.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_client::health::Thresholds;
use switchyard_client::postgres::PgBackfill;
use switchyard_client::{BackfillOutcome, Client, Source};
use switchyard_tests::pgcluster::PgCluster;
use switchyard_tests::{ADMIN_TOKEN, Db, TestServer, eventually};

const KEY: &str = "items.backfilled";
/// The paused-standby test's own migration: the metrics registry is the process's, shared by
/// the tests running beside it, so its gauge must not be another test's.
const PAUSED_KEY: &str = "items.paused-standby";

/// How long anything asynchronous may take before a test fails.
const WAIT: Duration = Duration::from_secs(60);

async fn connect(srv: &TestServer) -> Client {
    let client = Client::builder(
        format!("http://{}", srv.server.grpc_addr),
        ADMIN_TOKEN,
        "api",
    )
    .connect()
    .await
    .unwrap();
    assert_eq!(client.status().source, Source::Server);
    client
}

async fn progress(srv: &TestServer) -> Value {
    progress_of(srv, KEY).await
}

async fn progress_of(srv: &TestServer, key: &str) -> Value {
    let (status, body) = srv.get(&format!("/v1/migrations/{key}/backfill")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// `items (id, old, new)` with `rows` rows on the cluster's primary, and a pool for it.
async fn table(cluster: &PgCluster, rows: i64) -> PgPool {
    cluster.execute(&format!(
        "CREATE TABLE items (id bigint PRIMARY KEY, old text NOT NULL, new text); \
         ALTER TABLE items SET (autovacuum_enabled = off); \
         INSERT INTO items (id, old) SELECT g, 'item-' || g FROM generate_series(1, {rows}) g"
    ));
    PgPoolOptions::new()
        .max_connections(6)
        .connect(&cluster.url())
        .await
        .unwrap()
}

const PENDING: &str = "SELECT count(*) FROM items WHERE new IS DISTINCT FROM upper(old)";

async fn pending(pool: &PgPool) -> i64 {
    sqlx::query_scalar(PENDING).fetch_one(pool).await.unwrap()
}

/// The primary's view of how far the standby's replay is behind, in bytes.
async fn replay_behind(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), 0)::bigint \
         FROM pg_stat_replication",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// What each batch was asked for: (limit, the standby's replay lag in bytes when it began).
type Log = Arc<Mutex<Vec<(u64, i64)>>>;

/// Replay paused on the standby while the backfill runs: the runner holds within two batches
/// of the lag passing its threshold, and the progress names the standby and the lag; replay
/// resumed, it goes on and copies every row (on the standby too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_standby_holds_the_backfill_until_it_replays() {
    const LAG: i64 = 64 * 1024;
    let cluster = PgCluster::builder().with_standby().start();
    let pool = table(&cluster, 4_000).await;
    let srv = TestServer::start(Db::Sqlite).await;
    srv.ready_for_backfill(PAUSED_KEY).await;
    let client = connect(&srv).await;

    let backfill = Arc::new(
        PgBackfill::new(pool.clone(), "items", "id", "new = upper(old)")
            .pending("new IS DISTINCT FROM upper(old)"),
    );
    let runner = client
        .backfill(PAUSED_KEY)
        .batch_size(50)
        .batch_target(None)
        .pause_between_batches(Duration::from_millis(50))
        .thresholds(Thresholds {
            // Bytes only: the test knows when that threshold is passed.
            max_replica_lag: None,
            max_replica_lag_bytes: Some(LAG as u64),
            ..Thresholds::default()
        })
        .health_timing(Duration::from_millis(100), Duration::from_secs(5))
        .health(backfill.health());
    let log: Log = Arc::default();
    let run = {
        let (backfill, log, pool) = (backfill.clone(), log.clone(), pool.clone());
        tokio::spawn(async move {
            runner
                .run(move |cursor, limit| {
                    let (backfill, log, pool) = (backfill.clone(), log.clone(), pool.clone());
                    async move {
                        let behind = replay_behind(&pool).await;
                        log.lock().unwrap().push((limit, behind));
                        backfill.batch(cursor, limit).await
                    }
                })
                .await
        })
    };

    eventually(WAIT, "some rows copied", || async {
        progress_of(&srv, PAUSED_KEY).await["rows_done"].as_u64() >= Some(500)
    })
    .await;
    cluster.execute_on_standby("SELECT pg_wal_replay_pause()");

    let standby = cluster.standby_name();
    eventually(WAIT, "the runner holding for the standby", || async {
        let p = progress_of(&srv, PAUSED_KEY).await;
        let reason = p["throttle"]["reason"].as_str().unwrap_or("");
        p["throttle"]["throttled"] == true
            && reason.contains(&format!("replica {standby} replay lag"))
    })
    .await;
    let held_at = progress_of(&srv, PAUSED_KEY).await;
    assert!(
        held_at["throttle"]["since_ms"].as_i64().is_some(),
        "{held_at}"
    );
    // Held: the server's cumulative time grows while no row is copied.
    eventually(WAIT, "a second held", || async {
        progress_of(&srv, PAUSED_KEY).await["throttle"]["throttled_seconds"].as_f64() >= Some(1.0)
    })
    .await;
    assert_eq!(
        progress_of(&srv, PAUSED_KEY).await["rows_done"],
        held_at["rows_done"],
        "no batch ran while holding"
    );
    let over = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, behind)| *behind > LAG)
        .count();
    assert!(
        over <= 2,
        "{over} batches began with the lag over the threshold"
    );
    // The CLI shows it too.
    assert_eq!(srv.cli(&["backfill", "status", PAUSED_KEY]).await, 0);

    cluster.execute_on_standby("SELECT pg_wal_replay_resume()");
    let outcome = tokio::time::timeout(WAIT, run)
        .await
        .expect("the backfill completes after replay resumes")
        .unwrap()
        .unwrap();
    assert_eq!(outcome, BackfillOutcome::Completed { rows: 4_000 });
    assert_eq!(pending(&pool).await, 0, "every row copied");
    let done = progress_of(&srv, PAUSED_KEY).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["throttle"]["throttled"], false, "{done}");
    assert!(done["throttle"]["throttled_seconds"].as_f64() >= Some(1.0));
    eventually(WAIT, "the standby catching up", || async {
        cluster.try_execute_on_standby(PENDING).as_deref() == Ok("0")
    })
    .await;
    // The gauges name the migration.
    let metrics = reqwest::get(format!("{}/metrics", srv.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "switchyard_backfill_throttled{{migration=\"{PAUSED_KEY}\"}} 0"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("switchyard_backfill_throttled_seconds{"));
}

/// Thresholds and the batch size changed on the server while the runner holds: the raised
/// threshold releases it at its next check (replay still paused), and every batch after the
/// next checkpoint has the new size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_changed_mid_run_apply_at_the_next_batch() {
    let cluster = PgCluster::builder().with_standby().start();
    let pool = table(&cluster, 3_000).await;
    let srv = TestServer::start(Db::Sqlite).await;
    srv.ready_for_backfill(KEY).await;
    let client = connect(&srv).await;
    let backfill = Arc::new(
        PgBackfill::new(pool.clone(), "items", "id", "new = upper(old)")
            .pending("new IS DISTINCT FROM upper(old)"),
    );
    // Set before the start: the runner takes them from its first read of the progress.
    assert_eq!(
        srv.cli(&[
            "backfill",
            "set",
            KEY,
            "--max-replica-lag-bytes",
            "32KiB",
            "--max-replica-lag",
            "off",
            "--batch-target",
            "off",
            "--reason",
            "hold on bytes only",
        ])
        .await,
        0
    );
    let set = progress(&srv).await["settings"].clone();
    assert_eq!(
        set,
        json!({ "max_replica_lag_bytes": 32768, "max_replica_lag_ms": 0, "batch_target_ms": 0 })
    );
    let runner = client
        .backfill(KEY)
        .batch_size(40)
        .pause_between_batches(Duration::from_millis(20))
        .health_timing(Duration::from_millis(100), Duration::from_secs(5))
        .health(backfill.health());
    let log: Log = Arc::default();
    let run = {
        let (backfill, log) = (backfill.clone(), log.clone());
        tokio::spawn(async move {
            runner
                .run(move |cursor, limit| {
                    let (backfill, log) = (backfill.clone(), log.clone());
                    async move {
                        log.lock().unwrap().push((limit, 0));
                        backfill.batch(cursor, limit).await
                    }
                })
                .await
        })
    };
    eventually(WAIT, "some rows copied", || async {
        progress(&srv).await["rows_done"].as_u64() >= Some(400)
    })
    .await;
    cluster.execute_on_standby("SELECT pg_wal_replay_pause()");
    eventually(WAIT, "the runner holding", || async {
        progress(&srv).await["throttle"]["throttled"] == true
    })
    .await;

    // A bad value is refused, naming what is allowed.
    let (status, body) = srv
        .call(
            reqwest::Method::PUT,
            &format!("/v1/migrations/{KEY}/backfill/settings"),
            Some(json!({ "batch_size": 0, "reason": "too small" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("batch_size is 0: allowed 1 to 1000000"),
        "{body}"
    );

    let batches_before = log.lock().unwrap().len();
    assert_eq!(
        srv.cli(&[
            "backfill",
            "set",
            KEY,
            "--max-replica-lag-bytes",
            "1GiB",
            "--batch-size",
            "7",
            "--reason",
            "the standby can take it",
        ])
        .await,
        0
    );
    // Released while replay is still paused: the new threshold took effect.
    eventually(WAIT, "the runner going on", || async {
        log.lock().unwrap().len() > batches_before + 2
    })
    .await;
    let p = progress(&srv).await;
    assert_eq!(p["settings"]["batch_size"], 7, "{p}");
    // Who changed them and why travels with them.
    assert_eq!(
        p["settings_changed"]["reason"], "the standby can take it",
        "{p}"
    );
    assert!(
        p["settings_changed"]["by"]
            .as_str()
            .is_some_and(|b| !b.is_empty()),
        "{p}"
    );
    assert_eq!(p["settings"]["max_replica_lag_bytes"], 1 << 30, "{p}");
    assert_eq!(p["settings"]["batch_target_ms"], 0, "kept: {p}");
    {
        let log = log.lock().unwrap();
        // The batch in flight when the settings changed may have the old size; none after.
        for (i, (limit, _)) in log.iter().enumerate().skip(batches_before + 1) {
            assert_eq!(*limit, 7, "batch {i} of {:?}", &log[batches_before..]);
        }
    }
    // Back to the runner's own values, then let it finish.
    assert_eq!(
        srv.cli(&[
            "backfill",
            "set",
            KEY,
            "--reset",
            "--batch-size",
            "500",
            "--reason",
            "done testing"
        ])
        .await,
        0
    );
    assert_eq!(
        progress(&srv).await["settings"],
        json!({ "batch_size": 500 })
    );
    // `set` with nothing to set is refused, and so is a change that does not say why.
    assert_eq!(
        srv.cli(&["backfill", "set", KEY, "--reason", "nothing"])
            .await,
        2
    );
    let (status, body) = srv
        .call(
            reqwest::Method::PUT,
            &format!("/v1/migrations/{KEY}/backfill/settings"),
            Some(json!({ "batch_size": 9 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("reason"),
        "{body}"
    );
    assert_eq!(
        progress(&srv).await["settings"]["batch_size"],
        500,
        "unchanged"
    );
    cluster.execute_on_standby("SELECT pg_wal_replay_resume()");
    let outcome = tokio::time::timeout(WAIT, run)
        .await
        .expect("the backfill completes")
        .unwrap()
        .unwrap();
    assert_eq!(outcome, BackfillOutcome::Completed { rows: 3_000 });
    assert_eq!(pending(&pool).await, 0);
}

/// An application session waits on rows a (slow) batch holds: the sampling during the batch
/// sees it, and the runner yields after the batch, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_blocked_by_a_batch_makes_the_runner_yield() {
    let cluster = PgCluster::start();
    let pool = table(&cluster, 400).await;
    let srv = TestServer::start(Db::Sqlite).await;
    srv.ready_for_backfill(KEY).await;
    let client = connect(&srv).await;
    // Row 150's value takes 1.5 s to compute: its batch (rows 101..=200) holds its row locks
    // that long.
    let backfill = PgBackfill::new(
        pool.clone(),
        "items",
        "id",
        "new = upper(old) || CASE WHEN id = 150 THEN (SELECT '' FROM pg_sleep(1.5)) ELSE '' END",
    )
    .pending("new IS DISTINCT FROM upper(old)");
    let name = backfill.application_name();
    let runner = client
        .backfill(KEY)
        .batch_size(100)
        .batch_target(None)
        .health_timing(Duration::from_millis(100), Duration::from_secs(5))
        .health(backfill.health());
    let run = tokio::spawn(async move { runner.run(|c, l| backfill.batch(c, l)).await });

    // The slow batch is running: an application session updates a row it holds.
    eventually(WAIT, "the slow batch", || async {
        let sleeping: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = $1 AND wait_event = 'PgSleep'",
        )
        .bind(&name)
        .fetch_one(&pool)
        .await
        .unwrap();
        sleeping > 0
    })
    .await;
    let application = {
        let pool = pool.clone();
        tokio::spawn(async move {
            sqlx::query("UPDATE items SET old = old WHERE id = 120")
                .execute(&pool)
                .await
                .unwrap();
        })
    };
    eventually(WAIT, "the runner yielding", || async {
        let p = progress(&srv).await;
        p["throttle"]["reason"].as_str().is_some_and(|r| {
            r.contains("waited on the backfill's locks") && r.contains("UPDATE items")
        })
    })
    .await;
    application.await.unwrap();
    let outcome = tokio::time::timeout(WAIT, run)
        .await
        .expect("the backfill completes after yielding")
        .unwrap()
        .unwrap();
    assert_eq!(outcome, BackfillOutcome::Completed { rows: 400 });
    assert_eq!(pending(&pool).await, 0);
    let done = progress(&srv).await;
    assert!(
        done["throttle"]["throttled_seconds"].as_f64() > Some(0.5),
        "{done}"
    );
}

/// A role that may not see the standbys' positions (no `pg_monitor`): after its grace the
/// runner holds and says what it cannot read; with the replica thresholds turned off on the
/// server it goes on. A WAL rate over its (tiny) threshold holds it too, until turned off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_signal_holds_after_the_grace_and_the_wal_rate_holds() {
    let cluster = PgCluster::builder().with_standby().start();
    let _ = table(&cluster, 2_000).await;
    cluster.execute(
        "CREATE ROLE app LOGIN; GRANT SELECT, UPDATE ON items TO app; \
         ALTER TABLE items OWNER TO app",
    );
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&cluster.url().replace("postgres@", "app@"))
        .await
        .unwrap();
    let srv = TestServer::start(Db::Sqlite).await;
    srv.ready_for_backfill(KEY).await;
    let client = connect(&srv).await;
    let backfill = Arc::new(
        PgBackfill::new(pool.clone(), "items", "id", "new = upper(old)")
            .pending("new IS DISTINCT FROM upper(old)"),
    );
    let runner = client
        .backfill(KEY)
        .batch_size(20)
        .pause_between_batches(Duration::from_millis(20))
        .health_timing(Duration::from_millis(100), Duration::from_millis(300))
        .health(backfill.health());
    let run = {
        let backfill = backfill.clone();
        tokio::spawn(async move {
            runner
                .run(move |c, l| {
                    let backfill = backfill.clone();
                    async move { backfill.batch(c, l).await }
                })
                .await
        })
    };
    eventually(
        WAIT,
        "the runner holding for what it cannot read",
        || async {
            let p = progress(&srv).await;
            p["throttle"]["reason"].as_str().is_some_and(|r| {
                r.contains("cannot read replica lag")
                    && r.contains("pg_monitor")
                    && r.contains("holding rather than guessing")
            })
        },
    )
    .await;
    let held_rows = progress(&srv).await["rows_done"].clone();
    assert!(held_rows.as_u64() < Some(2_000), "{held_rows}");

    // Replica thresholds off, and a WAL rate no backfill stays under.
    assert_eq!(
        srv.cli(&[
            "backfill",
            "set",
            KEY,
            "--max-replica-lag",
            "off",
            "--max-replica-lag-bytes",
            "off",
            "--max-wal-rate",
            "1B",
            "--reason",
            "any WAL holds",
        ])
        .await,
        0
    );
    eventually(WAIT, "the runner holding for the WAL rate", || async {
        let p = progress(&srv).await;
        p["throttle"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("WAL written at") && r.ends_with("> 1 B/s"))
            && p["rows_done"] != held_rows
    })
    .await;
    assert_eq!(
        srv.cli(&[
            "backfill",
            "set",
            KEY,
            "--max-wal-rate",
            "off",
            "--reason",
            "the WAL is fine"
        ])
        .await,
        0
    );
    let outcome = tokio::time::timeout(WAIT, run)
        .await
        .expect("the backfill completes")
        .unwrap()
        .unwrap();
    assert_eq!(outcome, BackfillOutcome::Completed { rows: 2_000 });
    assert_eq!(pending(&pool).await, 0);
}
