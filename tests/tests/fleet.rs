//! The fleet the safety rules count (rules 3 and 5, the contract gate) is kept by heartbeats:
//! an instance belongs to the token that registered it, so no other token can update it or
//! say goodbye for it; keys that name no migration are not stored, only counted.

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchyard_proto::v1 as pb;
use switchyard_tests::{CLIENT_TTL, Db, TestClock, TestDb, TestServer, both_databases, request_as};

#[derive(Clone, Copy, Debug)]
enum Via {
    Http,
    Grpc,
}

/// A heartbeat (or goodbye) with `token`: `Ok` or the refusal's status and message.
async fn beat(
    srv: &TestServer,
    via: Via,
    token: &str,
    instance: &str,
    applied: u64,
    migrations: &[&str],
    leaving: bool,
) -> Result<(), (u16, String)> {
    let migrations: Vec<String> = migrations.iter().map(|m| (*m).to_owned()).collect();
    match via {
        Via::Http => {
            let (status, body) = srv
                .call_as(
                    token,
                    reqwest::Method::POST,
                    "/v1/clients/heartbeat",
                    Some(json!({"service": "api", "instance_id": instance,
                        "applied_version": applied, "migrations": migrations, "leaving": leaving})),
                )
                .await;
            if status == StatusCode::OK {
                Ok(())
            } else {
                Err((
                    status.as_u16(),
                    body["message"].as_str().unwrap_or("").to_owned(),
                ))
            }
        }
        Via::Grpc => {
            let request = pb::HeartbeatRequest {
                service: "api".to_owned(),
                instance_id: instance.to_owned(),
                applied_version: applied,
                migrations,
                leaving,
            };
            match srv.grpc.clone().heartbeat(request_as(token, request)).await {
                Ok(_) => Ok(()),
                Err(s) => Err((s.code() as u16, s.message().to_owned())),
            }
        }
    }
}

fn denied(via: Via) -> u16 {
    match via {
        Via::Http => 403,
        Via::Grpc => tonic::Code::PermissionDenied as u16,
    }
}

/// The instance list and the live fleet the rules count, to compare before and after.
async fn fleet(srv: &TestServer) -> (Value, Vec<(String, String, u64)>) {
    let (status, listed) = srv.get("/v1/clients").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let now = srv.clock.clock()();
    // The tokens here are unscoped: every migration's rules count the same fleet.
    let live = srv
        .server
        .app
        .store
        .fleet("fleet.m", now, CLIENT_TTL)
        .await
        .unwrap();
    let mut live: Vec<_> = live
        .live
        .into_iter()
        .map(|i| (i.service, i.instance_id, i.applied_version.0))
        .collect();
    live.sort();
    (listed["instances"].clone(), live)
}

async fn token(srv: &TestServer, name: &str, role: &str) -> (String, u64) {
    let (status, body) = srv
        .post("/v1/tokens", json!({ "name": name, "role": role }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["token"].as_str().unwrap().to_owned(),
        body["info"]["id"].as_u64().unwrap(),
    )
}

async fn an_instance_belongs_to_the_token_that_registered_it(db: Db) {
    let srv = TestServer::start(db).await;
    srv.create("fleet.m", false, &[]).await;
    let v = srv.snapshot_version().await;
    let (a, a_id) = token(&srv, "app-a", "reader").await;
    let (b, _) = token(&srv, "app-b", "reader").await;
    for via in [Via::Http, Via::Grpc] {
        let id = format!("api-{via:?}");
        beat(&srv, via, &a, &id, v, &["fleet.m"], false)
            .await
            .unwrap();
        let before = fleet(&srv).await;
        assert_eq!(before.1, vec![("api".into(), id.clone(), v)], "{via:?}");

        // B can neither overwrite A's instance nor delete it; the refusal names the owner.
        for leaving in [false, true] {
            let (code, message) = beat(&srv, via, &b, &id, 0, &["fleet.m"], leaving)
                .await
                .expect_err("another token's instance");
            assert_eq!(code, denied(via), "{via:?} leaving={leaving}: {message}");
            assert!(
                message.contains(&format!("api/{id}"))
                    && message.contains("\"app-a\"")
                    && message.contains(&format!("id {a_id}")),
                "{via:?}: {message}"
            );
            assert!(
                !message.contains(&a),
                "the owner's secret leaked: {message}"
            );
            assert_eq!(fleet(&srv).await, before, "{via:?} leaving={leaving}");
        }

        // A still can, both.
        beat(&srv, via, &a, &id, v, &["fleet.m"], false)
            .await
            .unwrap();
        beat(&srv, via, &a, &id, v, &[], true).await.unwrap();
        assert_eq!(fleet(&srv).await.1, vec![], "{via:?}");
        // Gone, it is anyone's to register (a goodbye for nothing is no error).
        beat(&srv, via, &b, &id, v, &[], true).await.unwrap();
        beat(&srv, via, &b, &id, v, &[], false).await.unwrap();
        beat(&srv, via, &b, &id, v, &[], true).await.unwrap();
    }
}

async fn an_admin_removes_any_instance_and_a_revoked_owner_lets_go(db: Db) {
    let srv = TestServer::start(db).await;
    let v = srv.snapshot_version().await;
    let (a, a_id) = token(&srv, "app-a", "reader").await;
    let (b, _) = token(&srv, "app-b", "reader").await;
    beat(&srv, Via::Http, &a, "api-1", v, &[], false)
        .await
        .unwrap();
    beat(&srv, Via::Grpc, &a, "api-2", v, &[], false)
        .await
        .unwrap();
    // An admin removes an instance by hand, over either transport.
    beat(&srv, Via::Grpc, &srv.token, "api-1", v, &[], true)
        .await
        .unwrap();
    assert_eq!(fleet(&srv).await.1, vec![("api".into(), "api-2".into(), v)]);
    // A rotated token: once A is revoked, B takes its instance over.
    let (status, body) = srv
        .post(&format!("/v1/tokens/{a_id}/revoke"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    beat(&srv, Via::Http, &b, "api-2", v, &[], false)
        .await
        .unwrap();
    beat(&srv, Via::Http, &b, "api-2", v, &[], true)
        .await
        .unwrap();
    assert_eq!(fleet(&srv).await.1, vec![]);
    // A row from before owners were recorded is claimed by the next token that heartbeats it.
    let now = srv.clock.clock()();
    legacy_instance(&srv, "api", "legacy-1", v, now).await;
    beat(&srv, Via::Grpc, &b, "legacy-1", v, &[], false)
        .await
        .unwrap();
    let (c, _) = token(&srv, "app-c", "reader").await;
    let (code, message) = beat(&srv, Via::Http, &c, "legacy-1", v, &[], true)
        .await
        .expect_err("claimed by B");
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("\"app-b\""), "{message}");
}

/// The process-wide count of ignored keys from `source` (tests in this binary share it).
async fn unknown_reports(srv: &TestServer, source: &str) -> u64 {
    let (status, text) = srv.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let line = format!("switchyard_unknown_migration_reports_total{{source=\"{source}\"}} ");
    text.as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |n| n.trim().parse().unwrap())
}

async fn keys_that_name_no_migration_are_ignored_and_counted(db: Db) {
    let srv = TestServer::start(db).await;
    srv.create("fleet.known", false, &[]).await;
    let v = srv.snapshot_version().await;
    let store = &srv.server.app.store;
    let now = srv.clock.clock()();

    // A heartbeat naming 50 unknown keys (and one known) stores only the known one.
    let before = unknown_reports(&srv, "heartbeat").await;
    let unknown: Vec<String> = (0..50).map(|i| format!("fleet.unknown-{i}")).collect();
    let mut named: Vec<&str> = unknown.iter().map(String::as_str).collect();
    named.push("fleet.known");
    beat(&srv, Via::Http, &srv.token, "api-1", v, &named, false)
        .await
        .unwrap();
    beat(&srv, Via::Grpc, &srv.token, "api-2", v, &named, false)
        .await
        .unwrap();
    for key in &unknown {
        let listed = store.instances_of(key, now, CLIENT_TTL).await.unwrap();
        assert_eq!(listed, vec![], "{key}");
    }
    let known = store
        .instances_of("fleet.known", now, CLIENT_TTL)
        .await
        .unwrap();
    assert_eq!(known.len(), 2, "{known:?}");
    assert!(unknown_reports(&srv, "heartbeat").await >= before + 100);

    // Telemetry for an unknown key stores nothing; the known key's entry is added.
    let before = unknown_reports(&srv, "telemetry").await;
    let minute = now - now % 60_000;
    let mut counts = switchyard_domain::traffic::TrafficCounts::default();
    counts.old.reads = 7;
    let entry = |key: &str| {
        let mut entry =
            serde_json::to_value(switchyard_proto::json::TrafficCounts::from(&counts)).unwrap();
        entry["key"] = key.into();
        entry["minute_ms"] = minute.into();
        entry
    };
    let (status, body) = srv
        .post(
            "/v1/clients/telemetry",
            json!({"service": "api", "instance_id": "api-1",
                "entries": [entry("fleet.unknown-0"), entry("fleet.known"), entry("fleet.unknown-1")]}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(store.traffic("fleet.unknown-0", 0).await.unwrap(), vec![]);
    assert_eq!(store.traffic("fleet.unknown-1", 0).await.unwrap(), vec![]);
    let (status, traffic) = srv.get("/v1/migrations/fleet.known/traffic").await;
    assert_eq!(status, StatusCode::OK, "{traffic}");
    assert_eq!(traffic["total"]["old"]["reads"], 7, "{traffic}");
    assert!(unknown_reports(&srv, "telemetry").await >= before + 2);
}

async fn a_token_registers_a_bounded_number_of_live_instances(db: Db) {
    let db = std::sync::Arc::new(TestDb::new(db).await);
    let srv = TestServer::start_configured(db, TestClock::new(), |c| {
        c.max_instances_per_token = 3;
    })
    .await;
    let v = srv.snapshot_version().await;
    let (a, _) = token(&srv, "app-a", "reader").await;
    let (b, _) = token(&srv, "app-b", "reader").await;
    for i in 1..=3 {
        beat(&srv, Via::Http, &a, &format!("api-{i}"), v, &[], false)
            .await
            .unwrap();
    }
    for via in [Via::Http, Via::Grpc] {
        let (code, message) = beat(&srv, via, &a, "api-4", v, &[], false)
            .await
            .expect_err("one more than the bound");
        assert_eq!(code, denied(via), "{message}");
        assert!(
            message.contains("3 live instances") && message.contains("api/api-4"),
            "{message}"
        );
    }
    assert_eq!(fleet(&srv).await.1.len(), 3);
    // The registered ones keep heartbeating; another token has its own bound.
    beat(&srv, Via::Grpc, &a, "api-3", v, &[], false)
        .await
        .unwrap();
    beat(&srv, Via::Grpc, &b, "api-b", v, &[], false)
        .await
        .unwrap();
    // A goodbye, or an instance gone silent past the client TTL, frees a place.
    beat(&srv, Via::Http, &a, "api-1", v, &[], true)
        .await
        .unwrap();
    beat(&srv, Via::Http, &a, "api-4", v, &[], false)
        .await
        .unwrap();
    beat(&srv, Via::Http, &a, "api-5", v, &[], false)
        .await
        .expect_err("at the bound again");
    srv.clock
        .advance(CLIENT_TTL + std::time::Duration::from_secs(1));
    beat(&srv, Via::Http, &a, "api-5", v, &[], false)
        .await
        .unwrap();
}

async fn instance_lists_come_in_pages(db: Db) {
    let srv = TestServer::start(db).await;
    srv.create("fleet.paged", false, &[]).await;
    let v = srv.snapshot_version().await;
    // Services with a slash and instances interleaved, to test the cursor's order and split.
    let mut all = Vec::new();
    for service in ["a/x", "api", "b"] {
        for i in 0..3 {
            let instance = format!("{service}-{i}");
            let (status, body) = srv
                .post(
                    "/v1/clients/heartbeat",
                    json!({"service": service, "instance_id": instance, "applied_version": v,
                        "migrations": ["fleet.paged"]}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            all.push((service.to_owned(), instance));
        }
    }
    for base in ["/v1/clients?", "/v1/migrations/fleet.paged/instances?"] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("{base}limit=4");
            if let Some(a) = &after {
                path.push_str(&format!("&after={}", urlencode(a)));
            }
            let (status, page) = srv.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {page}");
            let listed = page["instances"].as_array().unwrap();
            assert!(listed.len() <= 4, "{page}");
            seen.extend(listed.iter().map(|i| {
                (
                    i["service"].as_str().unwrap().to_owned(),
                    i["instance_id"].as_str().unwrap().to_owned(),
                )
            }));
            match page["next_after"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(sorted(seen), all, "{base}");
    }
    // gRPC pages the same way.
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = srv
            .grpc
            .clone()
            .list_instances(srv.req(pb::ListInstancesRequest {
                migration: String::new(),
                limit: 5,
                after: after.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        seen.extend(
            page.instances
                .into_iter()
                .map(|i| (i.service, i.instance_id)),
        );
        if page.next_after.is_empty() {
            break;
        }
        after = page.next_after;
    }
    assert_eq!(sorted(seen), all);
    // Without a limit, one page holds them all; a bad page size or cursor is a 400.
    let (_, page) = srv.get("/v1/clients").await;
    assert_eq!(page["instances"].as_array().unwrap().len(), 9, "{page}");
    assert!(page.get("next_after").is_none(), "{page}");
    for bad in ["/v1/clients?limit=5001", "/v1/clients?after=no-separator"] {
        let (status, body) = srv.get(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}

/// Sorted, after checking no instance came twice (the order itself is the database's
/// collation's, which a Postgres server may set to other than byte order).
fn sorted(mut seen: Vec<(String, String)>) -> Vec<(String, String)> {
    let n = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), n, "an instance listed twice");
    seen
}

/// Percent-encodes a query value (the cursor holds a tab and may hold slashes).
fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

both_databases!(
    instance_lists_come_in_pages,
    a_token_registers_a_bounded_number_of_live_instances,
    an_instance_belongs_to_the_token_that_registered_it,
    an_admin_removes_any_instance_and_a_revoked_owner_lets_go,
    keys_that_name_no_migration_are_ignored_and_counted,
);

/// An instance row as the migration that added owners left an older one: no token.
async fn legacy_instance(srv: &TestServer, service: &str, instance_id: &str, v: u64, now: i64) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&srv.db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO client_instances (service, instance_id, applied_version, first_seen_ms, \
         last_seen_ms) VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(service)
    .bind(instance_id)
    .bind(v as i64)
    .bind(now)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
}

/// A migration's list of instances is the set rules 3 and 5 count: every live instance, since
/// any may evaluate the migration, each marked with whether its heartbeats name it. A backfill
/// runner (whose client never evaluates the migration) names it, so it shows as using it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrations_instances_are_the_set_the_rules_count() {
    use std::time::Duration;
    use switchyard_client::Client;
    let srv = TestServer::start(Db::Sqlite).await;
    let key = "fleet.view";
    let version = srv.ready_for_backfill(key).await;
    let grpc = format!("http://{}", srv.server.grpc_addr);
    let connect = |service: &'static str| {
        let (grpc, token) = (grpc.clone(), srv.token.clone());
        async move {
            Client::builder(grpc, token, service)
                .instance_id(format!("{service}-1"))
                .heartbeat_interval(Duration::from_millis(100))
                .connect()
                .await
                .expect("connecting")
        }
    };
    let app = connect("api").await;
    app.handle(key).stage("user-1");
    let runner = connect("api-backfill").await;
    let _backfill = runner.backfill(key);
    let other = connect("billing").await;

    let path = format!("/v1/migrations/{key}/instances");
    let uses = |body: &Value| -> Vec<(String, bool, bool)> {
        body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["service"].as_str().unwrap().to_owned(),
                    i["live"].as_bool().unwrap(),
                    i["uses_migration"]
                        .as_bool()
                        .expect("a migration's list marks use"),
                )
            })
            .collect()
    };
    let expected = vec![
        ("api".to_owned(), true, true),
        ("api-backfill".to_owned(), true, true),
        ("billing".to_owned(), true, false),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = srv.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if uses(&body) == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the list shows every live instance, marked: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every instance in it is one the rules wait for: all three acknowledged the version.
    let (_, body) = srv.get(&path).await;
    for i in body["instances"].as_array().unwrap() {
        assert!(i["applied_version"].as_u64() >= Some(version), "{i}");
    }
    // The fleet's list has no such mark.
    let (_, all) = srv.get("/v1/clients").await;
    assert!(all["instances"][0].get("uses_migration").is_none(), "{all}");
    assert_eq!(srv.cli(&["instances", "--migration", key]).await, 0);
    for client in [app, runner, other] {
        client.shutdown().await;
    }
}
