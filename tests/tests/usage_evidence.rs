//! The database's own evidence for the gate: the server observes a target's
//! `pg_stat_statements` and `pg_stat_activity`, and a caller that never linked the client (plain
//! SQL from its own connection) is seen and named. Every test starts its own PostgreSQL cluster
//! with `pg_stat_statements` preloaded, so nothing depends on the machine's own server.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use switchyard_server::startup::TargetDatabase;
use switchyard_tests::pgcluster::PgCluster;
use switchyard_tests::{Db, TestClock, TestDb, TestServer, eventually};

const MIN: u64 = 60_000;
const SOAK_SECONDS: u64 = 600;

/// The target's schema and roles: `observer` reads statistics (pg_read_all_stats), `app` is
/// the service that links the client, `reports` a job that never did.
const SETUP: &str = "
    CREATE EXTENSION pg_stat_statements;
    CREATE TABLE users (id bigint PRIMARY KEY, username text, handle text);
    INSERT INTO users SELECT g, 'user' || g, NULL FROM generate_series(1, 100) g;
    CREATE ROLE observer LOGIN PASSWORD 'observer-secret';
    GRANT pg_read_all_stats TO observer;
    CREATE ROLE nosy LOGIN PASSWORD 'nosy-secret';
    CREATE ROLE app LOGIN;
    CREATE ROLE reports LOGIN;
    GRANT SELECT, UPDATE ON users TO app, reports;
    CREATE DATABASE plain;
";

fn cluster() -> PgCluster {
    let cluster = PgCluster::builder()
        .password_for("observer")
        .password_for("nosy")
        .start();
    for statement in SETUP.split(';').filter(|s| !s.trim().is_empty()) {
        cluster.execute(statement);
    }
    cluster
}

fn target(name: &str, cluster: &PgCluster, credentials: &str, database: &str) -> TargetDatabase {
    TargetDatabase::parse(&format!(
        "{name}=postgres://{credentials}@127.0.0.1:{}/{database}",
        cluster.port()
    ))
    .unwrap()
}

async fn server(cluster: &PgCluster, extra: Vec<TargetDatabase>) -> TestServer {
    let db = Arc::new(TestDb::new(Db::Sqlite).await);
    let mut targets = vec![target(
        "main",
        cluster,
        "observer:observer-secret",
        "postgres",
    )];
    targets.extend(extra);
    TestServer::start_configured(db, TestClock::running(), move |c| {
        c.target_databases = targets;
        c.observe_interval = Duration::from_millis(300);
        c.observe_activity_interval = Duration::from_millis(50);
        c.plan_interval = Duration::from_millis(50);
    })
    .await
}

/// A session of `role` with its own `application_name`, as any service connects.
async fn session(cluster: &PgCluster, role: &str, application: &str) -> PgConnection {
    PgConnectOptions::from_str(&format!(
        "postgres://{role}@127.0.0.1:{}/postgres",
        cluster.port()
    ))
    .unwrap()
    .application_name(application)
    .connect()
    .await
    .unwrap()
}

async fn read_old_column(conn: &mut PgConnection, times: i64) {
    for id in 1..=times {
        let _: Option<String> = sqlx::query_scalar("SELECT username FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    }
}

async fn create(s: &TestServer, key: &str, target: &str) {
    let (status, body) = s
        .post(
            "/v1/migrations",
            json!({"key": key, "reason": "rename username", "soak_seconds": SOAK_SECONDS,
                "target_database": target, "old_shape": ["column:users.username"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// expand recorded, then every stage to 100% up to complete at 100%, the service `users-svc`
/// acknowledging each change.
async fn to_complete(s: &TestServer, key: &str) {
    walk(s, key, 5).await;
    let m = s.migration(key).await;
    assert_eq!(
        (m["stage"].as_str(), m["rollout_bp"].as_u64()),
        (Some("complete"), Some(10_000))
    );
}

/// expand recorded, then `stages` stages each advanced to and ramped to 100%, the service
/// `users-svc` acknowledging each change.
async fn walk(s: &TestServer, key: &str, stages: usize) {
    let mut steps = vec![("events", json!({"event": "expand_applied"}))];
    for _ in 0..stages {
        steps.push(("advance", json!({})));
        steps.push(("rollout", json!({"rollout_bp": 10_000})));
    }
    for (path, mut body) in steps {
        body["expected_version"] = s.version_of(key).await.into();
        body["reason"] = "test".into();
        let (status, answer) = s.post(&format!("/v1/migrations/{key}/{path}"), body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
        s.heartbeat("users-svc", "users-1", s.snapshot_version().await)
            .await;
    }
}

async fn plan_of(s: &TestServer, key: &str) -> Value {
    let (status, body) = s.get(&format!("/v1/migrations/{key}/plan")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn usage(s: &TestServer, key: &str) -> Value {
    let (status, body) = s.get(&format!("/v1/migrations/{key}/usage")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn database_check(s: &TestServer, key: &str) -> Value {
    let (status, body) = s.get(&format!("/v1/migrations/{key}/gate")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "database_usage")
        .cloned()
        .expect("the gate has a database_usage check")
}

/// Waits until the observer has finished a pass after this moment (so what ran before it is
/// counted).
async fn next_pass(s: &TestServer, key: &str) {
    let after = (s.clock.clock())();
    eventually(Duration::from_secs(20), "an observer pass", || async {
        usage(s, key).await["last_pass_ms"].as_i64().unwrap_or(0) > after
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_never_linked_the_client_blocks_the_gate_until_a_soak_passes_without_it() {
    let cluster = cluster();
    let s = server(&cluster, vec![]).await;
    let key = "users.username-to-handle";
    create(&s, key, "main").await;
    eventually(Duration::from_secs(20), "coverage to start", || async {
        usage(&s, key).await["covered_since_ms"].is_i64()
    })
    .await;

    // Before complete: the application's migrator reads the old column (its service is a
    // Switchyard client, live by heartbeat), so it is told apart as expected.
    s.heartbeat("users-svc", "users-1", s.snapshot_version().await)
        .await;
    let mut migrator = session(&cluster, "app", "users-svc").await;
    read_old_column(&mut migrator, 20).await;
    next_pass(&s, key).await;
    let report = usage(&s, key).await;
    let statements = report["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "{report}");
    assert_eq!(statements[0]["role"], "app");
    assert_eq!(statements[0]["verdict"], "expected", "{report}");
    assert!(statements[0]["calls"].as_u64().unwrap() >= 20, "{report}");
    assert_eq!(
        statements[0]["sessions"][0]["application_name"], "users-svc",
        "{report}"
    );
    drop(migrator);

    to_complete(&s, key).await;
    // Past the reporting grace: the window now starts after everything the migrator ran.
    s.clock.advance(Duration::from_millis(3 * MIN));
    next_pass(&s, key).await;
    let check = database_check(&s, key).await;
    assert_eq!(check["passed"], true, "{check}");

    // A nightly report nobody knew about reads the old column during the soak.
    let mut hidden = session(&cluster, "reports", "nightly-report").await;
    read_old_column(&mut hidden, 7).await;
    next_pass(&s, key).await;
    let check = database_check(&s, key).await;
    assert_eq!(check["passed"], false, "{check}");
    let evidence = check["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("SELECT username FROM users WHERE id = $1"),
        "{evidence}"
    );
    assert!(evidence.contains("7 call(s)"), "{evidence}");
    assert!(
        evidence.contains("nightly-report (role reports, from 127.0.0.1)"),
        "{evidence}"
    );
    assert!(
        check["remedy"]
            .as_str()
            .unwrap()
            .contains("switchyard usage")
    );
    // The migrator's own statement is not among them.
    assert!(!evidence.contains("users-svc"), "{evidence}");
    let report = usage(&s, key).await;
    let blocking: Vec<&Value> = report["statements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|st| st["verdict"] == "blocks")
        .collect();
    assert_eq!(blocking.len(), 1, "{report}");
    assert_eq!(blocking[0]["role"], "reports");
    assert_eq!(blocking[0]["calls_in_window"], 7);

    // The CLI shows the same evidence and exits non-zero while the check fails.
    assert_eq!(s.cli(&["usage", key]).await, 1);

    // It stops; a full soak later without it, the check passes again.
    drop(hidden);
    s.clock
        .advance(Duration::from_millis(SOAK_SECONDS * 1000 + MIN));
    next_pass(&s, key).await;
    let check = database_check(&s, key).await;
    assert_eq!(check["passed"], true, "{check}");
    assert_eq!(s.cli(&["usage", key]).await, 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unobservable_target_fails_the_check_with_the_reason() {
    let cluster = cluster();
    let s = server(
        &cluster,
        vec![
            target("badpw", &cluster, "observer:wrong-password", "postgres"),
            target("noext", &cluster, "observer:observer-secret", "plain"),
            target("noperm", &cluster, "nosy:nosy-secret", "postgres"),
        ],
    )
    .await;
    for (key, name, says) in [
        ("a.badpw", "badpw", "password authentication failed"),
        ("a.noext", "noext", "pg_stat_statements is not installed"),
        ("a.noperm", "noperm", "GRANT pg_read_all_stats TO nosy"),
    ] {
        create(&s, key, name).await;
        eventually(Duration::from_secs(20), says, || async {
            let check = database_check(&s, key).await;
            check["passed"] == false && check["evidence"].as_str().unwrap().contains(says)
        })
        .await;
        let report = usage(&s, key).await;
        assert!(
            report["failing"]["reason"].as_str().unwrap().contains(says),
            "{report}"
        );
        // The password never leaves the configuration.
        assert!(!report.to_string().contains("secret"), "{report}");
        assert!(!report.to_string().contains("wrong-password"), "{report}");
    }

    // Statistics reset during the soak: the evidence has a gap, so the check fails, saying so,
    // until a whole soak has been observed after it.
    let key = "a.reset";
    create(&s, key, "main").await;
    eventually(Duration::from_secs(20), "coverage to start", || async {
        usage(&s, key).await["covered_since_ms"].is_i64()
    })
    .await;
    to_complete(&s, key).await;
    s.clock.advance(Duration::from_millis(3 * MIN));
    next_pass(&s, key).await;
    assert_eq!(database_check(&s, key).await["passed"], true);
    cluster.execute("SELECT pg_stat_statements_reset()");
    eventually(
        Duration::from_secs(20),
        "the reset to be noticed",
        || async {
            let check = database_check(&s, key).await;
            check["passed"] == false
                && check["evidence"]
                    .as_str()
                    .unwrap()
                    .contains("pg_stat_statements was reset")
        },
    )
    .await;
    s.clock
        .advance(Duration::from_millis(SOAK_SECONDS * 1000 + MIN));
    next_pass(&s, key).await;
    assert_eq!(database_check(&s, key).await["passed"], true);
    s.stop().await;
}

/// Two replicas on one store observe one target: one holds the lease, and the calls are
/// counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_count_each_call_once() {
    let cluster = cluster();
    let pg = Arc::new(TestDb::new(Db::Postgres).await);
    let clock = TestClock::running();
    let configure = |c: &mut switchyard_server::startup::ServeConfig| {
        c.target_databases = vec![target(
            "main",
            &cluster,
            "observer:observer-secret",
            "postgres",
        )];
        c.observe_interval = Duration::from_millis(200);
        c.observe_activity_interval = Duration::from_millis(50);
    };
    let a = TestServer::start_configured(pg.clone(), clock.clone(), configure).await;
    let b = TestServer::start_configured(pg.clone(), clock.clone(), configure).await;
    let key = "users.replicated";
    create(&a, key, "main").await;
    // Replica b learns of the migration through the store's notification or its poll.
    eventually(
        Duration::from_secs(20),
        "coverage to start, seen from b",
        || async {
            let (status, body) = b.get(&format!("/v1/migrations/{key}/usage")).await;
            status == StatusCode::OK && body["covered_since_ms"].is_i64()
        },
    )
    .await;
    next_pass(&a, key).await;
    let mut hidden = session(&cluster, "reports", "nightly-report").await;
    read_old_column(&mut hidden, 25).await;
    // Several passes, by whichever replica holds the lease.
    for _ in 0..4 {
        next_pass(&b, key).await;
    }
    for s in [&a, &b] {
        let report = usage(s, key).await;
        let calls: u64 = report["statements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|st| st["calls"].as_u64().unwrap())
            .sum();
        assert_eq!(calls, 25, "{report}");
    }
    a.stop().await;
    b.stop().await;
}

/// A plan ramping the old side's writes down halts on the database's own evidence: a caller
/// that is not one of the migration's clients still reads the old column. The migration's own
/// service reading it (its migrator's old side) does not halt it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_halts_when_an_outside_caller_reads_the_old_shape_it_stops_writing() {
    let cluster = cluster();
    let s = server(&cluster, vec![]).await;
    let key = "users.planned-rename";
    create(&s, key, "main").await;
    eventually(Duration::from_secs(20), "coverage to start", || async {
        usage(&s, key).await["covered_since_ms"].is_i64()
    })
    .await;
    // Up to live at 100%, then into rampdown (its writes to the old shape at 100% still).
    walk(&s, key, 3).await;
    let version = s.version_of(key).await;
    let (status, body) = s
        .post(
            &format!("/v1/migrations/{key}/advance"),
            json!({ "expected_version": version, "reason": "test" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    s.heartbeat("users-svc", "users-1", s.snapshot_version().await)
        .await;
    assert_eq!(s.migration(key).await["stage"], "rampdown");
    let (status, body) = s
        .call(
            reqwest::Method::PUT,
            &format!("/v1/migrations/{key}/plan"),
            Some(json!({ "stages": [{ "stage": "rampdown",
                "steps": [{ "rollout_bp": 2500, "hold_seconds": 3600 }, { "rollout_bp": 10000 }],
                "then": "stop" }], "reason": "ramp the old writes down" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eventually(Duration::from_secs(20), "the first step", || async {
        s.migration(key).await["rollout_bp"] == 2500
    })
    .await;
    s.heartbeat("users-svc", "users-1", s.snapshot_version().await)
        .await;

    // The migration's own service still reads the old column on its old side: expected.
    let mut migrator = session(&cluster, "app", "users-svc").await;
    read_old_column(&mut migrator, 10).await;
    next_pass(&s, key).await;
    next_pass(&s, key).await;
    let plan = plan_of(&s, key).await;
    assert_eq!(plan["status"], "running", "{plan}");

    // A report nobody told about the migration reads it too.
    let mut hidden = session(&cluster, "reports", "nightly-report").await;
    read_old_column(&mut hidden, 4).await;
    eventually(Duration::from_secs(20), "the plan to halt", || async {
        plan_of(&s, key).await["status"] == "halted"
    })
    .await;
    let why = plan_of(&s, key).await["status_reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        why.starts_with("halted by guardrail database_old_shape_use: database main ran `SELECT username FROM users WHERE id = $1` 4 time(s)"),
        "{why}"
    );
    assert!(
        why.contains(
            "by nightly-report (role reports, from 127.0.0.1), not a client of this migration"
        ),
        "{why}"
    );
    assert!(!why.contains("users-svc"), "{why}");
    assert_eq!(s.migration(key).await["rollout_bp"], 2500);
    drop((migrator, hidden));
    s.stop().await;
}
