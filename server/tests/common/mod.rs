//! Runs the real `switchyard` binary: `serve` on port 0, reading back what it prints.

#![allow(dead_code)] // each test binary uses part of this module

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The Postgres server the tests create their databases on: `SWITCHYARD_TEST_POSTGRES`, by
/// default the machine's. A test that needs it fails when it cannot reach it.
pub fn postgres_admin_url() -> String {
    std::env::var("SWITCHYARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database of its own on the test PostgreSQL server (made anew under `name`): its URL, and
/// the admin connection to drop it with [`drop_postgres`]. Fails, saying so, when the server
/// cannot be reached.
pub async fn fresh_postgres(name: &str) -> (String, sqlx::PgConnection) {
    use sqlx::Connection;
    let admin = postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("Postgres tests need a server at {admin}: {e}"));
    drop_postgres(&mut conn, name).await;
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    (format!("{base}/{name}"), conn)
}

pub async fn drop_postgres(conn: &mut sqlx::PgConnection, name: &str) {
    let drop_db = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::Executor::execute(conn, drop_db.as_str())
        .await
        .unwrap();
}

/// Polls `check` every 20 ms until it answers `Ok`, failing after `within` with the last
/// `Err` (what was seen instead): for what only the server can be asked about.
pub async fn wait_for<T, F, Fut>(within: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(found) => return found,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {seen}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

pub struct Served {
    pub child: Child,
    pub http: String,
    /// The gRPC address, `host:port`.
    pub grpc: String,
    pub token: Option<String>,
}

/// Starts `switchyard serve` on port 0 against `database_url` and reads the bound address (and
/// the admin token it generated, if any).
pub fn serve(database_url: &str, admin_token: Option<&str>) -> Served {
    serve_with(database_url, admin_token, &[])
}

/// `serve` with extra command-line arguments (e.g. `--min-soak 0s`).
pub fn serve_with(database_url: &str, admin_token: Option<&str>, extra: &[&str]) -> Served {
    serve_under(Command::new(BIN), database_url, admin_token, extra)
}

/// `serve_with` under `prlimit --nofile=<nofile>` (soft:hard), as a server on a host with a
/// small open-file limit.
pub fn serve_with_file_limit(
    nofile: &str,
    database_url: &str,
    admin_token: Option<&str>,
    extra: &[&str],
) -> Served {
    let mut prlimit = Command::new("prlimit");
    prlimit.arg(format!("--nofile={nofile}")).arg("--").arg(BIN);
    serve_under(prlimit, database_url, admin_token, extra)
}

/// Runs `command` (the binary, or a wrapper with the binary as its last argument) as `serve`.
fn serve_under(
    mut command: Command,
    database_url: &str,
    admin_token: Option<&str>,
    extra: &[&str],
) -> Served {
    command
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .args(["--database-url", database_url])
        .args(extra)
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(t) = admin_token {
        command.env("SWITCHYARD_ADMIN_TOKEN", t);
    }
    let mut child = command.spawn().expect("spawning switchyard serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut token = None;
    let (http, grpc) = loop {
        let line = lines
            .next()
            .expect("serve exited before announcing its address")
            .unwrap();
        if let Some(t) = line.trim().strip_prefix("sy_") {
            token = Some(format!("sy_{t}"));
        }
        // "switchyard serving HTTP on http://A and gRPC on B (plaintext)"
        if let Some(rest) = line.strip_prefix("switchyard serving HTTP on ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            break (words[0].to_owned(), words[4].to_owned());
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Served {
        child,
        http,
        grpc,
        token,
    }
}

impl Drop for Served {
    /// A test that fails before stopping its server does not leave it running (holding the
    /// test's output pipe open, among other things).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// SIGTERM, then expects a clean exit.
pub fn terminate(mut served: Served) {
    signal(&served, "-TERM");
    let exit = served.child.wait().unwrap();
    assert!(exit.success(), "serve exited with {exit:?} after SIGTERM");
}

/// SIGKILL: the process gets no chance to flush or clean up.
pub fn kill_hard(mut served: Served) {
    signal(&served, "-KILL");
    served.child.wait().unwrap();
}

fn signal(served: &Served, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
