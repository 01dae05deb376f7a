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

use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use switchyard_client::postgres::{PgBackfill, PgBackfillError};
use switchyard_client::{BackfillOutcome, Client};
use switchyard_examples::load::{Finished, Load, LoadConfig};
use switchyard_examples::users::{self, Users};
use switchyard_tests::{Db, TestClock, TestDb, TestServer, eventually};

const KEY: &str = users::MIGRATION;
const ROWS: i64 = 100_000;
const WORKERS: usize = 4;
/// Operations the workers complete at every step before the release manager takes the next.
const HOLD: u64 = 300;
const WITHIN: Duration = Duration::from_secs(60);
/// The backfill's batch size.
const BATCH: u64 = 500;

fn migrations_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/username-to-handle/migrations")
}

fn migration_file(index: usize) -> PathBuf {
    migrations_dir().join(users::MIGRATION_FILES[index])
}

async fn apply(pool: &PgPool, index: usize) {
    let sql = std::fs::read_to_string(migration_file(index)).unwrap();
    sqlx::raw_sql(&sql)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("applying {}: {e}", users::MIGRATION_FILES[index]));
}

/// A service instance connected to the test server.
async fn connect(srv: &TestServer, service: &str, instance: &str) -> Client {
    Client::builder(
        format!("http://{}", srv.server.grpc_addr),
        srv.token.as_str(),
        service,
    )
    .instance_id(instance)
    .heartbeat_interval(Duration::from_millis(500))
    .telemetry_interval(Duration::from_millis(500))
    .connect()
    .await
    .expect("connecting the client")
}

/// The release manager's side: CLI commands, each checked, and the hold after each step.
struct Drill {
    srv: TestServer,
    pool: PgPool,
    app: Client,
    /// The application's load (taken when it finishes).
    running: Option<Load<String>>,
    /// The example's users, as the final checks read them.
    users: Users,
    _app_db: TestDb,
}

impl Drill {
    async fn start(rows: i64, users_of: impl FnOnce(Users) -> Users) -> Drill {
        let srv = TestServer::start_on(
            Arc::new(TestDb::new(Db::Postgres).await),
            TestClock::running(),
        )
        .await;
        let app_db = TestDb::new(Db::Postgres).await;
        let pool = PgPoolOptions::new()
            .max_connections(12)
            .connect(&app_db.url)
            .await
            .unwrap();
        apply(&pool, 0).await;
        users::seed(&pool, rows).await.unwrap();
        assert_eq!(
            srv.cli(&[
                "migration",
                "create",
                KEY,
                "--entity-kind",
                "user_id",
                "--backfill",
                "--expected-service",
                "users-api",
                "--soak",
                "5s",
                "--reason",
                "drill: rename username to handle",
            ])
            .await,
            0
        );
        let app = connect(&srv, "users-api", "users-api-1").await;
        let users = users_of(Users::new(pool.clone(), app.migrator(KEY)));
        let checker = Users::new(pool.clone(), app.migrator(KEY));
        let config = LoadConfig {
            workers: WORKERS,
            seeded_rows: rows,
            ..LoadConfig::default()
        };
        let load = Load::start(Arc::new(users), config, "off");
        let drill = Drill {
            srv,
            pool,
            app,
            running: Some(load),
            users: checker,
            _app_db: app_db,
        };
        drill.hold("off").await;
        drill
    }

    fn load(&self) -> &Load<String> {
        self.running.as_ref().expect("the load is running")
    }

    /// Stops the application's workers.
    async fn finish(&mut self) -> Finished<String> {
        self.running
            .take()
            .expect("the load is running")
            .finish()
            .await
    }

    async fn version(&self) -> String {
        self.srv.version_of(KEY).await.to_string()
    }

    /// A traffic change through the CLI, naming the version the release manager last saw.
    async fn change(&self, args: &[&str], reason: &str) {
        let version = self.version().await;
        let mut argv = args.to_vec();
        argv.extend(["--expected-version", &version, "--reason", reason]);
        assert_eq!(self.srv.cli(&argv).await, 0, "switchyard {argv:?}");
    }

    async fn advance(&self, phase: &str) {
        self.change(&["advance", KEY], &format!("drill: on to {phase}"))
            .await;
        self.load().set_phase(phase);
        self.hold(phase).await;
    }

    async fn ramp(&self, phase: &str, percents: &[&str]) {
        for p in percents {
            self.change(
                &["ramp", KEY, "--percent", p],
                &format!("drill: {phase} {p}%"),
            )
            .await;
            self.load().set_phase(phase);
            self.hold(phase).await;
        }
    }

    async fn record_sql(&self, index: usize, reason: &str) {
        let file = migration_file(index);
        let file = file.to_str().unwrap();
        assert_eq!(
            self.srv
                .cli(&["record", "--sql-file", file, "--reason", reason])
                .await,
            0
        );
    }

    /// Waits until the application runs the current state and has done `HOLD` more operations
    /// in it.
    async fn hold(&self, phase: &str) {
        let version = self.srv.version_of(KEY).await;
        tokio::time::timeout(WITHIN, self.app.wait_for_version(version))
            .await
            .expect("the application applies the change");
        let target = self.load().operations_in(phase) + HOLD;
        let deadline = tokio::time::Instant::now() + WITHIN;
        while self.load().operations_in(phase) < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the workers stalled at {phase} ({} operations, waiting for {target}):\n{}",
                self.load().operations_in(phase),
                self.load().stats().report()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every live instance acknowledged the current version (what rule 3 asks
    /// before a backfill starts).
    async fn all_applied(&self) {
        let version = self.srv.version_of(KEY).await;
        eventually(WITHIN, "every instance to acknowledge", || async {
            let (_, body) = self
                .srv
                .get(&format!("/v1/migrations/{KEY}/instances"))
                .await;
            body["instances"].as_array().is_some_and(|list| {
                list.iter()
                    .filter(|i| i["live"] == true)
                    .all(|i| i["applied_version"].as_u64() >= Some(version))
            })
        })
        .await;
    }

    async fn backfill_progress(&self) -> Value {
        let (status, body) = self
            .srv
            .get(&format!("/v1/migrations/{KEY}/backfill"))
            .await;
        assert!(status.is_success(), "{body}");
        body
    }

    async fn rows_done(&self) -> u64 {
        self.backfill_progress().await["rows_done"]
            .as_u64()
            .unwrap()
    }

    async fn traffic_total(&self) -> Value {
        let (status, body) = self
            .srv
            .get(&format!("/v1/migrations/{KEY}/traffic?minutes=60"))
            .await;
        assert!(status.is_success(), "{body}");
        body["total"].clone()
    }

    async fn gate(&self) -> i32 {
        self.srv.cli(&["gate", KEY]).await
    }

    /// Every row holds its latest write in `column`, and no row is missing.
    async fn assert_every_row(&self, finished: &Finished<String>, column: &str, rows: i64) {
        let sql = format!("SELECT id, {column} FROM users ORDER BY id");
        let all = sqlx::query(&sql).fetch_all(&self.pool).await.unwrap();
        assert_eq!(
            all.len() as i64,
            rows + finished.created.len() as i64,
            "rows in the table: the seeded ones and every insert"
        );
        let mut wrong = Vec::new();
        for row in &all {
            let id: i64 = row.get(0);
            let value: Option<String> = row.get(1);
            let expected = finished.expected(&self.users, id);
            if value.as_deref() != Some(expected.as_str()) {
                wrong.push(format!("{id}: {value:?}, expected {expected:?}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} row(s) without their latest write in {column}, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }
}

/// A backfill runner in its own client, as a separate job would run it; the batch function
/// records the cursor the first batch starts from and counts the batches started.
struct Runner {
    client: Client,
    table: PgBackfill,
    first_cursor: std::sync::Mutex<Option<Option<String>>>,
    started: AtomicBool,
    batches: AtomicUsize,
    finished: AtomicUsize,
    /// Rows the finished batches reported (what this runner's checkpoints add up to).
    rows: AtomicU64,
}

impl Runner {
    async fn new(drill: &Drill) -> Arc<Runner> {
        let client = connect(&drill.srv, "users-backfill", "users-backfill-1").await;
        Arc::new(Runner {
            client,
            table: users::backfill(drill.pool.clone()),
            first_cursor: std::sync::Mutex::new(None),
            started: AtomicBool::new(false),
            batches: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            rows: AtomicU64::new(0),
        })
    }

    /// Batches started and finished.
    fn batch_counts(&self) -> (usize, usize) {
        (
            self.batches.load(Ordering::SeqCst),
            self.finished.load(Ordering::SeqCst),
        )
    }

    async fn run(self: Arc<Self>) -> BackfillOutcome {
        let runner = self
            .client
            .backfill(KEY)
            .batch_size(BATCH)
            .pause_between_batches(Duration::from_millis(15))
            .total_estimate(self.table.estimate_rows().await.unwrap());
        runner
            .run(|cursor, limit| {
                let this = self.clone();
                async move {
                    this.batches.fetch_add(1, Ordering::SeqCst);
                    if !this.started.swap(true, Ordering::SeqCst) {
                        *this.first_cursor.lock().unwrap() = Some(cursor.clone());
                    }
                    let batch = this.table.batch(cursor, limit).await?;
                    this.rows.fetch_add(batch.rows, Ordering::SeqCst);
                    this.finished.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, PgBackfillError>(batch)
                }
            })
            .await
            .expect("the backfill runs")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_from_expand_to_contract_under_load() {
    let mut drill = Drill::start(ROWS, |u| u).await;

    // Expand, recorded from the applied file.
    apply(&drill.pool, 1).await;
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
    let dir = migrations_dir();
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
    apply(&drill.pool, 2).await;
    drill
        .record_sql(2, "drill: 0003_drop_username.sql applied")
        .await;
    drill.load().set_phase("contracted");
    drill.hold("contracted").await;

    let finished = drill.finish().await;
    println!("\nThe drill, per stage:\n{}", finished.stats.report());
    let total = finished.stats.total();
    assert_eq!(total.failed, 0, "failed operations: {:?}", total.errors);
    assert_eq!(total.wrong_reads, 0, "reads that missed the latest write");
    for stage in [
        "off",
        "dual_write",
        "backfill",
        "shadow",
        "live",
        "rampdown",
        "complete",
        "contracted",
    ] {
        assert!(
            finished
                .stats
                .phase(stage)
                .is_some_and(|s| s.operations() >= HOLD),
            "the workers ran through {stage}"
        );
    }
    let traffic = drill.traffic_total().await;
    assert!(traffic["comparisons"].as_u64() > Some(0), "{traffic}");
    assert_eq!(traffic["mismatches"], 0, "{traffic}");
    drill.assert_every_row(&finished, "handle", ROWS).await;
}

/// The same migration with a bug in the new shape's writes: shadow reads report mismatches,
/// the gate refuses, and the rollback (ramp down, step back) restores service on the old shape
/// without losing a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_drill_wrong_new_shape_is_caught_and_rolled_back() {
    const ROWS: i64 = 20_000;
    let mut drill = Drill::start(ROWS, Users::with_corrupt_new_writes).await;
    apply(&drill.pool, 1).await;
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
    drill.assert_every_row(&finished, "username", ROWS).await;
}
