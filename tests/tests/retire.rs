//! Retire before drop: once the gate passes, the old shape is renamed (recoverable), a caller
//! still using it fails and the observer sees the failure in the target's server log, `restore`
//! gives the names back with every row intact, and `contracted` waits out the probation. On an
//! own PostgreSQL cluster writing jsonlog, with `pg_stat_statements` preloaded.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use switchyard_domain::SchemaObject;
use switchyard_domain::schema::{restore_sql, retire_sql};
use switchyard_server::startup::TargetDatabase;
use switchyard_tests::pgcluster::PgCluster;
use switchyard_tests::{Db, TestClock, TestDb, TestServer, eventually};

const MIN: u64 = 60_000;
const SOAK_SECONDS: u64 = 600;
const PROBATION_SECONDS: u64 = 3600;
const KEY: &str = "users.username-to-handle";

const SETUP: &str = "
    CREATE EXTENSION pg_stat_statements;
    CREATE TABLE users (id bigint PRIMARY KEY, username text, handle text);
    INSERT INTO users SELECT g, 'user' || g, 'user' || g FROM generate_series(1, 100) g;
    CREATE ROLE observer LOGIN;
    GRANT pg_read_all_stats TO observer;
    GRANT EXECUTE ON FUNCTION pg_current_logfile(text), pg_stat_file(text, boolean),
        pg_read_binary_file(text, bigint, bigint, boolean) TO observer;
    CREATE ROLE reports LOGIN;
    GRANT SELECT ON users TO reports
";

async fn reader(cluster: &PgCluster) -> PgConnection {
    PgConnectOptions::from_str(&format!(
        "postgres://reports@127.0.0.1:{}/postgres",
        cluster.port()
    ))
    .unwrap()
    .application_name("nightly-report")
    .connect()
    .await
    .unwrap()
}

async fn read_old(conn: &mut PgConnection, id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT username FROM users WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await
}

async fn change(s: &TestServer, path: &str, mut body: Value) -> (StatusCode, Value) {
    body["expected_version"] = s.version_of(KEY).await.into();
    body["reason"] = "test".into();
    s.post(&format!("/v1/migrations/{KEY}/{path}"), body).await
}

async fn record(s: &TestServer, event: &str) -> (StatusCode, Value) {
    change(s, "events", json!({ "event": event })).await
}

async fn retire_check(s: &TestServer) -> Value {
    let (status, body) = s.get(&format!("/v1/migrations/{KEY}/gate")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "retire_probation")
        .cloned()
        .expect("a retire_probation check")
}

async fn failing(s: &TestServer) -> Vec<String> {
    let (_, body) = s.get(&format!("/v1/migrations/{KEY}/gate")).await;
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] != true)
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the observer has looked at the current retire (its watch started).
async fn watched(s: &TestServer) {
    eventually(
        Duration::from_secs(20),
        "the observer to look at the retire",
        || async {
            !retire_check(s).await["evidence"]
                .as_str()
                .unwrap()
                .contains("has not looked")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_shape_fails_hidden_callers_restores_intact_and_holds_the_drop_for_its_probation()
{
    let cluster = PgCluster::builder()
        .setting("logging_collector", "on")
        .setting("log_destination", "'stderr,jsonlog'")
        .start();
    for statement in SETUP.split(';').filter(|s| !s.trim().is_empty()) {
        cluster.execute(statement);
    }
    let db = Arc::new(TestDb::new(Db::Sqlite).await);
    let url = format!(
        "main=postgres://observer@127.0.0.1:{}/postgres",
        cluster.port()
    );
    let s = TestServer::start_configured(db, TestClock::running(), |c| {
        c.target_databases = vec![TargetDatabase::parse(&url).unwrap()];
        c.observe_interval = Duration::from_millis(300);
        c.observe_activity_interval = Duration::from_millis(100);
    })
    .await;

    // Opting in needs the database declared.
    let (status, body) = s
        .post(
            "/v1/migrations",
            json!({"key": "a.b", "reason": "r", "retire_probation_seconds": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "not_applicable");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("target_database")
    );

    let (status, body) = s
        .post(
            "/v1/migrations",
            json!({"key": KEY, "reason": "rename username", "soak_seconds": SOAK_SECONDS,
                "target_database": "main", "old_shape": ["column:users.username"],
                "retire_probation_seconds": PROBATION_SECONDS}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["retire_probation_seconds"], PROBATION_SECONDS);
    assert_eq!(body["retired_at_ms"], Value::Null);
    eventually(Duration::from_secs(20), "coverage to start", || async {
        s.get(&format!("/v1/migrations/{KEY}/usage")).await.1["covered_since_ms"].is_i64()
    })
    .await;

    // To complete at 100%, then a whole soak: every check passes but the retire's.
    let (status, body) = record(&s, "expand_applied").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for _ in 0..5 {
        for (path, body) in [
            ("advance", json!({})),
            ("rollout", json!({"rollout_bp": 10_000})),
        ] {
            let (status, answer) = change(&s, path, body).await;
            assert_eq!(status, StatusCode::OK, "{path}: {answer}");
        }
    }
    s.clock
        .advance(Duration::from_millis(SOAK_SECONDS * 1000 + 3 * MIN));
    eventually(
        Duration::from_secs(20),
        "only the retire to fail",
        || async { failing(&s).await == ["retire_probation"] },
    )
    .await;
    let check = retire_check(&s).await;
    assert_eq!(check["evidence"], "the old shape is not retired", "{check}");
    let (status, body) = record(&s, "contracted").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("retire_probation"),
        "{body}"
    );

    // Retire: the rename, then the event.
    let objects: Vec<SchemaObject> = vec!["column:users.username".parse().unwrap()];
    cluster.execute(&retire_sql(KEY, &objects));
    let (status, body) = record(&s, "retired").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["retired_at_ms"].is_i64(), "{body}");
    // While retired the front stays where it is.
    let (status, body) = change(&s, "rollout", json!({"rollout_bp": 5_000})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("retired"),
        "{body}"
    );
    watched(&s).await;
    let check = retire_check(&s).await;
    assert!(
        check["evidence"]
            .as_str()
            .unwrap()
            .contains("column:users.username is renamed to username__retired"),
        "{check}"
    );

    // A report nobody knew about now fails, and the observer sees it in the server log.
    let mut hidden = reader(&cluster).await;
    let refused = read_old(&mut hidden, 5).await.unwrap_err();
    assert!(refused.to_string().contains("username"), "{refused}");
    eventually(
        Duration::from_secs(20),
        "the failure in the gate",
        || async {
            retire_check(&s).await["evidence"]
                .as_str()
                .unwrap()
                .contains("failed on the retired shape")
        },
    )
    .await;
    let check = retire_check(&s).await;
    let evidence = check["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("SELECT username FROM users WHERE id = $1"),
        "{evidence}"
    );
    assert!(evidence.contains("42703"), "{evidence}");
    assert!(
        evidence.contains("nightly-report (role reports"),
        "{evidence}"
    );
    assert!(
        check["remedy"].as_str().unwrap().contains("restore"),
        "{check}"
    );

    // Restore: the names come back with every row.
    cluster.execute(&restore_sql(KEY, &objects));
    let (status, body) = record(&s, "restored").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["retired_at_ms"], Value::Null);
    assert_eq!(
        read_old(&mut hidden, 5).await.unwrap().as_deref(),
        Some("user5")
    );
    assert_eq!(
        cluster.execute("SELECT count(*) FROM users WHERE username = 'user' || id"),
        "100"
    );
    drop(hidden);

    // Retired again, nobody failing: the drop waits out the probation, then passes.
    cluster.execute(&retire_sql(KEY, &objects));
    let (status, body) = record(&s, "retired").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    watched(&s).await;
    let check = retire_check(&s).await;
    assert_eq!(check["passed"], false);
    assert!(
        check["evidence"]
            .as_str()
            .unwrap()
            .contains("of a 1h probation"),
        "{check}"
    );
    let (status, body) = record(&s, "contracted").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    s.clock
        .advance(Duration::from_millis(PROBATION_SECONDS * 1000 + MIN));
    eventually(Duration::from_secs(20), "the probation to pass", || async {
        failing(&s).await.is_empty()
    })
    .await;
    let (status, body) = record(&s, "contracted").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stage"], "contracted");
    s.stop().await;
}
