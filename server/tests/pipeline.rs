//! `examples/pipeline/deploy.sh` run for real: bash, psql against a fresh PostgreSQL database,
//! the real `switchyard` binary and a real server (started with `--min-soak 0s`). Two releases:
//! the first adds the new column (expand), the second brings the drop (contract), which the gate
//! holds back until the migration is complete at 100% for its (1 s) soak.
//!
//! Postgres is found at `SWITCHYARD_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`); the test fails loudly when it cannot reach it or
//! has no `psql`.

mod common;

use common::{BIN, Served, terminate};
use serde_json::Value;
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const KEY: &str = "users.username-to-handle";
const CREATE_USERS: &str = "20261001000000_create_users.sql";
const ADD_HANDLE: &str = "20261101000000_add_handle.sql";
const DROP_USERNAME: &str = "20261201000000_drop_username.sql";

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipeline")
}

/// A fresh temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("switchyard-pipeline-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `switchyard serve --min-soak 0s` on port 0 with a SQLite file, killed if the test panics.
struct Server {
    served: Option<Served>,
    http: String,
    admin: String,
}

impl Server {
    fn start(db: &Path) -> Self {
        let served = common::serve_with(
            &format!("sqlite://{}", db.display()),
            None,
            &["--min-soak", "0s"],
        );
        let http = served.http.clone();
        let admin = served
            .token
            .clone()
            .expect("the first start prints an admin token");
        Self {
            served: Some(served),
            http,
            admin,
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("SWITCHYARD_SERVER", &self.http)
            .env("SWITCHYARD_TOKEN", &self.admin)
            .output()
            .expect("running the CLI")
    }

    fn cli_ok(&self, args: &[&str]) -> Output {
        let o = self.cli(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", both(&o));
        o
    }

    fn show(&self) -> Value {
        serde_json::from_slice(&self.cli_ok(&["migration", "show", KEY, "--json"]).stdout).unwrap()
    }

    /// Advances and ramps each stage to 100%, from the current one, up to `last`.
    fn drive_to(&self, last: &str) {
        loop {
            let m = self.show();
            let stage = m["stage"].as_str().unwrap().to_owned();
            if m["rollout_bp"] != 10_000 && stage != "off" {
                self.cli_ok(&[
                    "ramp",
                    KEY,
                    "--percent",
                    "100",
                    "--latest",
                    "--reason",
                    "all entities",
                ]);
            }
            if stage == last {
                return;
            }
            self.cli_ok(&["advance", KEY, "--latest", "--reason", "next stage"]);
        }
    }

    /// Polls `GET /v1/migrations/{key}/gate` until it passes (bounded).
    fn wait_for_gate(&self) {
        let url = format!("{}/v1/migrations/{KEY}/gate", self.http);
        block_on(async {
            let http = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let report: Value = http
                    .get(&url)
                    .bearer_auth(&self.admin)
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if report["passed"] == true {
                    return;
                }
                assert!(Instant::now() < deadline, "the gate still fails: {report}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }
}

impl Server {
    /// SIGTERM, expecting a clean exit.
    fn stop(mut self) {
        terminate(self.served.take().unwrap());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut served) = self.served.take() {
            let _ = served.child.kill();
            let _ = served.child.wait();
        }
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn both(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A database of its own on the Postgres server, dropped when this is dropped.
struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// Panics when Postgres is unreachable.
    fn create(suffix: &str) -> Self {
        let admin = common::postgres_admin_url();
        let name = format!("switchyard_pipeline_{}_{suffix}", std::process::id());
        block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "the pipeline test needs PostgreSQL at {admin} (set \
                     SWITCHYARD_TEST_POSTGRES): {e}"
                    )
                });
            for s in [
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("CREATE DATABASE {name}"),
            ] {
                sqlx::query(&s).execute(&mut conn).await.unwrap();
            }
            conn.close().await.unwrap();
        });
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Self { admin, name, url }
    }

    /// The columns of `table`, sorted.
    fn columns(&self, table: &str) -> Vec<String> {
        self.query(&format!(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = '{table}' ORDER BY column_name"
        ))
    }

    fn query(&self, sql: &str) -> Vec<String> {
        block_on(async {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            let rows: Vec<(String,)> = sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap();
            conn.close().await.unwrap();
            rows.into_iter().map(|(c,)| c).collect()
        })
    }

    fn execute(&self, sql: &str) {
        block_on(async {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        })
    }
}

fn need_psql() {
    let psql = Command::new("psql").arg("--version").output();
    assert!(
        psql.is_ok_and(|o| o.status.success()),
        "the pipeline test needs psql on PATH"
    );
}

/// Runs deploy.sh over `migrations` against `pg`, with `token`.
fn deploy(pg: &PgDatabase, server: &Server, token: &str, migrations: &Path, list: &Path) -> Output {
    Command::new("bash")
        .arg(example_dir().join("deploy.sh"))
        .env("DATABASE_URL", &pg.url)
        .env("SWITCHYARD", BIN)
        .env("SWITCHYARD_SERVER", &server.http)
        .env("SWITCHYARD_TOKEN", token)
        .env("MIGRATIONS_DIR", migrations)
        .env("APPLIED_LIST", list)
        .env_remove("SWITCHYARD_TARGET_DATABASE_URL")
        .output()
        .expect("running deploy.sh")
}

/// Creates a token with `role` and returns it.
fn token(server: &Server, role: &str) -> String {
    let created: Value = serde_json::from_slice(
        &server
            .cli_ok(&["token", "create", role, "--role", role, "--json"])
            .stdout,
    )
    .unwrap();
    created["token"].as_str().unwrap().to_owned()
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        block_on(async move {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
        });
    }
}

#[test]
fn deploy_sh_applies_the_contract_migration_only_once_the_gate_passes() {
    let pg = PgDatabase::create("releases");
    need_psql();
    let tmp = TempDir::new("releases");
    let server = Server::start(&tmp.0.join("switchyard.db"));
    let gate_token = token(&server, "gate");
    server.cli_ok(&[
        "migration",
        "create",
        KEY,
        "--soak",
        "1s",
        "--entity-kind",
        "user_id",
        "--reason",
        "rename username to handle",
    ]);

    let migrations = tmp.0.join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    let release = |files: &[&str]| {
        for f in files {
            std::fs::copy(example_dir().join("migrations").join(f), migrations.join(f)).unwrap();
        }
    };
    let applied_list = tmp.0.join("applied.txt");
    let applied = || std::fs::read_to_string(&applied_list).unwrap_or_default();
    let deploy = || deploy(&pg, &server, &gate_token, &migrations, &applied_list);

    // Release 1: the table and the new column; the expand file is recorded.
    release(&[CREATE_USERS, ADD_HANDLE]);
    let o = deploy();
    assert_eq!(o.status.code(), Some(0), "release 1: {}", both(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for expected in [
        &format!("applying {CREATE_USERS}"),
        &format!("applying {ADD_HANDLE}"),
        &format!("recorded expand_applied for {KEY} ({ADD_HANDLE})"),
    ] {
        assert!(
            out.contains(expected.as_str()),
            "{expected:?}: {}",
            both(&o)
        );
    }
    assert_eq!(pg.columns("users"), ["handle", "id", "username"]);
    assert_eq!(applied(), format!("{CREATE_USERS}\n{ADD_HANDLE}\n"));
    let m = server.show();
    assert_eq!(m["expand_applied"], true);
    assert_eq!(m["stage"], "off");
    pg.execute("INSERT INTO users (username, handle) VALUES ('ada', 'ada')");

    // Release 2 brings the drop while the migration is only at live: the deploy stops before
    // touching the schema.
    server.drive_to("live");
    release(&[DROP_USERNAME]);
    let o = deploy();
    assert_eq!(
        o.status.code(),
        Some(1),
        "release 2, too early: {}",
        both(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("FAIL    {DROP_USERNAME}: contracts {KEY}"))
            && out.contains("gate FAILS")
            && out.contains("→ ramp complete to 100%")
            && !out.contains("applying"),
        "{}",
        both(&o)
    );
    assert_eq!(pg.columns("users"), ["handle", "id", "username"]);
    assert_eq!(applied(), format!("{CREATE_USERS}\n{ADD_HANDLE}\n"));
    assert_eq!(server.show()["stage"], "live");

    // Complete at 100% and soaked: the same deploy applies the drop and records contracted.
    server.drive_to("complete");
    server.wait_for_gate();
    let o = deploy();
    assert_eq!(
        o.status.code(),
        Some(0),
        "release 2, gate passed: {}",
        both(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("PASS    {DROP_USERNAME}"))
            && out.contains(&format!("applying {DROP_USERNAME}"))
            && out.contains(&format!("recorded contracted for {KEY} ({DROP_USERNAME})"))
            && !out.contains(&format!("applying {ADD_HANDLE}")),
        "{}",
        both(&o)
    );
    assert_eq!(pg.columns("users"), ["handle", "id"]);
    assert_eq!(pg.query("SELECT handle FROM users"), ["ada"]);
    assert_eq!(
        applied(),
        format!("{CREATE_USERS}\n{ADD_HANDLE}\n{DROP_USERNAME}\n")
    );
    let contracted = server.show();
    assert_eq!(contracted["stage"], "contracted");

    // A rerun applies nothing and changes nothing.
    let o = deploy();
    assert_eq!(o.status.code(), Some(0), "rerun: {}", both(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    // Every header is recorded again, and each says it already was: nothing new.
    assert!(
        !out.contains("applying")
            && !out.contains("recorded expand")
            && !out.contains("recorded contracted"),
        "{}",
        both(&o)
    );
    assert!(out.contains("already recorded"), "{}", both(&o));
    assert!(
        out.contains(&format!("applied  {DROP_USERNAME}: contracts {KEY}")),
        "{}",
        both(&o)
    );
    assert_eq!(pg.columns("users"), ["handle", "id"]);
    assert_eq!(
        applied(),
        format!("{CREATE_USERS}\n{ADD_HANDLE}\n{DROP_USERNAME}\n")
    );
    assert_eq!(server.show(), contracted);

    server.stop();
}

/// deploy.sh appends a file to the applied list before `switchyard record` has recorded it, so
/// when the record fails (here: a token that may read but not record; in real life the server
/// unreachable for a moment, a timeout) the rerun skips the file and never records it. The
/// expand stays unrecorded: release managers cannot leave `off` although the column exists, and
/// the rerun exits 0 as if all were well. `record --sql-file` is idempotent ("already recorded
/// is fine"), so a rerun could (and should) record every applied headed file again, as the
/// README's sqlx example does.
#[test]
fn a_rerun_after_a_failed_record_still_records_the_expand() {
    let pg = PgDatabase::create("rerun");
    need_psql();
    let tmp = TempDir::new("rerun");
    let server = Server::start(&tmp.0.join("switchyard.db"));
    server.cli_ok(&[
        "migration",
        "create",
        KEY,
        "--soak",
        "1s",
        "--reason",
        "rename",
    ]);
    let migrations = tmp.0.join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    for f in [CREATE_USERS, ADD_HANDLE] {
        std::fs::copy(example_dir().join("migrations").join(f), migrations.join(f)).unwrap();
    }
    let list = tmp.0.join("applied.txt");

    // The record step fails after the schema change was applied.
    let o = deploy(&pg, &server, &token(&server, "reader"), &migrations, &list);
    assert_eq!(o.status.code(), Some(3), "{}", both(&o));
    assert_eq!(pg.columns("users"), ["handle", "id", "username"]);
    assert_eq!(server.show()["expand_applied"], false);

    // The rerun, with a working token, must leave the expand recorded.
    let o = deploy(&pg, &server, &token(&server, "gate"), &migrations, &list);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert_eq!(
        server.show()["expand_applied"],
        true,
        "the rerun did not record the expand file applied by the failed deploy:\n{}",
        both(&o)
    );
    server.stop();
}
