//! Harness for the end-to-end tests in `tests/tests/`: starts the real server on port 0 with a
//! fresh database (a SQLite file in a temp dir, or a new Postgres database per test) and gives
//! real HTTP and gRPC clients for it.
//!
//! Postgres is found at `SWITCHYARD_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). A Postgres test fails loudly when it cannot reach
//! it: none is counted as passed without running.
//!
//! [`drill`] runs an example service through its migration under load; [`pgcluster`] starts a
//! PostgreSQL cluster of its own for tests that need one.

pub mod drill;
pub mod pgcluster;
pub mod receiver;

use anyhow::Context;
use rand::Rng;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::switchyard_client::SwitchyardClient;
use switchyard_server::app::Clock;
use switchyard_server::startup::{ServeConfig, Server};
use tonic::transport::Channel;

/// A migration from its HTTP JSON, read as any HTTP client would (the API's own types).
pub fn parse_migration(body: Value) -> Result<switchyard_domain::Migration, String> {
    let wire: switchyard_proto::json::Migration =
        serde_json::from_value(body).map_err(|e| e.to_string())?;
    switchyard_domain::Migration::try_from(wire).map_err(|e| e.to_string())
}

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs an async test body once per database: `both_databases!(name_of_async_fn);` expands to a
/// module with a `sqlite` and a `postgres` test.
#[macro_export]
macro_rules! both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::Db::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::Db::Postgres).await
            }
        }
    )*};
}

fn postgres_admin_url() -> String {
    std::env::var("SWITCHYARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh, empty database for one test.
pub struct TestDb {
    pub url: String,
    _dir: Option<TempDir>,
}

impl TestDb {
    pub async fn new(db: Db) -> TestDb {
        let suffix: u64 = rand::rng().random();
        match db {
            Db::Sqlite => {
                let dir = TempDir::new(&format!("switchyard-test-{suffix:x}"));
                TestDb {
                    url: format!("sqlite://{}/switchyard.db", dir.0.display()),
                    _dir: Some(dir),
                }
            }
            Db::Postgres => {
                let admin = postgres_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .with_context(|| {
                        format!(
                            "Postgres tests need a server at {admin} (set SWITCHYARD_TEST_POSTGRES); \
                             it is unreachable"
                        )
                    })
                    .unwrap();
                let name = format!("switchyard_test_{suffix:x}");
                sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("creating a test database");
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                TestDb {
                    url: format!("{base}/{name}"),
                    _dir: None,
                }
            }
        }
    }
}

impl Drop for TestDb {
    /// Drops a Postgres test database (its connections are closed by force).
    fn drop(&mut self) {
        let Some((_, name)) = self.url.rsplit_once('/') else {
            return;
        };
        if self._dir.is_some() || !name.starts_with("switchyard_test_") {
            return;
        }
        let (admin, name) = (postgres_admin_url(), name.to_owned());
        // Drop may run inside a runtime; a plain thread with its own runtime avoids nesting.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::Executor::execute(&mut conn, sql.as_str()).await.ok()
            })
        })
        .join();
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A clock tests move by hand: frozen at the time it was made ([`TestClock::new`]) or following
/// the real clock ([`TestClock::running`]), plus what the test advanced it by.
#[derive(Clone)]
pub struct TestClock {
    /// The frozen time, or the offset added to the real time.
    value: Arc<AtomicI64>,
    running: bool,
}

fn real_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

impl TestClock {
    pub fn new() -> TestClock {
        TestClock {
            value: Arc::new(AtomicI64::new(real_now_ms())),
            running: false,
        }
    }

    /// A clock that runs with the real one (for tests with real clients, whose reports carry
    /// real timestamps).
    pub fn running() -> TestClock {
        TestClock {
            value: Arc::new(AtomicI64::new(0)),
            running: true,
        }
    }

    pub fn advance(&self, by: Duration) {
        self.value
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    pub fn clock(&self) -> Clock {
        let value = self.value.clone();
        if self.running {
            Arc::new(move || real_now_ms() + value.load(Ordering::SeqCst))
        } else {
            Arc::new(move || value.load(Ordering::SeqCst))
        }
    }
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

/// A running server with clients for it.
pub struct TestServer {
    pub server: Server,
    pub base: String,
    pub http: reqwest::Client,
    pub grpc: SwitchyardClient<Channel>,
    pub token: String,
    pub clock: TestClock,
    pub db: Arc<TestDb>,
}

/// The client TTL the tests' servers use.
pub const CLIENT_TTL: Duration = Duration::from_secs(30);

impl TestServer {
    /// A server on a fresh database.
    pub async fn start(db: Db) -> TestServer {
        let db = Arc::new(TestDb::new(db).await);
        Self::start_on(db, TestClock::new()).await
    }

    /// Another server (replica) on an existing database.
    pub async fn start_on(db: Arc<TestDb>, clock: TestClock) -> TestServer {
        Self::start_configured(db, clock, |_| {}).await
    }

    /// A server on `db` whose configuration the test adjusts first (addresses, intervals).
    pub async fn start_configured(
        db: Arc<TestDb>,
        clock: TestClock,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> TestServer {
        let mut config = ServeConfig {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            database_url: db.url.clone(),
            client_ttl: CLIENT_TTL,
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            // Tests choose their soak periods (and move the clock) freely.
            min_soak: Duration::ZERO,
            ..ServeConfig::default()
        };
        configure(&mut config);
        let server = Server::start(config, clock.clock())
            .await
            .expect("starting the server");
        let base = format!("http://{}", server.http_addr);
        let channel = Channel::from_shared(format!("http://{}", server.grpc_addr))
            .unwrap()
            .connect()
            .await
            .expect("connecting gRPC");
        TestServer {
            base,
            http: reqwest::Client::new(),
            grpc: SwitchyardClient::new(channel),
            token: ADMIN_TOKEN.to_owned(),
            clock,
            server,
            db,
        }
    }

    /// Runs the `switchyard` CLI in-process against this server (its argument parser and code,
    /// as a release manager runs them) with the admin token; returns the exit code.
    pub async fn cli(&self, args: &[&str]) -> i32 {
        self.cli_as(&self.token, args).await
    }

    /// [`TestServer::cli`] with another token.
    pub async fn cli_as(&self, token: &str, args: &[&str]) -> i32 {
        use clap::Parser;
        let mut argv = vec!["switchyard", "--server", &self.base, "--token", token];
        argv.extend_from_slice(args);
        let parsed = switchyard_server::cli::Cli::try_parse_from(argv).expect("CLI arguments");
        switchyard_server::cli::run(parsed.remote, parsed.command).await
    }

    pub async fn stop(self) {
        self.server.shutdown().await.expect("clean shutdown");
    }

    /// Sends a request with the admin token; returns the status and the JSON body (or the
    /// text as a JSON string, or null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(&self.token.clone(), method, path, body).await
    }

    pub async fn call_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("HTTP request");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// The server's OpenAPI document, as a client generator reads it.
    pub async fn openapi(&self) -> Value {
        reqwest::get(format!("{}/openapi.json", self.base))
            .await
            .expect("fetching /openapi.json")
            .json()
            .await
            .expect("the document is JSON")
    }

    /// A gRPC request carrying the admin token.
    pub fn req<T>(&self, message: T) -> tonic::Request<T> {
        request_as(&self.token, message)
    }

    /// Creates a token with `role` and returns its secret.
    pub async fn token_with_role(&self, name: &str, role: &str) -> String {
        let (status, body) = self
            .post(
                "/v1/tokens",
                serde_json::json!({ "name": name, "role": role }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Creates a migration with defaults; returns its JSON.
    pub async fn create(&self, key: &str, has_backfill: bool, expected_services: &[&str]) -> Value {
        let (status, body) = self
            .post(
                "/v1/migrations",
                serde_json::json!({
                    "key": key, "entity_kind": "user_id", "has_backfill": has_backfill,
                    "expected_services": expected_services, "reason": "test setup",
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Creates a migration with a backfill and brings it to dual_write at 100% (expand recorded,
    /// no clients yet, so rule 3 holds): where its backfill may run. Returns the version that
    /// made dual_write 100%.
    pub async fn ready_for_backfill(&self, key: &str) -> u64 {
        self.create(key, true, &[]).await;
        let mut version = self.version_of(key).await;
        for (path, body) in [
            ("events", serde_json::json!({ "event": "expand_applied" })),
            ("advance", serde_json::json!({})),
            ("rollout", serde_json::json!({ "rollout_bp": 10_000 })),
        ] {
            let mut body = body;
            body["expected_version"] = version.into();
            body["reason"] = "test setup".into();
            let (status, answer) = self
                .post(&format!("/v1/migrations/{key}/{path}"), body)
                .await;
            assert_eq!(status, StatusCode::OK, "{path}: {answer}");
            version = answer["version"].as_u64().unwrap();
        }
        version
    }

    /// Creates a migration without a backfill and walks its front to `(stage, 100%)` (expand
    /// recorded, each stage ramped to 100% and advanced): any stage before `complete`, which
    /// needs rule 5. Returns the version of that state.
    pub async fn at_full(&self, key: &str, stage: switchyard_domain::Stage) -> u64 {
        self.at_full_with(key, stage, serde_json::json!({})).await
    }

    /// [`TestServer::at_full`], creating the migration with `fields` added to its create body
    /// (e.g. `shadow_sample_bp`).
    pub async fn at_full_with(
        &self,
        key: &str,
        stage: switchyard_domain::Stage,
        fields: Value,
    ) -> u64 {
        use switchyard_domain::Stage;
        assert!(
            stage.index() < Stage::Complete.index(),
            "complete needs rule 5"
        );
        let mut body = serde_json::json!({
            "key": key, "entity_kind": "user_id", "has_backfill": false, "reason": "test setup",
        });
        for (k, v) in fields.as_object().expect("fields is an object") {
            body[k] = v.clone();
        }
        let (status, mut m) = self.post("/v1/migrations", body).await;
        assert_eq!(status, StatusCode::CREATED, "{m}");
        let step = |path: &'static str, body: Value| (path, body);
        let mut steps = vec![step(
            "events",
            serde_json::json!({ "event": "expand_applied" }),
        )];
        for _ in 0..stage.index() {
            steps.push(step("rollout", serde_json::json!({ "rollout_bp": 10_000 })));
            steps.push(step("advance", serde_json::json!({})));
        }
        steps.push(step("rollout", serde_json::json!({ "rollout_bp": 10_000 })));
        for (path, mut body) in steps {
            if path == "rollout" && m["rollout_bp"] == 10_000 {
                continue;
            }
            body["expected_version"] = m["version"].clone();
            body["reason"] = "test setup".into();
            // Setting up is the admin's: past any approval a server requires (recorded only
            // where one was required).
            body["bypass_approval"] = true.into();
            let (status, answer) = self
                .post(&format!("/v1/migrations/{key}/{path}"), body)
                .await;
            assert_eq!(status, StatusCode::OK, "{path}: {answer}");
            m = answer;
        }
        assert_eq!(
            (m["stage"].as_str(), m["rollout_bp"].as_u64()),
            (Some(stage.as_str()), Some(10_000))
        );
        m["version"].as_u64().unwrap()
    }

    pub async fn migration(&self, key: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/migrations/{key}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn version_of(&self, key: &str) -> u64 {
        self.migration(key).await["version"].as_u64().unwrap()
    }

    /// Reports a client instance as live and having applied `version`.
    pub async fn heartbeat(&self, service: &str, instance: &str, version: u64) {
        let (status, body) = self
            .post(
                "/v1/clients/heartbeat",
                serde_json::json!({ "service": service, "instance_id": instance, "applied_version": version }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// The snapshot version this replica holds.
    pub async fn snapshot_version(&self) -> u64 {
        let (status, body) = self.get("/v1/snapshot").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["version"].as_u64().unwrap()
    }
}

/// Polls `check` every 10 ms until it holds, failing after `within`. For conditions that only
/// the server can be asked about (an asynchronous acknowledgement, a telemetry report).
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(within, what, || {
        let holds = check();
        async move {
            if holds.await {
                Ok(())
            } else {
                Err(String::new())
            }
        }
    })
    .await
}

/// [`eventually`] for a condition that yields what it found: polls `check` every 10 ms until
/// it answers `Ok`, failing after `within` with the last `Err` (what was seen instead).
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
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
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn request_as<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// The rule number and code carried by a gRPC error's details.
pub fn grpc_detail(status: &tonic::Status) -> pb::ErrorDetail {
    switchyard_proto::status::error_detail(status).expect("ErrorDetail in status details")
}
