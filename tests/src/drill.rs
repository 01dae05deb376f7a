//! Drills: an example service (`switchyard-examples`) migrated on PostgreSQL under load, driven
//! step by step through the `switchyard` CLI the way a release manager runs it. What every
//! example shares lives here: the server and the application's database, the load, the CLI
//! steps and the holds between them, the backfill runner, the final row-by-row check. What
//! differs (table, files, backfill) comes from the example through [`Example`].

use crate::{Db, TestClock, TestDb, TestServer, eventually};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use switchyard_client::postgres::{PgBackfill, PgBackfillError};
use switchyard_client::{BackfillOutcome, Client, Migrator};
use switchyard_examples::Entities;
use switchyard_examples::load::{Finished, Load, LoadConfig};

/// Operations the workers complete at every step before the release manager takes the next.
pub const HOLD: u64 = 300;
/// How long any step may take.
pub const WITHIN: Duration = Duration::from_secs(60);
/// The backfill's batch size.
pub const BATCH: u64 = 500;

/// An example service as a drill runs it.
pub trait Example: Entities + Sized {
    /// The migration's key.
    const KEY: &'static str;
    /// The schema files (create, expand, contract), in a folder under `examples/`.
    const DIR: &'static str;
    const FILES: [&'static str; 3];
    /// The application's service name (the migration's expected service).
    const SERVICE: &'static str;
    const ENTITY_KIND: &'static str;

    fn new(pool: PgPool, migrator: Migrator) -> Self;
    /// Fills the created table with `rows` rows in the old shape.
    fn seed(pool: &PgPool, rows: i64) -> impl Future<Output = Result<(), sqlx::Error>>;
    fn backfill(pool: PgPool) -> PgBackfill;
}

impl Example for switchyard_examples::users::Users {
    const KEY: &'static str = switchyard_examples::users::MIGRATION;
    const DIR: &'static str = "username-to-handle/migrations";
    const FILES: [&'static str; 3] = switchyard_examples::users::MIGRATION_FILES;
    const SERVICE: &'static str = "users-api";
    const ENTITY_KIND: &'static str = "user_id";

    fn new(pool: PgPool, migrator: Migrator) -> Self {
        Self::new(pool, migrator)
    }
    fn seed(pool: &PgPool, rows: i64) -> impl Future<Output = Result<(), sqlx::Error>> {
        switchyard_examples::users::seed(pool, rows)
    }
    fn backfill(pool: PgPool) -> PgBackfill {
        switchyard_examples::users::backfill(pool)
    }
}

impl Example for switchyard_examples::accounts::Accounts {
    const KEY: &'static str = switchyard_examples::accounts::MIGRATION;
    const DIR: &'static str = switchyard_examples::accounts::MIGRATIONS_DIR;
    const FILES: [&'static str; 3] = switchyard_examples::accounts::MIGRATION_FILES;
    const SERVICE: &'static str = "accounts-api";
    const ENTITY_KIND: &'static str = "account_id";

    fn new(pool: PgPool, migrator: Migrator) -> Self {
        Self::new(pool, migrator)
    }
    fn seed(pool: &PgPool, rows: i64) -> impl Future<Output = Result<(), sqlx::Error>> {
        switchyard_examples::accounts::seed(pool, rows)
    }
    fn backfill(pool: PgPool) -> PgBackfill {
        switchyard_examples::accounts::backfill(pool)
    }
}

impl Example for switchyard_examples::shipments::Shipping {
    const KEY: &'static str = switchyard_examples::shipments::MIGRATION;
    const DIR: &'static str = switchyard_examples::shipments::MIGRATIONS_DIR;
    const FILES: [&'static str; 3] = switchyard_examples::shipments::MIGRATION_FILES;
    const SERVICE: &'static str = "shipping-api";
    const ENTITY_KIND: &'static str = "order_id";

    fn new(pool: PgPool, migrator: Migrator) -> Self {
        Self::new(pool, migrator)
    }
    fn seed(pool: &PgPool, rows: i64) -> impl Future<Output = Result<(), sqlx::Error>> {
        switchyard_examples::shipments::seed(pool, rows)
    }
    fn backfill(pool: PgPool) -> PgBackfill {
        switchyard_examples::shipments::backfill(pool)
    }
}

/// A service instance connected to the test server.
pub async fn connect(srv: &TestServer, service: &str, instance: &str) -> Client {
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
pub struct Drill<E: Example> {
    pub srv: TestServer,
    pub pool: PgPool,
    pub app: Client,
    /// The application's load (taken when it finishes).
    running: Option<Load<E::Value>>,
    /// The example's service, as the final checks read it.
    pub checker: E,
    _app_db: TestDb,
}

impl<E: Example> Drill<E> {
    /// A server, the application's database with the table created and seeded, the migration
    /// created, and the service running `workers` workers (`configure` adjusts it, e.g. to plant
    /// a bug), held at `off`.
    pub async fn start(rows: i64, workers: usize, configure: impl FnOnce(E) -> E) -> Drill<E> {
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
        apply_file::<E>(&pool, 0).await;
        E::seed(&pool, rows).await.unwrap();
        assert_eq!(
            srv.cli(&[
                "migration",
                "create",
                E::KEY,
                "--entity-kind",
                E::ENTITY_KIND,
                "--backfill",
                "--expected-service",
                E::SERVICE,
                "--soak",
                "5s",
                "--reason",
                "drill",
            ])
            .await,
            0
        );
        let app = connect(&srv, E::SERVICE, &format!("{}-1", E::SERVICE)).await;
        let service = configure(E::new(pool.clone(), app.migrator(E::KEY)));
        let checker = E::new(pool.clone(), app.migrator(E::KEY));
        let config = LoadConfig {
            workers,
            seeded_rows: rows,
            ..LoadConfig::default()
        };
        let load = Load::start(Arc::new(service), config, "off");
        let drill = Drill {
            srv,
            pool,
            app,
            running: Some(load),
            checker,
            _app_db: app_db,
        };
        drill.hold("off").await;
        drill
    }

    pub fn load(&self) -> &Load<E::Value> {
        self.running.as_ref().expect("the load is running")
    }

    /// Stops the application's workers.
    pub async fn finish(&mut self) -> Finished<E::Value> {
        self.running
            .take()
            .expect("the load is running")
            .finish()
            .await
    }

    /// Applies schema file `index` (0 create, 1 expand, 2 contract) to the application's
    /// database.
    pub async fn apply(&self, index: usize) {
        apply_file::<E>(&self.pool, index).await;
    }

    async fn version(&self) -> String {
        self.srv.version_of(E::KEY).await.to_string()
    }

    /// A traffic change through the CLI, naming the version the release manager last saw.
    pub async fn change(&self, args: &[&str], reason: &str) {
        let version = self.version().await;
        let mut argv = args.to_vec();
        argv.extend(["--expected-version", &version, "--reason", reason]);
        assert_eq!(self.srv.cli(&argv).await, 0, "switchyard {argv:?}");
    }

    pub async fn advance(&self, phase: &str) {
        self.change(&["advance", E::KEY], &format!("drill: on to {phase}"))
            .await;
        self.load().set_phase(phase);
        self.hold(phase).await;
    }

    pub async fn ramp(&self, phase: &str, percents: &[&str]) {
        for p in percents {
            self.change(
                &["ramp", E::KEY, "--percent", p],
                &format!("drill: {phase} {p}%"),
            )
            .await;
            self.load().set_phase(phase);
            self.hold(phase).await;
        }
    }

    /// `switchyard record --sql-file` of schema file `index`.
    pub async fn record_sql(&self, index: usize, reason: &str) {
        let file = migration_file::<E>(index);
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
    pub async fn hold(&self, phase: &str) {
        let version = self.srv.version_of(E::KEY).await;
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
    pub async fn all_applied(&self) {
        let version = self.srv.version_of(E::KEY).await;
        eventually(WITHIN, "every instance to acknowledge", || async {
            let (_, body) = self
                .srv
                .get(&format!("/v1/migrations/{}/instances", E::KEY))
                .await;
            body["instances"].as_array().is_some_and(|list| {
                list.iter()
                    .filter(|i| i["live"] == true)
                    .all(|i| i["applied_version"].as_u64() >= Some(version))
            })
        })
        .await;
    }

    pub async fn backfill_progress(&self) -> Value {
        let (status, body) = self
            .srv
            .get(&format!("/v1/migrations/{}/backfill", E::KEY))
            .await;
        assert!(status.is_success(), "{body}");
        body
    }

    pub async fn rows_done(&self) -> u64 {
        self.backfill_progress().await["rows_done"]
            .as_u64()
            .unwrap()
    }

    pub async fn traffic_total(&self) -> Value {
        let (status, body) = self
            .srv
            .get(&format!("/v1/migrations/{}/traffic?minutes=60", E::KEY))
            .await;
        assert!(status.is_success(), "{body}");
        body["total"].clone()
    }

    pub async fn gate(&self) -> i32 {
        self.srv.cli(&["gate", E::KEY]).await
    }

    /// The whole migration went clean: no failed operation, no wrong read, the workers ran
    /// through every stage from `off` to `contracted`, shadow reads were compared and none
    /// differed.
    pub async fn assert_clean(&self, finished: &Finished<E::Value>) {
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
        let traffic = self.traffic_total().await;
        assert!(traffic["comparisons"].as_u64() > Some(0), "{traffic}");
        assert_eq!(traffic["mismatches"], 0, "{traffic}");
    }

    /// Every row of `all` (id and value, as a query of one shape read them) holds its latest
    /// write, and no row is missing.
    pub fn assert_every_row(
        &self,
        finished: &Finished<E::Value>,
        rows: i64,
        shape: &str,
        all: &[(i64, Option<E::Value>)],
    ) {
        assert_eq!(
            all.len() as i64,
            rows + finished.created.len() as i64,
            "rows in the table: the seeded ones and every insert"
        );
        let mut wrong = Vec::new();
        for (id, value) in all {
            let expected = finished.expected(&self.checker, *id);
            if value.as_ref() != Some(&expected) {
                wrong.push(format!("{id}: {value:?}, expected {expected:?}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} row(s) without their latest write in the {shape}, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }
}

pub fn migrations_dir<E: Example>() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(E::DIR)
}

pub fn migration_file<E: Example>(index: usize) -> PathBuf {
    migrations_dir::<E>().join(E::FILES[index])
}

async fn apply_file<E: Example>(pool: &PgPool, index: usize) {
    let sql = std::fs::read_to_string(migration_file::<E>(index)).unwrap();
    sqlx::raw_sql(&sql)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("applying {}: {e}", E::FILES[index]));
}

/// A backfill runner in its own client, as a separate job would run it; the batch function
/// records the cursor the first batch starts from and counts the batches started.
pub struct Runner {
    pub client: Client,
    key: &'static str,
    table: PgBackfill,
    pub first_cursor: std::sync::Mutex<Option<Option<String>>>,
    started: AtomicBool,
    batches: AtomicUsize,
    finished: AtomicUsize,
    /// Rows the finished batches reported (what this runner's checkpoints add up to).
    pub rows: AtomicU64,
}

impl Runner {
    pub async fn new<E: Example>(drill: &Drill<E>) -> Arc<Runner> {
        let service = format!("{}-backfill", E::KEY.split('.').next().unwrap_or("app"));
        let client = connect(&drill.srv, &service, &format!("{service}-1")).await;
        Arc::new(Runner {
            client,
            key: E::KEY,
            table: E::backfill(drill.pool.clone()),
            first_cursor: std::sync::Mutex::new(None),
            started: AtomicBool::new(false),
            batches: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            rows: AtomicU64::new(0),
        })
    }

    /// Batches started and finished.
    pub fn batch_counts(&self) -> (usize, usize) {
        (
            self.batches.load(Ordering::SeqCst),
            self.finished.load(Ordering::SeqCst),
        )
    }

    pub async fn run(self: Arc<Self>) -> BackfillOutcome {
        let runner = self
            .client
            .backfill(self.key)
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
