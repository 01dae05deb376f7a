//! Transactional dual writes on PostgreSQL (`Migrator::write_atomic`, `Migrator::write_in`):
//! a process killed between the two sides leaves neither written (where separate writes leave
//! the authoritative one alone); a failing non-authoritative side is rolled back to its
//! savepoint while the authoritative write commits and is counted; strict mode fails the write
//! and rolls both back; a failing authoritative side writes nothing; a write joins the
//! application's own transaction.
//!
//! The shapes are a table split: `orders` (old) and `shipments` (new, linked back by
//! `order_id`), with a CHECK the tests break on purpose to make one side fail.

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use std::process::Stdio;
use std::time::Duration;
use switchyard_client::atomic::TxHandle;
use switchyard_client::{Client, Migrator, MigratorStats, OtherSide, SideStats, Stage};
use switchyard_tests::{Db, TestDb, TestServer, eventually};

const WAIT: Duration = Duration::from_secs(20);
/// The advisory lock the crash writer's new side waits on (its `LOCK`).
const LOCK: i64 = 4242;

struct Fixture {
    srv: TestServer,
    _db: TestDb,
    url: String,
    pool: PgPool,
    client: Client,
}

/// A server with `orders.split` at dual_write 100% and `orders.split-live` at live 100%, a
/// client that applied both, and the two tables.
async fn fixture() -> Fixture {
    let srv = TestServer::start(Db::Sqlite).await;
    srv.at_full("orders.split", Stage::DualWrite).await;
    let newest = srv.at_full("orders.split-live", Stage::Live).await;
    let db = TestDb::new(Db::Postgres).await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&db.url)
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE orders (id bigint PRIMARY KEY, address text NOT NULL CHECK (address <> 'bad'));
         CREATE TABLE shipments (order_id bigint PRIMARY KEY,
                                 address text NOT NULL CHECK (address <> 'bad'));
         CREATE TABLE audit (order_id bigint NOT NULL);",
    )
    .execute(&pool)
    .await
    .unwrap();
    let token = srv.token_with_role("api", "reader").await;
    let client = Client::builder(format!("http://{}", srv.server.grpc_addr), token, "api")
        .connect()
        .await
        .expect("connecting");
    eventually(WAIT, "the client to apply the migrations", || async {
        client.version() >= newest
    })
    .await;
    Fixture {
        srv,
        url: db.url.clone(),
        _db: db,
        pool,
        client,
    }
}

/// Whether order `id` is in the old shape and in the new one.
async fn written(pool: &PgPool, id: i64) -> (bool, bool) {
    let row = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM orders WHERE id = $1),
                EXISTS (SELECT 1 FROM shipments WHERE order_id = $1)",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    (row.get(0), row.get(1))
}

type Tx = TxHandle<sqlx::Transaction<'static, sqlx::Postgres>>;

async fn insert_order(tx: Tx, id: i64, address: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("INSERT INTO orders (id, address) VALUES ($1, $2)")
        .bind(id)
        .bind(address)
        .execute(&mut **tx.lock().await)
        .await
        .map(|_| id)
}

async fn insert_shipment(tx: Tx, id: i64, address: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("INSERT INTO shipments (order_id, address) VALUES ($1, $2)")
        .bind(id)
        .bind(address)
        .execute(&mut **tx.lock().await)
        .await
        .map(|_| id)
}

/// Order `id`, each side writing its address (`"bad"` fails that side).
async fn write(
    migrator: &Migrator,
    pool: &PgPool,
    id: i64,
    old: &str,
    new: &str,
) -> Result<switchyard_client::Written<i64, sqlx::Error>, sqlx::Error> {
    migrator
        .write_atomic(
            pool,
            &id.to_string(),
            |tx| insert_order(tx, id, old),
            |tx| insert_shipment(tx, id, new),
        )
        .await
}

fn side(writes: u64, errors: u64) -> SideStats {
    SideStats {
        reads: 0,
        writes,
        errors,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_sides_leaves_neither_side_written() {
    let f = fixture().await;
    let token = f.srv.token_with_role("crash-writer", "reader").await;
    let grpc = format!("http://{}", f.srv.server.grpc_addr);

    // One write per mode, each killed while its new side waits on the lock this test holds:
    // the old side has run by then (authoritative first, holding its row's insert lock).
    for (id, mode, expected) in [
        (1_i64, "atomic", (false, false)),
        // The contrast: separate writes leave the committed authoritative side alone.
        (2, "separate", (true, false)),
    ] {
        let mut holder = f.pool.acquire().await.unwrap();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(LOCK)
            .execute(&mut *holder)
            .await
            .unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .args([&grpc, &token, &f.url, "orders.split", &id.to_string(), mode])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting crash-writer");
        eventually(WAIT, "the writer to wait between its sides", || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'crash-writer' AND wait_event_type = 'Lock'
                   AND wait_event = 'advisory'",
            )
            .fetch_one(&f.pool)
            .await
            .unwrap();
            waiting == 1
        })
        .await;
        if mode == "atomic" {
            // The old side's insert is in the open transaction, not yet visible.
            let inserted: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                 WHERE a.application_name = 'crash-writer' AND l.granted
                   AND l.relation = 'orders'::regclass AND l.mode = 'RowExclusiveLock'",
            )
            .fetch_one(&f.pool)
            .await
            .unwrap();
            assert_eq!(
                inserted, 1,
                "the authoritative side ran inside the transaction"
            );
        }
        child.start_kill().expect("kill -9");
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "the writer was killed, not finished");
        // Let the orphaned session go: it takes the lock, finds its client gone and ends.
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK)
            .execute(&mut *holder)
            .await
            .unwrap();
        eventually(WAIT, "the killed writer's session to end", || async {
            let sessions: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'crash-writer'",
            )
            .fetch_one(&f.pool)
            .await
            .unwrap();
            sessions == 0
        })
        .await;
        assert_eq!(
            written(&f.pool, id).await,
            expected,
            "{mode} write killed mid-way"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_other_side_is_rolled_back_to_its_savepoint_and_the_write_commits() {
    let f = fixture().await;

    // dual_write: old is authoritative, the new side fails.
    let migrator = f.client.migrator("orders.split");
    let w = write(&migrator, &f.pool, 10, "home", "bad").await.unwrap();
    assert_eq!(w.value, 10);
    let OtherSide::Failed(e) = &w.other else {
        panic!("the new side failed: {:?}", w.other)
    };
    assert_eq!(
        e.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("23514"),
        "the caller gets the side's own error: {e}"
    );
    assert_eq!(written(&f.pool, 10).await, (true, false));
    // The next write through the same pool is unaffected.
    let w = write(&migrator, &f.pool, 11, "home", "home").await.unwrap();
    assert!(matches!(w.other, OtherSide::Written), "{:?}", w.other);
    assert_eq!(written(&f.pool, 11).await, (true, true));
    assert_eq!(
        migrator.stats(),
        MigratorStats {
            old: side(2, 0),
            new: side(2, 1),
            diverged_writes: 1,
            ..MigratorStats::default()
        }
    );

    // live: new is authoritative, the old side fails.
    let live = f.client.migrator("orders.split-live");
    let w = write(&live, &f.pool, 20, "bad", "home").await.unwrap();
    assert!(matches!(w.other, OtherSide::Failed(_)), "{:?}", w.other);
    assert_eq!(written(&f.pool, 20).await, (false, true));
    assert_eq!(live.stats().diverged_writes, 1);
    assert_eq!(
        (live.stats().old, live.stats().new),
        (side(1, 1), side(1, 0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_fails_the_write_and_rolls_both_sides_back() {
    let f = fixture().await;
    let strict = f.client.migrator("orders.split").strict_writes(true);
    let e = write(&strict, &f.pool, 30, "home", "bad")
        .await
        .expect_err("strict: the other side's failure fails the write");
    assert_eq!(
        e.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("23514")
    );
    assert_eq!(written(&f.pool, 30).await, (false, false));
    // Both sides count as failed: neither was written.
    assert_eq!(
        strict.stats(),
        MigratorStats {
            old: side(1, 1),
            new: side(1, 1),
            strict_rollbacks: 1,
            ..MigratorStats::default()
        }
    );
    // And a strict write whose sides succeed commits both.
    write(&strict, &f.pool, 31, "home", "home").await.unwrap();
    assert_eq!(written(&f.pool, 31).await, (true, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_authoritative_side_writes_nothing_and_the_other_never_runs() {
    let f = fixture().await;
    let migrator = f.client.migrator("orders.split");
    let e = write(&migrator, &f.pool, 40, "bad", "home")
        .await
        .expect_err("the authoritative side's failure is the write's");
    assert!(e.to_string().contains("check"), "{e}");
    assert_eq!(written(&f.pool, 40).await, (false, false));
    assert_eq!(
        migrator.stats(),
        MigratorStats {
            old: side(1, 1),
            ..MigratorStats::default()
        },
        "the new side never ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_joins_the_applications_transaction() {
    let f = fixture().await;
    let migrator = f.client.migrator("orders.split");
    for (id, commit) in [(50_i64, true), (51, false)] {
        let tx = TxHandle::new(f.pool.begin().await.unwrap());
        sqlx::query("INSERT INTO audit (order_id) VALUES ($1)")
            .bind(id)
            .execute(&mut **tx.lock().await)
            .await
            .unwrap();
        let w = migrator
            .write_in(
                &tx,
                &id.to_string(),
                |tx| insert_order(tx, id, "home"),
                |tx| insert_shipment(tx, id, "home"),
            )
            .await
            .unwrap();
        assert!(matches!(w.other, OtherSide::Written));
        let tx = tx.into_inner().await;
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
        let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit WHERE order_id = $1")
            .bind(id)
            .fetch_one(&f.pool)
            .await
            .unwrap();
        assert_eq!(
            (written(&f.pool, id).await, audited),
            if commit {
                ((true, true), 1)
            } else {
                ((false, false), 0)
            },
            "everything in the application's transaction commits or rolls back together"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_write_runs_on_a_spawned_task() {
    // Applications run writes inside request handlers on a multi-threaded runtime: the future
    // must be `Send`. This compiles only if it is.
    let f = fixture().await;
    let migrator = f.client.migrator("orders.split");
    let pool = f.pool.clone();
    let task = tokio::spawn(async move {
        write(&migrator, &pool, 60, "home", "home")
            .await
            .map(|w| w.value)
    });
    assert_eq!(task.await.unwrap().unwrap(), 60);
    assert_eq!(written(&f.pool, 60).await, (true, true));
}
