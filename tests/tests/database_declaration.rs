//! A migration declares the database it migrates (a name this server is configured with) and
//! the old-shape objects its contract drops; both are validated at creation, stored, and sent
//! by every transport. The target's URL never leaves the configuration.

use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;
use switchyard_proto::v1 as pb;
use switchyard_server::startup::TargetDatabase;
use switchyard_tests::{Db, TestClock, TestDb, TestServer, both_databases};

const TARGET: &str = "main=postgres://observer:observer-secret-password@127.0.0.1:5432/app";

async fn start(db: Arc<TestDb>) -> TestServer {
    TestServer::start_configured(db, TestClock::new(), |c| {
        c.target_databases = vec![TargetDatabase::parse(TARGET).unwrap()];
    })
    .await
}

async fn declared_database_is_validated_stored_and_sent(db: Db) {
    let db = Arc::new(TestDb::new(db).await);
    let s = start(db.clone()).await;

    let (status, created) = s
        .post(
            "/v1/migrations",
            json!({"key": "users.handle", "reason": "rename", "target_database": "main",
                "old_shape": ["table:legacy_users", "column:users.username", "column:users.username",
                    "index:public.users_username_idx"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let expected = json!([
        "column:users.username",
        "index:public.users_username_idx",
        "table:legacy_users"
    ]);
    assert_eq!(created["old_shape"], expected, "sorted, duplicates once");
    assert_eq!(created["target_database"], "main");

    // gRPC sends the same declaration.
    let m = s
        .grpc
        .clone()
        .get_migration(s.req(pb::GetMigrationRequest {
            key: "users.handle".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.target_database, "main");
    assert_eq!(
        m.old_shape,
        [
            "column:users.username",
            "index:public.users_username_idx",
            "table:legacy_users"
        ]
    );

    // Refused with what is allowed, and nothing created.
    for (body, says) in [
        (
            json!({"key": "a.b", "reason": "r", "old_shape": ["users.username"]}),
            "column:[schema.]table.column",
        ),
        (
            json!({"key": "a.b", "reason": "r", "old_shape": ["column:\"Users\".name"]}),
            "plain identifier",
        ),
        (
            json!({"key": "a.b", "reason": "r", "target_database": "reporting"}),
            "configured: main",
        ),
        (
            json!({"key": "a.b", "reason": "r", "target_database": "Main DB"}),
            "a-z, 0-9",
        ),
    ] {
        let (status, error) = s.post("/v1/migrations", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let (status, _) = s.get("/v1/migrations/a.b").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let too_many: Vec<String> = (0..65).map(|i| format!("table:t{i}")).collect();
    let (status, error) = s
        .post(
            "/v1/migrations",
            json!({"key": "a.b", "reason": "r", "old_shape": too_many}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error["message"].as_str().unwrap().contains("up to 64"));

    // Over gRPC, and through the CLI (its parser and code).
    let m = s
        .grpc
        .clone()
        .create_migration(s.req(pb::CreateMigrationRequest {
            key: "orders.split".into(),
            reason: "split".into(),
            target_database: "main".into(),
            old_shape: vec!["column:orders.ship_to".into()],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.old_shape, ["column:orders.ship_to"]);
    let code = s
        .cli(&[
            "migration",
            "create",
            "prices.numeric",
            "--reason",
            "float to numeric",
            "--target-database",
            "main",
            "--drops",
            "column:prices.amount_float",
        ])
        .await;
    assert_eq!(code, 0);
    assert_eq!(
        s.migration("prices.numeric").await["old_shape"],
        json!(["column:prices.amount_float"])
    );

    // Taken from the contract file by the SQL parser.
    let dir = std::env::temp_dir().join(format!("switchyard-contract-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let contract = dir.join("0009_contract.sql");
    std::fs::write(
        &contract,
        "-- switchyard: contract emails.lower\nSET lock_timeout = '2s';\n\
         ALTER TABLE public.users DROP COLUMN email_raw, DROP COLUMN email_checked;\n\
         DROP INDEX CONCURRENTLY users_email_raw_idx;\n",
    )
    .unwrap();
    let code = s
        .cli(&[
            "migration",
            "create",
            "emails.lower",
            "--reason",
            "lowercase",
            "--contract-sql",
            contract.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code, 0);
    assert_eq!(
        s.migration("emails.lower").await["old_shape"],
        json!([
            "column:public.users.email_checked",
            "column:public.users.email_raw",
            "index:users_email_raw_idx"
        ])
    );
    // A file with no drop in it is refused, nothing created.
    std::fs::write(&contract, "CREATE INDEX CONCURRENTLY i ON t (c);\n").unwrap();
    let code = s
        .cli(&[
            "migration",
            "create",
            "other.thing",
            "--reason",
            "r",
            "--contract-sql",
            contract.to_str().unwrap(),
        ])
        .await;
    assert_ne!(code, 0);
    assert_eq!(
        s.get("/v1/migrations/other.thing").await.0,
        StatusCode::NOT_FOUND
    );
    let _ = std::fs::remove_dir_all(&dir);

    // Nothing the server answers carries the target's URL or password.
    for path in [
        "/v1/migrations",
        "/openapi.json",
        "/v1/vocabulary",
        "/metrics",
    ] {
        let (_, body) = s.get(path).await;
        let text = body.to_string();
        assert!(
            !text.contains("observer-secret-password"),
            "{path} shows the password"
        );
        assert!(!text.contains("127.0.0.1:5432/app"), "{path} shows the URL");
    }
    s.stop().await;

    // Stored: a restart reads it back.
    let s = start(db).await;
    assert_eq!(s.migration("users.handle").await["old_shape"], expected);
    s.stop().await;
}

both_databases!(declared_database_is_validated_stored_and_sent);

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id())
}

#[test]
fn a_target_database_is_name_equals_postgres_url() {
    for (raw, says) in [
        ("main", "NAME=URL"),
        ("main=mysql://x/y", "postgres://"),
        ("Main=postgres://x/y", "a-z, 0-9"),
    ] {
        let e = TargetDatabase::parse(raw).unwrap_err();
        assert!(e.contains(says), "{raw}: {e}");
    }
    // Shown (in logs, in a failed test) without its password.
    let t = TargetDatabase::parse(TARGET).unwrap();
    let shown = format!("{t:?}");
    assert!(!shown.contains("observer-secret-password"), "{shown}");
    assert!(
        shown.starts_with("main=postgres://observer:***@"),
        "{shown}"
    );
}
