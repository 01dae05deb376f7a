//! The example services of the other migration patterns, each through its whole migration on
//! PostgreSQL under load, driven through the `switchyard` CLI: expand applied and recorded, dual
//! writes ramped, the backfill run, reads moved over stage by stage, the gate passed after the
//! soak, the contract applied and recorded, with four workers reading, updating and inserting
//! the whole time. Each must end with no failed operation, no wrong read, no shadow mismatch,
//! and every row's latest write in the new shape. The per-stage tables are printed (run with
//! `--nocapture`; `BENCHMARKS.md` quotes them).
//!
//! - Adding a required column (`examples/src/accounts.rs`): the locale moves from a JSON blob
//!   to `accounts.locale`, nullable at the expand, `NOT NULL` at the contract through a
//!   `CHECK … NOT VALID` validated under load; dual writes in one transaction.
//! - A table split (`examples/src/shipments.rs`): the shipping address moves from `orders` to
//!   a `shipments` table linked both ways; the backfill inserts each order's shipment and links
//!   the order to it in one statement; orders are created on both sides whichever leads; the
//!   order's link is `NOT NULL` at the contract.

use switchyard_client::BackfillOutcome;
use switchyard_examples::accounts::{self, Accounts};
use switchyard_examples::shipments::{self, Shipping};
use switchyard_tests::drill::{Drill, Example, Runner, WITHIN};
use switchyard_tests::eventually;

const ROWS: i64 = 20_000;
const WORKERS: usize = 4;

/// From expand to contract, every stage ramped to 100%, the gate passed. Returns the drill,
/// its workers stopped, and what they did.
async fn migrate<E: Example>(
    rows: i64,
) -> (
    Drill<E>,
    switchyard_examples::load::Finished<<E as switchyard_examples::Entities>::Value>,
) {
    let mut drill = Drill::<E>::start(rows, WORKERS, |e| e).await;
    drill.apply(1).await;
    drill.record_sql(1, "patterns: expand applied").await;
    drill.advance("dual_write").await;
    drill.ramp("dual_write", &["25", "100"]).await;

    drill.load().set_phase("backfill");
    drill.all_applied().await;
    let runner = Runner::new(&drill).await;
    let outcome = runner.clone().run().await;
    assert!(
        matches!(outcome, BackfillOutcome::Completed { .. }),
        "{outcome:?}"
    );
    drill.hold("backfill").await;

    for stage in ["shadow", "live", "rampdown"] {
        drill.advance(stage).await;
        drill.ramp(stage, &["50", "100"]).await;
    }
    drill.advance("complete").await;
    drill.ramp("complete", &["100"]).await;
    assert_eq!(drill.gate().await, 1, "the gate refuses during the soak");
    eventually(WITHIN, "the gate to pass after the soak", || async {
        drill.gate().await == 0
    })
    .await;

    drill.apply(2).await;
    drill.record_sql(2, "patterns: contract applied").await;
    drill.load().set_phase("contracted");
    drill.hold("contracted").await;
    let finished = drill.finish().await;
    println!("\n{}, per stage:\n{}", E::KEY, finished.stats.report());

    drill.assert_clean(&finished).await;
    (drill, finished)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_column_from_expand_to_contract_under_load() {
    let (drill, finished) = migrate::<Accounts>(ROWS).await;
    let all = accounts::new_shape(&drill.pool).await.unwrap();
    drill.assert_every_row(&finished, ROWS, "new shape (accounts.locale)", &all);

    // The column is required now, by the constraint the contract validated.
    let not_null: bool = sqlx::query_scalar(
        "SELECT attnotnull FROM pg_attribute \
         WHERE attrelid = 'accounts'::regclass AND attname = 'locale'",
    )
    .fetch_one(&drill.pool)
    .await
    .unwrap();
    assert!(not_null, "accounts.locale is NOT NULL after the contract");
    // Which is what an old writer, inserting without it, now runs into: why the contract waits
    // behind the gate until no client writes only the old shape.
    let old_writer =
        sqlx::query("INSERT INTO accounts (name, settings) VALUES ('old', '{\"locale\": \"de\"}')")
            .execute(&drill.pool)
            .await
            .expect_err("an old-shape insert fails after the contract");
    assert_eq!(
        old_writer
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("23502"),
        "{old_writer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_split_from_expand_to_contract_under_load() {
    let (drill, finished) = migrate::<Shipping>(ROWS).await;
    let all = shipments::new_shape(&drill.pool).await.unwrap();
    drill.assert_every_row(&finished, ROWS, "new shape (the order's shipment)", &all);

    // One shipment per order, each linking back to the order that links to it.
    let (shipments, crossed): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE o.id IS DISTINCT FROM s.order_id) \
         FROM shipments s LEFT JOIN orders o ON o.shipment_id = s.id",
    )
    .fetch_one(&drill.pool)
    .await
    .unwrap();
    assert_eq!(shipments, all.len() as i64, "a shipment for every order");
    assert_eq!(crossed, 0, "links agree both ways");
    // The order's link is required now: an order without its shipment is refused.
    let unlinked = sqlx::query("INSERT INTO orders (customer) VALUES ('old writer')")
        .execute(&drill.pool)
        .await
        .expect_err("an order without a shipment fails after the contract");
    assert_eq!(
        unlinked
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("23502"),
        "{unlinked}"
    );
}
