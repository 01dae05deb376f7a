//! The migration drill: a real expand/contract migration of `users.username` → `users.handle`
//! on PostgreSQL, under load, from expand to contract, driven step by step through the
//! `switchyard` CLI the way a release manager runs it.
//!
//! - The application is the example users service (`examples/src/users.rs`): four workers
//!   reading, updating and inserting through the migrator the whole time, each checking every
//!   read against the latest value it wrote (see `examples/src/load.rs`).
//! - The schema changes are the example's SQL files (`examples/username-to-handle/migrations`),
//!   recorded with `switchyard record --sql-file` and, for the contract, behind
//!   `switchyard gate --migrations-dir`.
//! - The backfill is the client's runner on the Postgres flavour, paused and resumed once with
//!   `switchyard backfill pause|resume`, and killed (its task and client dropped mid-run) and
//!   restarted once.
//!
//! The negative drill writes a wrong value to the new shape: shadow reads report mismatches,
//! the gate refuses, and ramping down and stepping back restores service on the old shape with
//! every write kept.
//!
//! Both need Postgres (the application's database and the server's); they fail loudly without
//! it, like every Postgres test here.

use sqlx::PgPool;
use std::sync::atomic::Ordering;
use switchyard_client::BackfillOutcome;
use switchyard_examples::users::{self, Users};
use switchyard_tests::drill::{BATCH, Drill, HOLD, Runner, WITHIN, migrations_dir};
use switchyard_tests::eventually;

const KEY: &str = users::MIGRATION;
const ROWS: i64 = 100_000;
const WORKERS: usize = 4;

/// Every user's value in `column` (the old shape's `username` or the new shape's `handle`).
async fn column(pool: &PgPool, column: &str) -> Vec<(i64, Option<String>)> {
    sqlx::query_as(&format!("SELECT id, {column} FROM users ORDER BY id"))
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_from_expand_to_contract_under_load() {
    let mut drill = Drill::<Users>::start(ROWS, WORKERS, |u| u).await;

    // Expand, recorded from the applied file.
    drill.apply(1).await;
    drill
        .record_sql(1, "drill: 0002_add_handle.sql applied")
        .await;

    // Dual writes, ramped.
    drill.advance("dual_write").await;
    drill
        .ramp("dual_write", &["1", "5", "25", "50", "100"])
        .await;

    // The backfill: paused and resumed once, killed and restarted once.
    drill.load().set_phase("backfill");
    drill.all_applied().await;
    let first = Runner::new(&drill).await;
    let task = tokio::spawn(first.clone().run());
    eventually(WITHIN, "the backfill to make progress", || async {
        drill.rows_done().await >= 15_000
    })
    .await;
    drill
        .change(&["backfill", "pause", KEY], "drill: pause the backfill")
        .await;
    let paused_at = drill.srv.version_of(KEY).await;
    tokio::time::timeout(WITHIN, first.client.wait_for_version(paused_at))
        .await
        .unwrap();
    // The batch running when the pause arrived finishes and is checkpointed: the runner is
    // then between batches with the pause applied, where it waits.
    eventually(
        WITHIN,
        "the paused runner to checkpoint its last batch",
        || async {
            let (started, finished) = first.batch_counts();
            started == finished && drill.rows_done().await == first.rows.load(Ordering::SeqCst)
        },
    )
    .await;
    let paused_batches = first.batch_counts().0;
    let paused_rows = drill.rows_done().await;
    // Changes the runner wakes up for (it re-checks the pause on each) start no batch.
    for i in 0..2 {
        let other = format!("orders.unrelated-{i}");
        assert_eq!(
            drill
                .srv
                .cli(&[
                    "migration",
                    "create",
                    &other,
                    "--reason",
                    "drill: unrelated"
                ])
                .await,
            0
        );
        let version = drill.srv.version_of(&other).await;
        tokio::time::timeout(WITHIN, first.client.wait_for_version(version))
            .await
            .unwrap();
        assert_eq!(
            (first.batch_counts().0, drill.rows_done().await),
            (paused_batches, paused_rows),
            "no batch starts while paused"
        );
    }
    assert!(drill.backfill_progress().await["paused"] == true);
    assert!(!task.is_finished());
    drill
        .change(&["backfill", "resume", KEY], "drill: resume the backfill")
        .await;
    eventually(WITHIN, "the backfill to go on after resume", || async {
        drill.rows_done().await > paused_rows
    })
    .await;
    eventually(WITHIN, "the backfill to get further", || async {
        drill.rows_done().await >= 50_000
    })
    .await;
    // Killed: the task (and with it a batch in flight, its transaction rolled back) and the
    // runner's client are dropped.
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    drop(first);
    let checkpoint = drill.backfill_progress().await;
    assert_eq!(checkpoint["status"], "running");
    let second = Runner::new(&drill).await;
    let outcome = second.clone().run().await;
    assert!(
        matches!(outcome, BackfillOutcome::Completed { .. }),
        "{outcome:?}"
    );
    // The restarted runner resumes at the checkpoint read at the kill, or at the next one if
    // the killed runner's last checkpoint was already on its way: never from the start.
    let key_of = |cursor: &str| -> u64 {
        let key = cursor.strip_prefix("keyset:").expect("a keyset position");
        key.parse().expect("an id")
    };
    let at_kill = key_of(checkpoint["cursor"].as_str().unwrap());
    let resumed_from = second.first_cursor.lock().unwrap().clone().unwrap();
    let resumed = key_of(resumed_from.as_deref().expect("a resumed cursor"));
    assert!(
        at_kill >= 50_000 && (at_kill..=at_kill + BATCH).contains(&resumed),
        "the restarted runner resumes at the checkpoint: killed at {at_kill}, resumed at {resumed}"
    );
    // Every row is backfilled: a row can look pending only for the instant between a
    // worker's two writes (old shape, then new), so whatever looks pending now must be written
    // through shortly.
    let pending: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE handle IS DISTINCT FROM username")
            .fetch_all(&drill.pool)
            .await
            .unwrap();
    assert!(pending.len() <= WORKERS, "rows not backfilled: {pending:?}");
    eventually(WITHIN, "rows mid-write to be written through", || async {
        let still: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM users WHERE id = ANY($1) AND handle IS DISTINCT FROM username",
        )
        .bind(&pending)
        .fetch_one(&drill.pool)
        .await
        .unwrap();
        still == 0
    })
    .await;
    drill.hold("backfill").await;

    // Reads move over: shadow, live, rampdown, complete, each ramped.
    for stage in ["shadow", "live", "rampdown"] {
        drill.advance(stage).await;
        drill.ramp(stage, &["10", "50", "100"]).await;
    }
    drill.advance("complete").await;
    drill.ramp("complete", &["10", "50"]).await;

    // The gate: refused while the soak runs (asked right as complete reaches 100%, when the
    // soak starts), passing after it.
    drill
        .change(&["ramp", KEY, "--percent", "100"], "drill: complete 100%")
        .await;
    assert_eq!(drill.gate().await, 1, "the gate refuses before the soak");
    let (_, gate) = drill.srv.get(&format!("/v1/migrations/{KEY}/gate")).await;
    let soak = gate["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "soak");
    assert_eq!(soak.unwrap()["passed"], false, "{gate}");
    drill.hold("complete").await;
    eventually(WITHIN, "the gate to pass after the soak", || async {
        drill.gate().await == 0
    })
    .await;
    let applied = std::env::temp_dir().join(format!("drill-applied-{}", std::process::id()));
    std::fs::write(
        &applied,
        format!(
            "{}\n{}\n",
            users::MIGRATION_FILES[0],
            users::MIGRATION_FILES[1]
        ),
    )
    .unwrap();
    let dir = migrations_dir::<Users>();
    assert_eq!(
        drill
            .srv
            .cli(&[
                "gate",
                "--migrations-dir",
                dir.to_str().unwrap(),
                "--applied-list",
                applied.to_str().unwrap(),
            ])
            .await,
        0,
        "the deploy pipeline's gate passes the contract file"
    );
    std::fs::remove_file(&applied).ok();

    // Contract, under load.
    drill.apply(2).await;
    drill
        .record_sql(2, "drill: 0003_drop_username.sql applied")
        .await;
    drill.load().set_phase("contracted");
    drill.hold("contracted").await;

    let finished = drill.finish().await;
    println!("\nThe drill, per stage:\n{}", finished.stats.report());
    drill.assert_clean(&finished).await;
    let all = column(&drill.pool, "handle").await;
    drill.assert_every_row(&finished, ROWS, "new shape (handle)", &all);
}

/// The same migration with a bug in the new shape's writes: shadow reads report mismatches,
/// the gate refuses, and the rollback (ramp down, step back) restores service on the old shape
/// without losing a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_drill_wrong_new_shape_is_caught_and_rolled_back() {
    const ROWS: i64 = 20_000;
    let mut drill = Drill::<Users>::start(ROWS, WORKERS, Users::with_corrupt_new_writes).await;
    drill.apply(1).await;
    drill
        .record_sql(1, "drill: 0002_add_handle.sql applied")
        .await;
    drill.advance("dual_write").await;
    drill.ramp("dual_write", &["100"]).await;
    drill.load().set_phase("backfill");
    drill.all_applied().await;
    let runner = Runner::new(&drill).await;
    let outcome = runner.clone().run().await;
    assert!(
        matches!(outcome, BackfillOutcome::Completed { .. }),
        "{outcome:?}"
    );
    drill.hold("backfill").await;

    // Shadow: the comparisons find the rows written since the backfill.
    drill.advance("shadow").await;
    drill.ramp("shadow", &["100"]).await;
    eventually(WITHIN, "shadow mismatches to be reported", || async {
        drill.traffic_total().await["mismatches"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(drill.srv.cli(&["traffic", KEY]).await, 0);

    // A release manager who goes on anyway: at live the gate refuses, naming the mismatches.
    drill.advance("live").await;
    drill.ramp("live", &["25"]).await;
    assert_eq!(drill.gate().await, 1, "the gate refuses");
    eventually(
        WITHIN,
        "the gate to cite the live window's mismatches",
        || async {
            let (_, gate) = drill.srv.get(&format!("/v1/migrations/{KEY}/gate")).await;
            gate["checks"].as_array().is_some_and(|checks| {
                checks.iter().any(|c| {
                    c["id"] == "no_shadow_mismatch"
                        && c["passed"] == false
                        && c["evidence"]
                            .as_str()
                            .is_some_and(|e| e.contains("mismatched"))
                })
            })
        },
    )
    .await;

    // The rollback: live down to 0% and back to shadow, shadow down to 0% and back to
    // dual_write. Reads are served from the old shape again.
    drill.ramp("live", &["0"]).await;
    drill
        .change(&["retreat", KEY], "drill: mismatches, back to shadow")
        .await;
    drill.ramp("shadow", &["0"]).await;
    drill
        .change(&["retreat", KEY], "drill: back to dual_write until fixed")
        .await;
    drill.load().set_phase("rolled back");
    drill.hold("rolled back").await;
    let (_, migration) = drill.srv.get(&format!("/v1/migrations/{KEY}")).await;
    assert_eq!(migration["stage"], "dual_write", "{migration}");

    let finished = drill.finish().await;
    println!(
        "\nThe negative drill, per stage:\n{}",
        finished.stats.report()
    );
    let total = finished.stats.total();
    assert_eq!(total.failed, 0, "failed operations: {:?}", total.errors);
    for stage in ["off", "dual_write", "backfill", "shadow", "rolled back"] {
        let s = finished.stats.phase(stage).unwrap();
        assert_eq!(s.wrong_reads, 0, "{stage}: the old shape served every read");
    }
    assert!(finished.stats.phase("rolled back").unwrap().operations() >= HOLD);
    // No data lost: the old shape holds every row's latest write.
    let all = column(&drill.pool, "username").await;
    drill.assert_every_row(&finished, ROWS, "old shape (username)", &all);
}
