//! The Postgres flavour of the backfill (`switchyard_client::postgres::PgBackfill`) on a real
//! database, batch by batch: rows a reader holds locked are skipped by the first pass and taken
//! by the sweep; a lock held past the retries fails the batch with the lock timeout, changing
//! nothing; a statement timeout shrinks the window; a misconfiguration is refused before
//! anything runs.

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;
use switchyard_client::Batch;
use switchyard_client::postgres::{PgBackfill, PgBackfillError};
use switchyard_tests::{Db, TestDb, eventually};

const ROWS: i64 = 1_000;

async fn table(rows: i64) -> (TestDb, PgPool) {
    let db = TestDb::new(Db::Postgres).await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&db.url)
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE items (id bigint PRIMARY KEY, old text NOT NULL, new text);")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO items (id, old) SELECT g, 'item-' || g FROM generate_series(1, $1) g")
        .bind(rows)
        .execute(&pool)
        .await
        .unwrap();
    (db, pool)
}

fn backfill(pool: &PgPool) -> PgBackfill {
    PgBackfill::new(pool.clone(), "items", "id", "new = upper(old)")
        .pending("new IS DISTINCT FROM upper(old)")
}

async fn pending(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM items WHERE new IS DISTINCT FROM upper(old)")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Runs batches as the runner would, until one says it is done; returns them.
async fn run_all(backfill: &PgBackfill, limit: u64) -> Vec<Batch> {
    let mut batches = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let batch = backfill
            .batch(cursor.clone(), limit)
            .await
            .expect("a batch");
        if batch.last_key.is_some() {
            cursor = batch.last_key.clone();
        }
        let done = batch.done;
        batches.push(batch);
        if done {
            return batches;
        }
        assert!(batches.len() < 10_000, "the backfill does not end");
    }
}

/// Rows reported by the keyset pass (up to and including the batch that hands over to the
/// sweep: rows examined) and by the sweep (rows updated).
fn passes(batches: &[Batch]) -> (u64, u64) {
    let handover = batches
        .iter()
        .position(|b| b.last_key.as_deref() == Some("sweep"))
        .expect("the keyset pass hands over to the sweep");
    let rows = |bs: &[Batch]| bs.iter().map(|b| b.rows).sum::<u64>();
    (rows(&batches[..=handover]), rows(&batches[handover + 1..]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_locked_during_the_first_pass_are_taken_by_the_sweep() {
    let (_db, pool) = table(ROWS).await;
    // A reader holds rows 100..=119 (SELECT … FOR UPDATE without writing them).
    let mut reader = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM items WHERE id BETWEEN 100 AND 119 FOR UPDATE")
        .fetch_all(&mut *reader)
        .await
        .unwrap();
    let backfill = backfill(&pool).lock_timeout(Duration::from_millis(50));

    // The first pass never waits: it passes over the held rows and ends.
    let mut cursor: Option<String> = None;
    let mut batches = 0;
    while !cursor.as_deref().is_some_and(|c| c.starts_with("sweep")) {
        let batch =
            tokio::time::timeout(Duration::from_secs(10), backfill.batch(cursor.clone(), 100))
                .await
                .expect("the first pass does not wait for locks")
                .unwrap();
        assert!(!batch.done, "the sweep is still to come");
        cursor = batch.last_key;
        batches += 1;
    }
    assert_eq!(batches, 11, "ten full windows and the short last one");
    assert_eq!(pending(&pool).await, 20, "only the held rows are left");

    // The sweep waits (lock timeouts, retried) until the reader lets go.
    let sweep = {
        let backfill = backfill.retries(100, Duration::from_millis(20));
        tokio::spawn(async move {
            let mut cursor = cursor;
            let mut updated = 0;
            loop {
                let batch = backfill.batch(cursor.clone(), 100).await.unwrap();
                updated += batch.rows;
                cursor = batch.last_key.or(cursor);
                if batch.done {
                    return updated;
                }
            }
        })
    };
    // The sweep is seen waiting on the reader's row locks.
    eventually(
        Duration::from_secs(10),
        "the sweep to wait for the held rows",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            waiting > 0
        },
    )
    .await;
    assert!(!sweep.is_finished(), "the sweep waits for the held rows");
    reader.commit().await.unwrap();
    let updated = sweep.await.unwrap();
    assert_eq!(
        updated, 20,
        "the sweep updated the rows the first pass skipped"
    );
    assert_eq!(pending(&pool).await, 0);

    // Idempotent: a second run finds nothing to do.
    let again = run_all(&self::backfill(&pool), 100).await;
    let (examined, swept) = passes(&again);
    assert_eq!((examined, swept), (ROWS as u64, 0));
    let rewritten: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE new = upper(old)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rewritten, ROWS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_the_retries_fails_the_batch_and_changes_nothing() {
    let (_db, pool) = table(50).await;
    // A migration's DDL (or anything taking the table lock) holds the table.
    let mut ddl = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *ddl)
        .await
        .unwrap();
    let backfill = backfill(&pool)
        .lock_timeout(Duration::from_millis(30))
        .retries(3, Duration::from_millis(10));
    // Checking the configuration (planning the statements) and the batch both need the table:
    // each waits at most the lock timeout, then retries.
    let error = backfill.batch(None, 100).await.unwrap_err();
    match &error {
        PgBackfillError::Database {
            attempts, source, ..
        } => {
            assert_eq!(*attempts, 3);
            let code = source.as_database_error().and_then(|d| d.code());
            assert_eq!(
                code.as_deref(),
                Some("55P03"),
                "lock_not_available: {source}"
            );
        }
        other => panic!("expected a lock timeout, got {other}"),
    }
    assert!(error.to_string().contains("after 3 attempt(s)"), "{error}");
    ddl.rollback().await.unwrap();
    assert_eq!(pending(&pool).await, 50, "nothing was written");
    // Once the lock is gone the same backfill goes through.
    run_all(&backfill, 100).await;
    assert_eq!(pending(&pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_retries_with_a_smaller_window() {
    let (_db, pool) = table(40).await;
    // Each row takes 100 ms to compute (the subquery names the row, so it runs per row): a
    // window of 10 rows (1 s) cannot finish within the 400 ms statement timeout, 5 rows
    // (500 ms) neither, 2 rows (200 ms) can.
    let backfill = PgBackfill::new(
        pool.clone(),
        "items",
        "id",
        "new = upper(old) || (SELECT '' FROM pg_sleep(0.1 + 0 * id))",
    )
    .pending("new IS DISTINCT FROM upper(old)")
    .statement_timeout(Duration::from_millis(400))
    .retries(5, Duration::from_millis(10));
    let batch = backfill.batch(None, 10).await.unwrap();
    assert_eq!(
        batch.rows, 2,
        "the window halved until a batch fits: {batch:?}"
    );
    assert_eq!(batch.last_key.as_deref(), Some("keyset:2"));
    assert!(!batch.done);
    assert_eq!(pending(&pool).await, 38);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_backfill_is_refused_before_it_runs() {
    let (_db, pool) = table(10).await;
    let cases = [
        (
            PgBackfill::new(pool.clone(), "itemz", "id", "new = old"),
            "the table does not exist",
        ),
        (
            PgBackfill::new(pool.clone(), "items", "ident", "new = old"),
            "it has no column ident",
        ),
        (
            PgBackfill::new(pool.clone(), "items", "new", "new = old"),
            "the key column new may be NULL",
        ),
        (
            PgBackfill::new(pool.clone(), "items", "id", "neww = old").pending("new IS NULL"),
            "check the SET expression \"neww = old\"",
        ),
        (
            PgBackfill::new(pool.clone(), "items", "id", "new = old").pending("nwe IS NULL"),
            "the predicate \"nwe IS NULL\"",
        ),
    ];
    for (backfill, expected) in cases {
        let error = backfill.batch(None, 5).await.unwrap_err();
        assert!(
            matches!(error, PgBackfillError::Setup { .. }) && error.to_string().contains(expected),
            "{error}"
        );
    }
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM items WHERE new IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap(),
        0,
        "nothing ran"
    );
}

/// Keys other than integers: a uuid (no `max(uuid)` in Postgres) and text, including the empty
/// string as the first key, walked one row per batch so that `''` is a cursor position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uuid_and_text_keys_are_walked_in_order() {
    for (key_type, keys, limit) in [
        ("uuid", "gen_random_uuid()", 7),
        ("text", "CASE WHEN g = 1 THEN '' ELSE 'key-' || g END", 1),
    ] {
        let db = TestDb::new(Db::Postgres).await;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&db.url)
            .await
            .unwrap();
        sqlx::raw_sql(&format!(
            "CREATE TABLE items (id {key_type} PRIMARY KEY, old text NOT NULL, new text); \
             INSERT INTO items (id, old) SELECT {keys}, 'item-' || g FROM generate_series(1, 120) g;"
        ))
        .execute(&pool)
        .await
        .unwrap();
        let batches = run_all(&backfill(&pool), limit).await;
        assert_eq!(pending(&pool).await, 0, "{key_type}: every row backfilled");
        let (examined, _) = passes(&batches);
        assert_eq!(examined, 120, "{key_type}: each row examined once");
    }
}

/// A table split: `orders` (id, address) gets a `shipments` table, one row per order linking
/// back to it, filled by a statement over the batch's keys.
async fn split(rows: i64) -> (TestDb, PgPool) {
    let db = TestDb::new(Db::Postgres).await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&db.url)
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE orders (id bigint PRIMARY KEY, address text NOT NULL);
         CREATE TABLE shipments (order_id bigint PRIMARY KEY REFERENCES orders (id),
                                 address text NOT NULL);",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO orders SELECT g, 'street ' || g FROM generate_series(1, $1) g")
        .bind(rows)
        .execute(&pool)
        .await
        .unwrap();
    (db, pool)
}

const SPLIT: &str = "INSERT INTO shipments (order_id, address) \
     SELECT o.id, o.address FROM orders o JOIN switchyard_batch b ON b.switchyard_key = o.id \
     ON CONFLICT (order_id) DO UPDATE SET address = EXCLUDED.address \
     WHERE shipments.address IS DISTINCT FROM EXCLUDED.address";

/// Orders whose shipment is missing or holds another address.
const UNSHIPPED: &str = "NOT EXISTS (SELECT 1 FROM shipments s \
     WHERE s.order_id = orders.id AND s.address = orders.address)";

fn splitter(pool: &PgPool) -> PgBackfill {
    PgBackfill::statement(pool.clone(), "orders", "id", SPLIT)
        .pending(UNSHIPPED)
        .lock_timeout(Duration::from_millis(50))
        .retries(100, Duration::from_millis(20))
}

async fn unshipped(pool: &PgPool) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM orders WHERE {UNSHIPPED}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_splits_a_table_with_the_same_passes_and_retries() {
    let (_db, pool) = split(ROWS).await;
    // A job holds orders 500..=509 for a while: the first pass skips them, the sweep waits
    // (lock timeouts, retried) and takes them once the job is done.
    let mut job = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM orders WHERE id BETWEEN 500 AND 509 FOR UPDATE")
        .fetch_all(&mut *job)
        .await
        .unwrap();
    let backfill = splitter(&pool);
    let run = tokio::spawn({
        let backfill = splitter(&pool);
        async move { run_all(&backfill, 100).await }
    });
    eventually(
        Duration::from_secs(20),
        "the first pass to pass the held rows",
        || async { unshipped(&pool).await == 10 },
    )
    .await;
    job.commit().await.unwrap();
    let batches = run.await.unwrap();
    let (first, sweep) = passes(&batches);
    assert_eq!(first, ROWS as u64, "the keyset pass examined every order");
    assert_eq!(sweep, 10, "the sweep inserted the held orders' shipments");
    let (shipments, wrong): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.address <> o.address) \
         FROM shipments s JOIN orders o ON o.id = s.order_id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (shipments, wrong),
        (ROWS, 0),
        "one right shipment per order"
    );

    // Idempotent: a second run finds nothing to do and changes nothing.
    let again = run_all(&backfill, 100).await;
    assert_eq!(passes(&again).1, 0);
    assert_eq!(unshipped(&pool).await, 0);

    // A targeted repair: three shipments go wrong (a failed dual write, say); repairing their
    // orders' keys rewrites exactly those, a key naming no order is skipped.
    sqlx::query("UPDATE shipments SET address = 'lost' WHERE order_id IN (7, 70, 700)")
        .execute(&pool)
        .await
        .unwrap();
    let keys = ["7", "70", "700", "99999999"].map(str::to_owned);
    assert_eq!(backfill.repair(&keys).await.unwrap(), 3);
    assert_eq!(unshipped(&pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_statement_is_refused_before_it_runs() {
    let (_db, pool) = split(10).await;
    let cases = [
        (
            "INSERT INTO shipments SELECT id, address FROM orders ON CONFLICT DO NOTHING",
            "does not read switchyard_batch",
        ),
        (
            "SELECT switchyard_key FROM switchyard_batch",
            "modifies nothing: give an INSERT, UPDATE, DELETE or MERGE",
        ),
        (
            "INSERT INTO shipmnets SELECT switchyard_key, 'x' FROM switchyard_batch",
            "the batch statement does not plan (check the statement",
        ),
    ];
    for (statement, expected) in cases {
        let error = PgBackfill::statement(pool.clone(), "orders", "id", statement)
            .batch(None, 5)
            .await
            .unwrap_err();
        assert!(
            matches!(error, PgBackfillError::Setup { .. }) && error.to_string().contains(expected),
            "{statement}: {error}"
        );
    }
    // A WITH list of the application's own follows the batch's.
    let with = "WITH src AS (SELECT o.id, o.address FROM orders o \
                JOIN switchyard_batch b ON b.switchyard_key = o.id) \
                INSERT INTO shipments SELECT id, address FROM src ON CONFLICT DO NOTHING";
    let batches = run_all(
        &PgBackfill::statement(pool.clone(), "orders", "id", with),
        100,
    )
    .await;
    assert_eq!(batches.iter().map(|b| b.rows).sum::<u64>(), 10);
    assert_eq!(unshipped(&pool).await, 0);
}
