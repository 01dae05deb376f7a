//! Two release managers racing on one migration (rule 8): each sends conflicting updates with
//! the version it last saw. Every update is either accepted (and audited exactly once) or
//! refused as stale with the current state; nothing is lost, duplicated or reordered.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use switchyard_proto::v1 as pb;
use switchyard_tests::{Db, TestServer};

const KEY: &str = "race.dual-write";
const PER_OPERATOR: u32 = 200;
const OPERATORS: [&str; 2] = ["op-a", "op-b"];

#[derive(Debug, Clone)]
struct Accepted {
    operator: &'static str,
    expected: u64,
    version: u64,
    rollout_bp: u64,
    reason: String,
}

#[derive(Debug, Clone)]
struct Conflict {
    expected: u64,
    current_version: u64,
    current_rollout_bp: u64,
}

#[derive(Debug, Default)]
struct Outcome {
    accepted: Vec<Accepted>,
    conflicts: Vec<Conflict>,
    /// Read-your-writes / snapshot consistency violations seen right after an accepted update.
    anomalies: Vec<String>,
}

async fn operator(
    base: String,
    token: String,
    name: &'static str,
    index: u32,
    start_version: u64,
) -> Outcome {
    let http = reqwest::Client::new();
    let mut seen = start_version;
    let mut out = Outcome::default();
    for i in 0..PER_OPERATOR {
        // Distinct per update and per operator, never 0 (the starting rollout).
        let rollout_bp = 1 + index * PER_OPERATOR + i;
        let reason = format!("{name} update {i}");
        let response = http
            .post(format!("{base}/v1/migrations/{KEY}/rollout"))
            .bearer_auth(&token)
            .json(&json!({
                "stage": "dual_write", "rollout_bp": rollout_bp,
                "expected_version": seen, "reason": reason,
            }))
            .send()
            .await
            .expect("rollout request");
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON body");
        match status {
            StatusCode::OK => {
                let version = body["version"].as_u64().expect("version");
                assert_eq!(body["rollout_bp"], rollout_bp, "{body}");
                assert_eq!(body["stage"], "dual_write", "{body}");
                assert!(version > seen, "{name}: accepted at {version} after {seen}");
                out.accepted.push(Accepted {
                    operator: name,
                    expected: seen,
                    version,
                    rollout_bp: u64::from(rollout_bp),
                    reason,
                });
                seen = version;
                check_read_your_write(&http, &base, &token, version, &mut out.anomalies).await;
            }
            StatusCode::CONFLICT => {
                assert_eq!(body["code"], "stale_version", "{body}");
                assert_eq!(body["rule"], 8, "{body}");
                let current = &body["current"];
                let current_version = current["version"].as_u64().expect("current.version");
                assert!(
                    current_version > seen,
                    "{name}: stale at {seen} but current is {current_version}: {body}"
                );
                assert_eq!(current["key"], KEY, "{body}");
                out.conflicts.push(Conflict {
                    expected: seen,
                    current_version,
                    current_rollout_bp: current["rollout_bp"].as_u64().expect("rollout_bp"),
                });
                seen = current_version;
            }
            other => panic!("{name}: update {i} got {other}: {body}"),
        }
    }
    out
}

/// After its update is acknowledged at `version`, the same caller reads the snapshot: it must
/// hold that update (the server waits for its snapshot to include a write before answering),
/// and, as only this migration changes, the snapshot's version must be the migration's.
async fn check_read_your_write(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    version: u64,
    anomalies: &mut Vec<String>,
) {
    let snapshot: Value = http
        .get(format!("{base}/v1/snapshot"))
        .bearer_auth(token)
        .send()
        .await
        .expect("snapshot request")
        .json()
        .await
        .expect("snapshot JSON");
    let snapshot_version = snapshot["version"].as_u64().expect("snapshot version");
    let m = snapshot["migrations"]
        .as_array()
        .and_then(|all| all.iter().find(|m| m["key"] == KEY))
        .expect("the migration in the snapshot");
    let migration_version = m["version"].as_u64().expect("migration version");
    if snapshot_version < version || migration_version < version {
        anomalies.push(format!(
            "acknowledged at {version}, then read snapshot {snapshot_version} holding the \
             migration at {migration_version}"
        ));
    } else if migration_version != snapshot_version {
        anomalies.push(format!(
            "snapshot {snapshot_version} holds the migration at {migration_version} (no other \
             change exists, so the snapshot misses a committed change)"
        ));
    }
}

/// Every audit entry of the migration, newest first, paging with `before_id`.
async fn audit_log(server: &TestServer) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let path = match before {
            Some(id) => format!("/v1/migrations/{KEY}/audit?limit=500&before_id={id}"),
            None => format!("/v1/migrations/{KEY}/audit?limit=500"),
        };
        let (status, page) = server.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let page_entries = page["entries"].as_array().expect("entries");
        assert!(page_entries.len() <= 500);
        entries.extend(page_entries.iter().cloned());
        match page["next_before_id"].as_u64() {
            Some(id) => {
                assert_eq!(Some(id), page_entries.last().and_then(|e| e["id"].as_u64()));
                before = Some(id);
            }
            None => break,
        }
    }
    entries
}

async fn conflicting_operators(db: Db) {
    let server = TestServer::start(db).await;
    let tokens = [
        server.token_with_role(OPERATORS[0], "operator").await,
        server.token_with_role(OPERATORS[1], "operator").await,
    ];

    // create → expand applied → advance: dual_write at 0%.
    let created = server.create(KEY, false, &[]).await;
    let (status, expanded) = server
        .post(
            &format!("/v1/migrations/{KEY}/events"),
            json!({ "event": "expand_applied", "expected_version": created["version"],
                    "reason": "expand ddl applied" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{expanded}");
    let (status, start) = server
        .post(
            &format!("/v1/migrations/{KEY}/advance"),
            json!({ "expected_version": expanded["version"], "reason": "start dual writes" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{start}");
    assert_eq!(start["stage"], "dual_write");
    assert_eq!(start["rollout_bp"], 0);
    let start_version = start["version"].as_u64().unwrap();

    // A watcher follows the race.
    let mut watch = server
        .grpc
        .clone()
        .watch(server.req(pb::WatchRequest { since_version: 0 }))
        .await
        .expect("Watch")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the snapshot in time")
        .expect("the watch stream")
        .expect("a first event");
    assert!(matches!(
        first.event,
        Some(pb::watch_event::Event::Snapshot(ref s)) if s.version == start_version
    ));

    let tasks: Vec<_> = OPERATORS
        .iter()
        .zip(tokens)
        .enumerate()
        .map(|(index, (&name, token))| {
            tokio::spawn(operator(
                server.base.clone(),
                token,
                name,
                index as u32,
                start_version,
            ))
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        let outcome = tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("operators finish in time")
            .expect("an operator task");
        outcomes.push(outcome);
    }

    // Accepted + conflicts = every update; per operator, accepted versions strictly increase.
    let accepted: Vec<Accepted> = outcomes.iter().flat_map(|o| o.accepted.clone()).collect();
    let conflicts: Vec<Conflict> = outcomes.iter().flat_map(|o| o.conflicts.clone()).collect();
    assert_eq!(
        accepted.len() + conflicts.len(),
        (PER_OPERATOR as usize) * OPERATORS.len()
    );
    assert!(!accepted.is_empty());
    for outcome in &outcomes {
        let versions: Vec<u64> = outcome.accepted.iter().map(|a| a.version).collect();
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "accepted versions increase per operator: {versions:?}"
        );
    }
    let by_version: BTreeMap<u64, &Accepted> = accepted.iter().map(|a| (a.version, a)).collect();
    assert_eq!(
        by_version.len(),
        accepted.len(),
        "two updates accepted at one version"
    );
    // Each accepted update was based on the state just before it: the chain of versions has no
    // lost update.
    let mut previous = start_version;
    for (&version, a) in &by_version {
        assert_eq!(
            a.expected, previous,
            "the update accepted at {version} expected {} but the state before it was {previous}",
            a.expected
        );
        previous = version;
    }
    // A conflict reports a real state: the setup state or an accepted one.
    for c in &conflicts {
        let real = (c.current_version == start_version && c.current_rollout_bp == 0)
            || by_version
                .get(&c.current_version)
                .is_some_and(|a| a.rollout_bp == c.current_rollout_bp);
        assert!(real, "a 409 reported a state that never existed: {c:?}");
        assert!(c.current_version > c.expected);
    }

    // The final state is the last accepted update.
    let (&last_version, last) = by_version.last_key_value().unwrap();
    let m = server.migration(KEY).await;
    assert_eq!(m["version"], last_version, "{m}");
    assert_eq!(m["rollout_bp"], last.rollout_bp, "{m}");
    assert_eq!(m["stage"], "dual_write", "{m}");
    assert_eq!(server.snapshot_version().await, last_version);

    // The audit log: every accepted update exactly once, nothing for refused ones.
    let entries = audit_log(&server).await;
    let ids: Vec<u64> = entries.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "audit pages are newest first without repeats"
    );
    let versions: Vec<u64> = entries
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] > w[1]),
        "audit ids follow version order"
    );
    let setup_actions: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e["action"] != "set_rollout")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        entries.len(),
        accepted.len() + 3,
        "setup: {setup_actions:?}"
    );
    let audited: BTreeMap<u64, &Value> = entries
        .iter()
        .filter(|e| e["action"] == "set_rollout")
        .map(|e| (e["version"].as_u64().unwrap(), e))
        .collect();
    assert_eq!(audited.len(), accepted.len());
    for a in &accepted {
        let e = audited
            .get(&a.version)
            .unwrap_or_else(|| panic!("accepted update missing from the audit log: {a:?}"));
        assert_eq!(e["reason"], a.reason.as_str(), "{e}");
        assert!(
            e["actor"].as_str().unwrap().starts_with(a.operator),
            "{a:?}: {e}"
        );
        assert_eq!(e["after"]["rollout_bp"], a.rollout_bp, "{e}");
        assert_eq!(e["after"]["version"], a.version, "{e}");
        assert_eq!(e["before"]["version"], a.expected, "{e}");
    }

    // The watcher saw the race in version order, only accepted states, ending at the last.
    let mut seen = start_version;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("the last change in time")
            .expect("the watch stream")
            .expect("the stream stays open");
        let m = match event.event {
            Some(pb::watch_event::Event::Change(m)) => m,
            other => panic!("unexpected watch event: {other:?}"),
        };
        assert!(m.version > seen, "watch order: {} after {seen}", m.version);
        let a = by_version
            .get(&m.version)
            .unwrap_or_else(|| panic!("watched a state never accepted: {m:?}"));
        assert_eq!(u64::from(m.rollout_bp), a.rollout_bp);
        seen = m.version;
        if seen == last_version {
            break;
        }
    }
    drop(watch);

    let anomalies: Vec<&String> = outcomes.iter().flat_map(|o| &o.anomalies).collect();
    assert!(
        anomalies.is_empty(),
        "{db:?}: {} read-your-write / snapshot consistency violations, e.g. {:?}",
        anomalies.len(),
        &anomalies[..anomalies.len().min(5)]
    );
    server.stop().await;
}

switchyard_tests::both_databases!(conflicting_operators);
