//! Durability: a server killed with SIGKILL while mutations are in flight loses no acknowledged
//! mutation and no audit record, on SQLite and on Postgres.

mod common;

use common::{kill_hard, serve, terminate};
use serde_json::{Value, json};
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Mutex;

const TOKEN: &str = "crash-test-admin-token-0123";
/// Acknowledged mutations after which the server is killed (writers are still sending).
const KILL_AFTER: usize = 150;
const MIGRATIONS: [&str; 3] = ["crash.a", "crash.b", "crash.c"];

async fn call(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let request = match body {
        Some(b) => http.post(format!("{base}{path}")).json(&b),
        None => http.get(format!("{base}{path}")),
    };
    let response = request
        .bearer_auth(TOKEN)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

async fn crash_loses_nothing_acknowledged(database_url: &str) {
    let served = serve(database_url, Some(TOKEN));
    let http = reqwest::Client::new();
    let base = served.http.clone();
    for key in MIGRATIONS {
        let m = call(
            &http,
            &base,
            "/v1/migrations",
            Some(json!({"key": key, "reason": "setup"})),
        )
        .await
        .unwrap();
        let mut version = m["version"].as_u64().unwrap();
        for (path, body) in [
            ("events", json!({"event": "expand_applied"})),
            ("advance", json!({})),
        ] {
            let mut body = body;
            body["expected_version"] = version.into();
            body["reason"] = "setup".into();
            version = call(
                &http,
                &base,
                &format!("/v1/migrations/{key}/{path}"),
                Some(body),
            )
            .await
            .unwrap()["version"]
                .as_u64()
                .unwrap();
        }
    }

    // One writer per migration ramps it over and over; every acknowledged (version, rollout)
    // is remembered.
    let acked = Arc::new(Mutex::new(Vec::<(String, u64, u64)>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for key in MIGRATIONS {
        let (http, base, acked, count) = (http.clone(), base.clone(), acked.clone(), count.clone());
        writers.push(tokio::spawn(async move {
            let mut version = call(&http, &base, &format!("/v1/migrations/{key}"), None)
                .await
                .unwrap()["version"]
                .as_u64()
                .unwrap();
            for i in 1u64.. {
                let rollout = (i * 37) % 10_001;
                let body = json!({"rollout_bp": rollout, "expected_version": version, "reason": format!("ramp {i}")});
                match call(&http, &base, &format!("/v1/migrations/{key}/rollout"), Some(body)).await {
                    Ok(m) => {
                        version = m["version"].as_u64().unwrap();
                        acked.lock().await.push((key.to_owned(), version, rollout));
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    // The server is gone: stop.
                    Err(_) => return,
                }
            }
        }));
    }
    while count.load(Ordering::SeqCst) < KILL_AFTER {
        tokio::task::yield_now().await;
    }
    kill_hard(served);
    for w in writers {
        w.await.unwrap();
    }

    let served = serve(database_url, Some(TOKEN));
    let base = served.http.clone();
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= KILL_AFTER);
    for key in MIGRATIONS {
        let mine: Vec<&(String, u64, u64)> = acked.iter().filter(|(k, ..)| k == key).collect();
        let Some(&&(_, last_version, last_rollout)) = mine.last() else {
            continue;
        };
        let m = call(&http, &base, &format!("/v1/migrations/{key}"), None)
            .await
            .unwrap();
        // Every acknowledged change is there (the one in flight at the kill may have landed too).
        let version = m["version"].as_u64().unwrap();
        assert!(
            version >= last_version,
            "{key}: at {version}, acknowledged {last_version}"
        );
        if version == last_version {
            assert_eq!(m["rollout_bp"].as_u64(), Some(last_rollout), "{key}");
        }
        let audit = call(
            &http,
            &base,
            &format!("/v1/migrations/{key}/audit?limit=500"),
            None,
        )
        .await
        .unwrap();
        let entries = audit["entries"].as_array().unwrap();
        for &&(_, v, rollout) in &mine {
            let entry = entries
                .iter()
                .find(|e| e["version"].as_u64() == Some(v))
                .unwrap_or_else(|| panic!("{key}: audit record of acknowledged version {v} lost"));
            assert_eq!(
                entry["after"]["rollout_bp"].as_u64(),
                Some(rollout),
                "{key} v{v}"
            );
        }
    }
    terminate(served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_acknowledged_mutation_across_sigkill() {
    let dir = std::env::temp_dir().join(format!("switchyard-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    crash_loses_nothing_acknowledged(&format!("sqlite://{}/switchyard.db", dir.display())).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_acknowledged_mutation_across_sigkill() {
    let admin = common::postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("Postgres tests need a server at {admin}: {e}"));
    let name = format!("switchyard_crash_{}", std::process::id());
    let drop_db = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::Executor::execute(&mut conn, drop_db.as_str())
        .await
        .unwrap();
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    crash_loses_nothing_acknowledged(&format!("{base}/{name}")).await;
    sqlx::Executor::execute(&mut conn, drop_db.as_str())
        .await
        .unwrap();
}
