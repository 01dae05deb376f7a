//! `switchyard gate` and `switchyard record --sql-file` as a pipeline runs them: the real binary
//! against a real server (started with `--min-soak 0s`, migrations soaking 1–2 s), a folder of
//! SQL migration files written here, and what is applied read from an applied list or from each
//! tool's own table (sqlx, golang-migrate, Flyway) in SQLite target databases, plus one Postgres
//! target for sqlx.
//!
//! Postgres is found at `SWITCHYARD_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`); the test fails loudly when it cannot reach it.

mod common;

use common::{BIN, Served, terminate};
use serde_json::Value;
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Its gate passes once the fixture has waited for it.
const PASSING: &str = "users.username-to-handle";
/// Still at shadow: its gate fails.
const FAILING: &str = "orders.amount-to-cents";
/// Never created on the server.
const UNKNOWN: &str = "ghost.never-created";

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A fresh temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "switchyard-gate-cli-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `files` (name, content) into the sub-folder `sub` (created) and returns it.
    fn folder(&self, sub: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `switchyard serve --min-soak 0s` on port 0 with a SQLite file, killed if a test panics.
struct Server {
    served: Option<Served>,
    http: String,
    /// The generated admin token (drives migrations like a release manager).
    admin: String,
    /// A token with the `gate` role, as a pipeline has.
    gate: String,
}

impl Server {
    fn start(dir: &TempDir) -> Self {
        let db = format!("sqlite://{}", dir.join("switchyard.db").display());
        let served = common::serve_with(&db, None, &["--min-soak", "0s"]);
        let http = served.http.clone();
        let admin = served
            .token
            .clone()
            .expect("the first start prints an admin token");
        let mut server = Self {
            served: Some(served),
            http,
            admin,
            gate: String::new(),
        };
        let o = server.admin(&["token", "create", "pipeline", "--role", "gate", "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let created: Value = serde_json::from_slice(&o.stdout).unwrap();
        server.gate = created["token"].as_str().unwrap().to_owned();
        server
    }

    fn run(&self, token: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("SWITCHYARD_SERVER", &self.http)
            .env("SWITCHYARD_TOKEN", token)
            .env_remove("SWITCHYARD_TARGET_DATABASE_URL")
            .output()
            .expect("running the CLI")
    }

    /// As the release manager (admin token).
    fn admin(&self, args: &[&str]) -> Output {
        self.run(&self.admin, args)
    }

    /// As the pipeline (gate token).
    fn pipeline(&self, args: &[&str]) -> Output {
        self.run(&self.gate, args)
    }

    fn admin_ok(&self, args: &[&str]) {
        let o = self.admin(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    }

    fn create(&self, key: &str, soak: &str) {
        self.admin_ok(&[
            "migration",
            "create",
            key,
            "--soak",
            soak,
            "--reason",
            "test",
        ]);
    }

    /// `record expand-applied`, then advance and ramp each stage to 100% up to `last`.
    fn drive_to(&self, key: &str, last: &str) {
        self.admin_ok(&["record", key, "expand-applied", "--reason", "DDL applied"]);
        for stage in ["dual_write", "shadow", "live", "rampdown", "complete"] {
            self.admin_ok(&["advance", key, "--latest", "--reason", "next stage"]);
            self.admin_ok(&[
                "ramp",
                key,
                "--percent",
                "100",
                "--latest",
                "--reason",
                "all entities",
            ]);
            if stage == last {
                return;
            }
        }
        panic!("no stage {last}");
    }

    fn show(&self, key: &str) -> Value {
        let o = self.admin(&["migration", "show", key, "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Polls `GET /v1/migrations/{key}/gate` until it passes (bounded).
    fn wait_for_gate(&self, key: &str) -> Value {
        let url = format!("{}/v1/migrations/{key}/gate", self.http);
        block_on(async {
            let http = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let report: Value = http
                    .get(&url)
                    .bearer_auth(&self.gate)
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if report["passed"] == true {
                    return report;
                }
                assert!(
                    Instant::now() < deadline,
                    "the gate of {key} still fails: {report}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

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

/// A server where `PASSING` is complete at 100% with its gate passing (soak 1 s) and `FAILING`
/// is at shadow 100% (its gate fails).
fn fixture(dir: &TempDir) -> Server {
    let server = Server::start(dir);
    server.create(PASSING, "1s");
    server.create(FAILING, "1s");
    server.drive_to(PASSING, "complete");
    server.drive_to(FAILING, "shadow");
    server.wait_for_gate(PASSING);
    server
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    sqlx::any::install_default_drivers();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn both(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout(o), stderr(o))
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", both(o)))
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The `files` entry of a `gate --migrations-dir --json` answer for `name`.
fn file_entry<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == name)
        .unwrap_or_else(|| panic!("no entry for {name} in {answer}"))
}

fn file_names(answer: &Value) -> Vec<String> {
    answer["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The sample migrations (sqlx naming, valid SQL for SQLite and PostgreSQL)
// ---------------------------------------------------------------------------------------------

const CREATE: (&str, &str) = (
    "20260101000000_create_tables.sql",
    "-- The tables as they were.\nCREATE TABLE users (id BIGINT PRIMARY KEY, username TEXT NOT NULL);\n\
     CREATE TABLE orders (id BIGINT PRIMARY KEY, amount NUMERIC, amount_cents BIGINT);\n",
);
/// A header comment after the first statement is no header: must not be read.
const SEED: (&str, &str) = (
    "20260105000000_seed.sql",
    "INSERT INTO users (id, username) VALUES (1, 'ada');\n\
     -- switchyard: contract ghost.never-created\n",
);
const ADD_HANDLE: (&str, &str) = (
    "20260201000000_add_handle.sql",
    "-- Expand: the new column beside the old one.\n\
     -- switchyard: expand users.username-to-handle\n\
     ALTER TABLE users ADD COLUMN handle TEXT;\n",
);
const DROP_USERNAME: (&str, &str) = (
    "20260301000000_drop_username.sql",
    "-- Contract: drop the old column.\n\n  -- switchyard: contract users.username-to-handle\n\
     ALTER TABLE users DROP COLUMN username;\n",
);
/// golang-migrate style undo file: skipped, although its header names an unknown migration.
const DROP_USERNAME_DOWN: (&str, &str) = (
    "20260301000000_drop_username.down.sql",
    "-- switchyard: contract ghost.never-created\nALTER TABLE users ADD COLUMN username TEXT;\n",
);
const DROP_AMOUNT: (&str, &str) = (
    "20260401000000_drop_amount.sql",
    "-- switchyard: contract orders.amount-to-cents\nALTER TABLE orders DROP COLUMN amount;\n",
);
/// Not a `.sql` file: skipped.
const NOTES: (&str, &str) = ("NOTES.md", "-- switchyard: contract ghost.never-created\n");

fn sample_folder(dir: &TempDir) -> PathBuf {
    dir.folder(
        "migrations",
        &[
            CREATE,
            SEED,
            ADD_HANDLE,
            DROP_USERNAME,
            DROP_USERNAME_DOWN,
            DROP_AMOUNT,
            NOTES,
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// gate KEY
// ---------------------------------------------------------------------------------------------

#[test]
fn gate_key_says_yes_or_no_with_every_reason() {
    let dir = TempDir::new("key");
    let server = Server::start(&dir);
    server.create(PASSING, "2s");
    server.create(FAILING, "1s");
    server.drive_to(FAILING, "shadow");

    // Still at shadow: exit 1, every failing check with its remedy after an arrow.
    let o = server.pipeline(&["gate", FAILING]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let out = stdout(&o);
    for expected in [
        "orders.amount-to-cents: the contract gate fails",
        "[no] soak: the front is at shadow 100%, not complete at 100%",
        "→ ramp complete to 100%",
        "[no] clients_applied",
        "[ok] backfill",
    ] {
        assert!(out.contains(expected), "{expected:?} missing:\n{out}");
    }
    let o = server.pipeline(&["gate", FAILING, "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let report = json(&o);
    assert_eq!(report["passed"], false);
    assert_eq!(report["key"], FAILING);
    let soak = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "soak")
        .unwrap();
    assert_eq!(soak["passed"], false);

    // Just at complete 100%: if the 2 s soak has not ended yet, the soak is the only reason.
    server.drive_to(PASSING, "complete");
    let o = server.pipeline(&["gate", PASSING, "--json"]);
    let report = json(&o);
    if report["passed"] == false {
        assert_eq!(o.status.code(), Some(1), "{}", both(&o));
        let failing: Vec<&Value> = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["passed"] == false)
            .collect();
        assert_eq!(failing.len(), 1, "{report}");
        assert_eq!(failing[0]["id"], "soak");
        assert!(
            failing[0]["remedy"]
                .as_str()
                .unwrap()
                .starts_with("soak ends "),
            "{report}"
        );
        assert!(report["soak_ends_at_ms"].as_i64() > report["evaluated_at_ms"].as_i64());
    }

    // Once the soak has elapsed: exit 0, every check ok.
    server.wait_for_gate(PASSING);
    let o = server.pipeline(&["gate", PASSING]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let out = stdout(&o);
    assert!(
        out.contains("users.username-to-handle: the contract gate passes"),
        "{out}"
    );
    assert!(out.contains("[ok] soak: complete at 100% since"), "{out}");
    assert!(!out.contains("[no]") && !out.contains('→'), "{out}");
    let o = server.pipeline(&["gate", PASSING, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let report = json(&o);
    assert_eq!(report["passed"], true);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(
        checks.len(),
        switchyard_domain::gate::CheckId::ALL.len(),
        "{report}"
    );
    assert!(checks.iter().all(|c| c["passed"] == true), "{report}");
    assert!(report["soak_ends_at_ms"].as_i64() <= report["evaluated_at_ms"].as_i64());

    // Usage errors exit 2: an unknown migration, an invalid key, no key and no folder,
    // both a key and a folder, both a list and a database.
    for args in [
        &["gate", UNKNOWN][..],
        &["gate", "Bad/Key"],
        &["gate"],
        &["gate", PASSING, "--migrations-dir", "/tmp"],
        &[
            "gate",
            "--migrations-dir",
            "/tmp",
            "--applied-list",
            "/tmp/x",
            "--target-database-url",
            "sqlite:///tmp/x.db",
        ],
    ] {
        let o = server.pipeline(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", both(&o));
    }
    let o = server.pipeline(&["gate", UNKNOWN, "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    assert!(json(&o).get("message").is_some(), "{}", both(&o));

    // Cannot authenticate or reach: exit 3.
    let o = server.run("sy_not-a-real-token", &["gate", PASSING]);
    assert_eq!(o.status.code(), Some(3), "{}", both(&o));
    let o = Command::new(BIN)
        .args(["gate", PASSING])
        .env("SWITCHYARD_SERVER", "http://127.0.0.1:9")
        .env("SWITCHYARD_TOKEN", &server.gate)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", both(&o));
    assert!(stderr(&o).contains("cannot reach"), "{}", both(&o));
    server.stop();
}

/// `--applied-list`, `--target-database-url` and `--tool` only mean something with
/// `--migrations-dir` (they are declared `requires = "migrations_dir"`): given with a KEY they
/// are a usage error (exit 2), not silently ignored. No server is needed to tell: an answer of 3
/// (cannot reach) shows the options were ignored and the server was called.
#[test]
fn gate_key_refuses_the_options_of_a_migrations_folder() {
    for args in [
        &["gate", PASSING, "--applied-list", "/tmp/applied.txt"][..],
        &[
            "gate",
            PASSING,
            "--target-database-url",
            "sqlite:///tmp/x.db",
        ],
        &["gate", PASSING, "--tool", "flyway"],
        &["gate", PASSING, "--lint-fails"],
    ] {
        let o = Command::new(BIN)
            .args(args)
            .env("SWITCHYARD_SERVER", "http://127.0.0.1:9")
            .env("SWITCHYARD_TOKEN", "sy_unused")
            .env_remove("SWITCHYARD_TARGET_DATABASE_URL")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", both(&o));
    }
}

// ---------------------------------------------------------------------------------------------
// gate --migrations-dir --applied-list
// ---------------------------------------------------------------------------------------------

#[test]
fn gate_migrations_dir_checks_every_pending_contract_file() {
    let dir = TempDir::new("list");
    let server = fixture(&dir);
    let folder = sample_folder(&dir);
    let list = dir.join("applied.txt");
    let gate = |list_lines: Option<&[&str]>, json_output: bool| -> Output {
        let mut args = vec!["gate", "--migrations-dir", path_str(&folder)];
        if let Some(lines) = list_lines {
            std::fs::write(&list, lines.join("\n")).unwrap();
            args.extend(["--applied-list", path_str(&list)]);
        }
        if json_output {
            args.push("--json");
        }
        server.pipeline(&args)
    };

    // Both contract files pending, one of them failing: exit 1, each named with its verdict.
    let applied = [CREATE.0, SEED.0, ADD_HANDLE.0];
    let o = gate(Some(&applied[..]), false);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let out = stdout(&o);
    for expected in [
        "PASS    20260301000000_drop_username.sql: contracts users.username-to-handle",
        "FAIL    20260401000000_drop_amount.sql: contracts orders.amount-to-cents",
        "orders.amount-to-cents: the contract gate fails",
        "→ ramp complete to 100%",
        "gate FAILS: do not apply the contract or retire migrations",
    ] {
        assert!(out.contains(expected), "{expected:?} missing:\n{out}");
    }
    // The `.down.sql` file, the non-SQL file and a header after the first statement are
    // ignored: the unknown migration they name is never asked about.
    assert!(!out.contains(UNKNOWN), "{out}");
    let answer = json(&gate(Some(&applied[..]), true));
    assert_eq!(answer["passed"], false);
    assert_eq!(
        file_names(&answer),
        [DROP_USERNAME.0, DROP_AMOUNT.0],
        "{answer}"
    );
    let username = file_entry(&answer, DROP_USERNAME.0);
    assert_eq!(username["key"], PASSING);
    assert_eq!(username["pending"], true);
    assert_eq!(username["passed"], true);
    assert_eq!(username["gate"]["passed"], true);
    let amount = file_entry(&answer, DROP_AMOUNT.0);
    assert_eq!(amount["pending"], true);
    assert_eq!(amount["passed"], false);

    // The failing one already applied: only the passing one is checked, exit 0. List lines may
    // be paths and comments.
    let lines = [
        "# applied on staging",
        "migrations/20260101000000_create_tables.sql",
        SEED.0,
        ADD_HANDLE.0,
        "",
        &format!("  {}  ", DROP_AMOUNT.0),
    ];
    let o = gate(Some(&lines[..]), false);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let out = stdout(&o);
    assert!(
        out.contains("applied  20260401000000_drop_amount.sql: contracts orders.amount-to-cents"),
        "{out}"
    );
    assert!(
        out.contains("PASS    20260301000000_drop_username.sql"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("gate passes"), "{out}");
    let answer = json(&gate(Some(&lines[..]), true));
    assert_eq!(answer["passed"], true, "{answer}");
    assert_eq!(file_entry(&answer, DROP_AMOUNT.0)["pending"], false);
    assert_eq!(file_entry(&answer, DROP_USERNAME.0)["passed"], true);
    // The pending file is linted: its ALTER TABLE has no lock_timeout (SY011). Reported, and
    // fatal only with --lint-fails.
    assert_eq!(answer["lint"][0]["code"], "SY011", "{answer}");
    assert!(
        out.contains("lint: 1 finding(s) in the pending files"),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}:4: SY011", DROP_USERNAME.0)),
        "{out}"
    );
    std::fs::write(&list, lines.join("\n")).unwrap();
    let o = server.pipeline(&[
        "gate",
        "--migrations-dir",
        path_str(&folder),
        "--applied-list",
        path_str(&list),
        "--lint-fails",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(stdout(&o).contains("--lint-fails: the findings fail the gate"));

    // Everything applied: nothing pending, exit 0 (the failing gate does not matter any more).
    let all = [
        CREATE.0,
        SEED.0,
        ADD_HANDLE.0,
        DROP_USERNAME.0,
        DROP_AMOUNT.0,
    ];
    let o = gate(Some(&all[..]), true);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let answer = json(&o);
    assert_eq!(answer["passed"], true);
    assert!(
        answer["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["pending"] == false),
        "{answer}"
    );

    // No list and no database: every contract file counts as pending.
    let o = gate(None, false);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(
        stdout(&o).contains("every contract, retire and restore file counted as pending"),
        "{}",
        both(&o)
    );

    // A pending contract file naming a migration the server does not know: exit 1.
    let ghost = dir.folder(
        "ghost",
        &[
            CREATE,
            ADD_HANDLE,
            DROP_USERNAME,
            (
                "20260501000000_drop_ghost.sql",
                "-- switchyard: contract ghost.never-created\nDROP TABLE ghosts;\n",
            ),
        ],
    );
    std::fs::write(&list, [CREATE.0, ADD_HANDLE.0].join("\n")).unwrap();
    let args = [
        "gate",
        "--migrations-dir",
        path_str(&ghost),
        "--applied-list",
        path_str(&list),
    ];
    let o = server.pipeline(&args);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let out = stdout(&o);
    assert!(
        out.contains(
            "FAIL    20260501000000_drop_ghost.sql: contracts ghost.never-created, which the \
             server does not know"
        ),
        "{out}"
    );
    assert!(
        out.contains("PASS    20260301000000_drop_username.sql"),
        "{out}"
    );
    let o = server.pipeline(&[&args[..], &["--json"]].concat());
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let answer = json(&o);
    assert_eq!(answer["passed"], false);
    let entry = file_entry(&answer, "20260501000000_drop_ghost.sql");
    assert_eq!(entry["passed"], false);
    assert!(entry["error"].is_string(), "{answer}");
    // ... and passes once that file is applied.
    std::fs::write(
        &list,
        [CREATE.0, ADD_HANDLE.0, "20260501000000_drop_ghost.sql"].join("\n"),
    )
    .unwrap();
    let o = server.pipeline(&args);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));

    // Usage errors exit 2: a missing folder, a missing list, a malformed header, an invalid
    // key in a header.
    let missing = dir.join("no-such-folder");
    let o = server.pipeline(&["gate", "--migrations-dir", path_str(&missing)]);
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    assert!(
        stderr(&o).contains("cannot read the migrations folder"),
        "{}",
        both(&o)
    );
    let o = server.pipeline(&["gate", "--migrations-dir", path_str(&missing), "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    assert_eq!(json(&o)["code"], "cli_error");
    let o = server.pipeline(&[
        "gate",
        "--migrations-dir",
        path_str(&folder),
        "--applied-list",
        path_str(&dir.join("no-such-list.txt")),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    for (sub, header, complaint) in [
        (
            "bad-phase",
            "-- switchyard: drop users.username-to-handle\nSELECT 1;\n",
            "one of expand, contract, retire, restore",
        ),
        (
            "bad-key",
            "-- switchyard: contract Users_Bad\nSELECT 1;\n",
            "20260601000000_bad.sql",
        ),
        (
            "no-key",
            "-- switchyard: contract\nSELECT 1;\n",
            "names no migration",
        ),
    ] {
        let bad = dir.folder(sub, &[CREATE, ("20260601000000_bad.sql", header)]);
        let o = server.pipeline(&["gate", "--migrations-dir", path_str(&bad)]);
        assert_eq!(o.status.code(), Some(2), "{sub}: {}", both(&o));
        assert!(stderr(&o).contains(complaint), "{sub}: {}", both(&o));
    }
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// gate --migrations-dir --target-database-url: each tool's own table
// ---------------------------------------------------------------------------------------------

/// Runs sqlx's real migrator over `source` against `url`.
fn sqlx_migrate(url: &str, source: &Path) {
    let source = source.to_owned();
    block_on(async move {
        let migrator = sqlx::migrate::Migrator::new(source.as_path())
            .await
            .unwrap();
        let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
        migrator.run(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    });
}

/// Runs statements against `url`, one at a time.
fn execute(url: &str, statements: &[&str]) {
    block_on(async {
        let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
        for s in statements {
            sqlx::query(s)
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        conn.close().await.unwrap();
    });
}

fn sqlite_url(path: &Path, create: bool) -> String {
    format!(
        "sqlite://{}{}",
        path.display(),
        if create { "?mode=rwc" } else { "" }
    )
}

/// `gate --migrations-dir DIR --target-database-url URL [--tool TOOL] --json`: (exit code,
/// answer or None when the output is not a gate answer).
fn gate_db(server: &Server, folder: &Path, url: &str, tool: Option<&str>) -> (i32, Value) {
    let mut args = vec![
        "gate",
        "--migrations-dir",
        path_str(folder),
        "--target-database-url",
        url,
        "--json",
    ];
    if let Some(tool) = tool {
        args.extend(["--tool", tool]);
    }
    let o = server.pipeline(&args);
    (o.status.code().unwrap(), json(&o))
}

/// (file, pending) of every entry of an answer.
fn pending(answer: &Value) -> Vec<(String, bool)> {
    answer["files"]
        .as_array()
        .unwrap_or_else(|| panic!("not a gate answer: {answer}"))
        .iter()
        .map(|f| {
            (
                f["file"].as_str().unwrap().to_owned(),
                f["pending"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn owned(entries: &[(&str, bool)]) -> Vec<(String, bool)> {
    entries.iter().map(|(f, p)| ((*f).to_owned(), *p)).collect()
}

/// A `schema_migrations` row (version, dirty), the gate's exit code, and whether
/// `3_drop_amount.up.sql` and `4_drop_username.up.sql` are pending.
type GolangCase = (Option<(i64, bool)>, i32, [bool; 2]);

#[test]
fn gate_reads_what_is_applied_from_each_tools_table() {
    let dir = TempDir::new("tools");
    let server = fixture(&dir);
    let folder = sample_folder(&dir);

    // --- sqlx on SQLite: a real `_sqlx_migrations` written by sqlx's migrator. ---
    let db = dir.join("sqlx.db");
    let url = sqlite_url(&db, false);
    let applied = dir.folder("sqlx-applied", &[CREATE, SEED, ADD_HANDLE]);
    sqlx_migrate(&sqlite_url(&db, true), &applied);
    for tool in [None, Some("sqlx")] {
        let (code, answer) = gate_db(&server, &folder, &url, tool);
        assert_eq!(code, 1, "{answer}");
        assert_eq!(
            pending(&answer),
            owned(&[(DROP_USERNAME.0, true), (DROP_AMOUNT.0, true)])
        );
        assert_eq!(file_entry(&answer, DROP_USERNAME.0)["passed"], true);
    }
    // A failed attempt (success = false) is not applied.
    execute(
        &url,
        &[
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES (20260401000000, 'drop amount', FALSE, x'00', 0)",
        ],
    );
    let (code, answer) = gate_db(&server, &folder, &url, Some("sqlx"));
    assert_eq!(code, 1, "{answer}");
    assert_eq!(file_entry(&answer, DROP_AMOUNT.0)["pending"], true);
    // Once the migrator has applied the failing one, only the passing one is pending.
    execute(
        &url,
        &["DELETE FROM _sqlx_migrations WHERE version = 20260401000000"],
    );
    std::fs::write(applied.join(DROP_AMOUNT.0), DROP_AMOUNT.1).unwrap();
    sqlx_migrate(&url, &applied);
    let (code, answer) = gate_db(&server, &folder, &url, Some("sqlx"));
    assert_eq!(code, 0, "{answer}");
    assert_eq!(
        pending(&answer),
        owned(&[(DROP_USERNAME.0, true), (DROP_AMOUNT.0, false)])
    );

    // --- golang-migrate on SQLite: one row, the current version and whether it is dirty. ---
    let golang = dir.folder(
        "golang",
        &[
            ("1_create_tables.up.sql", CREATE.1),
            ("1_create_tables.down.sql", "DROP TABLE users;\n"),
            ("2_add_handle.up.sql", ADD_HANDLE.1),
            ("3_drop_amount.up.sql", DROP_AMOUNT.1),
            ("3_drop_amount.down.sql", DROP_USERNAME_DOWN.1),
            ("4_drop_username.up.sql", DROP_USERNAME.1),
        ],
    );
    let db = dir.join("golang.db");
    let url = sqlite_url(&db, false);
    execute(
        &sqlite_url(&db, true),
        &[
            "CREATE TABLE schema_migrations (version BIGINT NOT NULL PRIMARY KEY, \
           dirty BOOLEAN NOT NULL)",
        ],
    );
    let cases: [GolangCase; 6] = [
        // (row, exit code, [3_drop_amount pending, 4_drop_username pending])
        (None, 1, [true, true]),
        (Some((2, false)), 1, [true, true]),
        (Some((3, true)), 1, [true, true]),
        (Some((3, false)), 0, [false, true]),
        (Some((4, true)), 0, [false, true]),
        (Some((4, false)), 0, [false, false]),
    ];
    for (row, expected_code, [amount, username]) in cases {
        let mut statements = vec!["DELETE FROM schema_migrations".to_owned()];
        if let Some((version, dirty)) = row {
            statements.push(format!(
                "INSERT INTO schema_migrations (version, dirty) VALUES ({version}, {dirty})"
            ));
        }
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        execute(&url, &statements);
        let (code, answer) = gate_db(&server, &golang, &url, Some("golang-migrate"));
        assert_eq!(code, expected_code, "{row:?}: {answer}");
        assert_eq!(
            pending(&answer),
            owned(&[
                ("3_drop_amount.up.sql", amount),
                ("4_drop_username.up.sql", username)
            ]),
            "{row:?}"
        );
    }

    // --- Flyway on SQLite: versions with dots, repeatable scripts without a version. ---
    let flyway = dir.folder(
        "flyway",
        &[
            ("V1__create_tables.sql", CREATE.1),
            ("V2__add_handle.sql", ADD_HANDLE.1),
            ("V2_1__drop_amount.sql", DROP_AMOUNT.1),
            ("V3__drop_username.sql", DROP_USERNAME.1),
            (
                "R__user_view.sql",
                "CREATE VIEW user_names AS SELECT id FROM users;\n",
            ),
        ],
    );
    let db = dir.join("flyway.db");
    let url = sqlite_url(&db, false);
    execute(
        &sqlite_url(&db, true),
        &[
            "CREATE TABLE flyway_schema_history (installed_rank INT NOT NULL PRIMARY KEY, \
             version VARCHAR(50), description VARCHAR(200) NOT NULL, script VARCHAR(1000) NOT \
             NULL, success BOOLEAN NOT NULL)",
            "INSERT INTO flyway_schema_history VALUES (1, '1', 'create tables', \
             'V1__create_tables.sql', TRUE), (2, '2', 'add handle', 'V2__add_handle.sql', TRUE), \
             (3, NULL, 'user view', 'R__user_view.sql', TRUE), \
             (4, '2.1', 'drop amount', 'V2_1__drop_amount.sql', FALSE)",
        ],
    );
    let (code, answer) = gate_db(&server, &flyway, &url, Some("flyway"));
    assert_eq!(code, 1, "{answer}");
    assert_eq!(
        pending(&answer),
        owned(&[
            ("V2_1__drop_amount.sql", true),
            ("V3__drop_username.sql", true)
        ])
    );
    execute(
        &url,
        &["UPDATE flyway_schema_history SET success = TRUE WHERE installed_rank = 4"],
    );
    let (code, answer) = gate_db(&server, &flyway, &url, Some("flyway"));
    assert_eq!(code, 0, "{answer}");
    assert_eq!(
        pending(&answer),
        owned(&[
            ("V2_1__drop_amount.sql", false),
            ("V3__drop_username.sql", true)
        ])
    );

    // --- A target database that cannot be reached: exit 3. ---
    for url in [
        "postgres://postgres@127.0.0.1:1/nothing".to_owned(),
        sqlite_url(&dir.join("no-such-folder/target.db"), false),
    ] {
        let o = server.pipeline(&[
            "gate",
            "--migrations-dir",
            path_str(&folder),
            "--target-database-url",
            &url,
        ]);
        assert_eq!(o.status.code(), Some(3), "{url}: {}", both(&o));
        assert!(
            stderr(&o).contains("cannot connect to the target database"),
            "{}",
            both(&o)
        );
    }
    // A database without the tool's table (the wrong --tool): a failure naming the table.
    let o = server.pipeline(&[
        "gate",
        "--migrations-dir",
        path_str(&folder),
        "--target-database-url",
        &sqlite_url(&dir.join("sqlx.db"), false),
        "--tool",
        "flyway",
    ]);
    assert!(matches!(o.status.code(), Some(2 | 3)), "{}", both(&o));
    assert!(
        stderr(&o).contains("flyway_schema_history") && stderr(&o).contains("--tool"),
        "{}",
        both(&o)
    );

    // --- sqlx on PostgreSQL. ---
    {
        let admin = common::postgres_admin_url();
        let name = format!("switchyard_gate_cli_{}", std::process::id());
        let pg = PgDatabase::create(&admin, &name);
        let applied = dir.folder("pg-applied", &[CREATE, SEED, ADD_HANDLE]);
        sqlx_migrate(&pg.url, &applied);
        let (code, answer) = gate_db(&server, &folder, &pg.url, Some("sqlx"));
        assert_eq!(code, 1, "{answer}");
        assert_eq!(
            pending(&answer),
            owned(&[(DROP_USERNAME.0, true), (DROP_AMOUNT.0, true)])
        );
        std::fs::write(applied.join(DROP_AMOUNT.0), DROP_AMOUNT.1).unwrap();
        sqlx_migrate(&pg.url, &applied);
        let (code, answer) = gate_db(&server, &folder, &pg.url, Some("sqlx"));
        assert_eq!(code, 0, "{answer}");
        assert_eq!(
            pending(&answer),
            owned(&[(DROP_USERNAME.0, true), (DROP_AMOUNT.0, false)])
        );
        // The applied contract really dropped the column.
        let columns = block_on(async {
            let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_name = 'orders' ORDER BY column_name",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
            rows.into_iter().map(|(c,)| c).collect::<Vec<_>>()
        });
        assert_eq!(columns, ["amount_cents", "id"]);
    }
    server.stop();
}

/// A database of its own on the Postgres server, dropped when this is dropped.
struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgDatabase {
    fn create(admin: &str, name: &str) -> Self {
        block_on(async {
            let mut conn = sqlx::PgConnection::connect(admin)
                .await
                .unwrap_or_else(|e| panic!("Postgres tests need a server at {admin}: {e}"));
            for s in [
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("CREATE DATABASE {name}"),
            ] {
                sqlx::query(&s).execute(&mut conn).await.unwrap();
            }
            conn.close().await.unwrap();
        });
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        Self {
            admin: admin.to_owned(),
            name: name.to_owned(),
            url: format!("{base}/{name}"),
        }
    }
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

// ---------------------------------------------------------------------------------------------
// record --sql-file
// ---------------------------------------------------------------------------------------------

#[test]
fn record_sql_file_records_what_the_header_names() {
    let dir = TempDir::new("record");
    let server = fixture(&dir);
    let accounts = "accounts.email-lowercase";
    server.create(accounts, "1s");
    let folder = dir.folder(
        "migrations",
        &[
            CREATE,
            DROP_USERNAME,
            DROP_AMOUNT,
            (
                "20260701000000_add_email_lower.sql",
                "-- switchyard: expand accounts.email-lowercase\n\
                 ALTER TABLE accounts ADD COLUMN email_lower TEXT;\n",
            ),
            (
                "20260702000000_add_ghost.sql",
                "-- switchyard: expand ghost.never-created\nSELECT 1;\n",
            ),
            (
                "20260703000000_bad.sql",
                "-- switchyard: expanded accounts.email-lowercase\nSELECT 1;\n",
            ),
        ],
    );
    let file = |name: &str| folder.join(name).to_str().unwrap().to_owned();
    let record = |name: &str| {
        server.pipeline(&[
            "record",
            "--sql-file",
            &file(name),
            "--reason",
            &format!("deploy applied {name}"),
        ])
    };

    // An expand file records expand-applied; a second run is fine and changes nothing.
    assert_eq!(server.show(accounts)["expand_applied"], false);
    let o = record("20260701000000_add_email_lower.sql");
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert!(
        stdout(&o).contains(
            "recorded expand_applied for accounts.email-lowercase \
             (20260701000000_add_email_lower.sql)"
        ),
        "{}",
        both(&o)
    );
    let shown = server.show(accounts);
    assert_eq!(shown["expand_applied"], true);
    assert_eq!(shown["stage"], "off");
    let o = record("20260701000000_add_email_lower.sql");
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert!(
        stdout(&o).contains("accounts.email-lowercase: expand already recorded"),
        "{}",
        both(&o)
    );
    assert_eq!(server.show(accounts)["version"], shown["version"]);

    // Usage errors exit 2: no header, a malformed header, a missing file, an unknown
    // migration, no reason.
    let o = record(CREATE.0);
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    assert!(
        stderr(&o).contains("has no `-- switchyard: expand|contract|retire|restore KEY`"),
        "{}",
        both(&o)
    );
    for name in [
        "20260703000000_bad.sql",
        "20260799000000_missing.sql",
        "20260702000000_add_ghost.sql",
    ] {
        let o = record(name);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", both(&o));
    }
    let o = server.pipeline(&[
        "record",
        "--sql-file",
        &file("20260701000000_add_email_lower.sql"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));

    // A contract file whose gate fails is refused (exit 1) and changes nothing.
    let before = server.show(FAILING);
    let o = record(DROP_AMOUNT.0);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(
        stderr(&o).contains("refused") && stderr(&o).contains("rule 7"),
        "{}",
        both(&o)
    );
    assert_eq!(server.show(FAILING), before);

    // A contract file whose gate passes records contracted; a rerun is fine.
    let o = record(DROP_USERNAME.0);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert!(
        stdout(&o).contains("recorded contracted for users.username-to-handle"),
        "{}",
        both(&o)
    );
    let contracted = server.show(PASSING);
    assert_eq!(contracted["stage"], "contracted");
    let o = record(DROP_USERNAME.0);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert!(
        stdout(&o).contains("users.username-to-handle: contract already recorded"),
        "{}",
        both(&o)
    );
    assert_eq!(server.show(PASSING)["version"], contracted["version"]);
    server.stop();
}

/// Once a migration is contracted (its drop applied to one database, e.g. staging), the same
/// contract file must still be allowed on every other database that has it pending (e.g.
/// production, or a fresh environment): `contracted` is final and was only recorded because
/// the gate passed. Today the gate reports "not complete at 100%" with the remedy "ramp
/// complete to 100%", which can never be done for a contracted migration, so every other
/// database's deploy is blocked forever.
#[test]
fn a_contracted_migration_does_not_block_the_contract_file_on_other_databases() {
    let dir = TempDir::new("contracted");
    let server = fixture(&dir);
    let folder = dir.folder("migrations", &[CREATE, ADD_HANDLE, DROP_USERNAME]);
    // Staging: the drop is applied and recorded.
    let o = server.pipeline(&[
        "record",
        "--sql-file",
        path_str(&folder.join(DROP_USERNAME.0)),
        "--reason",
        "staging applied the drop",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert_eq!(server.show(PASSING)["stage"], "contracted");
    // Production has not applied it yet.
    let list = dir.join("production-applied.txt");
    std::fs::write(&list, [CREATE.0, ADD_HANDLE.0].join("\n")).unwrap();
    let o = server.pipeline(&[
        "gate",
        "--migrations-dir",
        path_str(&folder),
        "--applied-list",
        path_str(&list),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "the contract file of a contracted migration is blocked on another database:\n{}",
        both(&o)
    );
    server.stop();
}
