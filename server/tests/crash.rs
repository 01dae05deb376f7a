//! Durability under `kill -9`: the real server is killed with SIGKILL [`CYCLES`] times in a row
//! on the same store, each time while writers are sending mutations, on SQLite and on Postgres.
//! Each cycle starts the server, lets three writers ramp a migration each (`rollout` with
//! `expected_version`) and a fourth create migrations and move them on (create,
//! `expand_applied`, advance) until [`ACKS_PER_CYCLE`] mutations are acknowledged, then kills
//! it; the writers stop at their first failed request. After the last cycle the server starts
//! once more and the test checks that no acknowledged mutation was lost, that the audit log has
//! no gaps, and that each migration's state is its newest audit record.

mod common;

use common::{kill_hard, serve, terminate};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const TOKEN: &str = "crash-test-admin-token-0123";
/// Kill -9 cycles per database: enough that a rare window (a kill between commit and
/// acknowledgement, mid-create, mid-event) is hit many times over.
const CYCLES: usize = 20;
/// Acknowledged mutations per cycle before the kill: enough that every writer is mid-stream
/// when it comes, few enough that 20 cycles stay within seconds on a loaded 2-core machine.
const ACKS_PER_CYCLE: usize = 30;
/// A cycle that cannot reach its acknowledgements by then is stuck: fail instead of hanging.
const CYCLE_DEADLINE: Duration = Duration::from_secs(30);
/// Any single request; a server that is gone refuses or resets at once, so this only catches
/// a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const RAMPED: [&str; 3] = ["crash.a", "crash.b", "crash.c"];
/// Smaller than the number of records the ramped migrations collect, so the final check
/// follows the cursor over several pages.
const AUDIT_PAGE: u32 = 64;
/// The fields of the acknowledged state that its audit record's `after` must repeat.
const COMPARED: [&str; 4] = ["version", "stage", "rollout_bp", "expand_applied"];

/// Why a request got no success answer.
#[derive(Debug)]
#[allow(dead_code)] // the payloads are read through `Debug`, in failure messages
enum Failure {
    /// No (complete) answer: the server is gone. Expected only after the kill.
    Unreachable(String),
    /// The server answered with an error: never expected here, so it fails the test.
    Refused(StatusCode, Value),
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Failure> {
    let request = match body {
        Some(b) => http.post(format!("{base}{path}")).json(&b),
        None => http.get(format!("{base}{path}")),
    };
    let unreachable = |e: reqwest::Error| Failure::Unreachable(e.to_string());
    let response = request
        .bearer_auth(TOKEN)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    // A body cut short by the kill is no acknowledgement either.
    let body: Value = response.json().await.map_err(unreachable)?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(Failure::Refused(status, body))
    }
}

fn number(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

/// A mutation the server acknowledged (or, for `landed`, one in flight at a kill that turned
/// out to have committed): its migration and the state it answered with.
#[derive(Debug, Clone)]
struct Ack {
    key: String,
    state: Value,
}

/// One ramping writer's knowledge of its migration, carried from cycle to cycle.
#[derive(Debug)]
struct Ramp {
    key: &'static str,
    /// The state after its last acknowledged mutation.
    version: u64,
    rollout: u64,
    /// Ramps so far: the next target derives from it, so consecutive targets always differ.
    step: u64,
    /// The rollout of the request that got no answer (sent when the server was killed).
    in_flight: Option<u64>,
}

/// What the writers leave behind, over all cycles.
#[derive(Default)]
struct Outcome {
    acked: Vec<Ack>,
    /// Mutations in flight at a kill that turn out to have committed.
    landed: Vec<Ack>,
    /// Creates in flight at a kill: the migration may or may not exist.
    unsettled_creates: Vec<String>,
}

fn client() -> reqwest::Client {
    // A fresh client per server, so no pooled connection to a killed one is reused.
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap()
}

/// Re-reads a ramped migration after a restart: the request in flight at the kill may or may
/// not have committed, and the state must be exactly one of the two. Returns it if it did.
async fn settle(http: &reqwest::Client, base: &str, r: &mut Ramp) -> Option<Ack> {
    let key = r.key;
    let m = call(http, base, &format!("/v1/migrations/{key}"), None)
        .await
        .unwrap_or_else(|e| panic!("{key}: reading it after the restart: {e:?}"));
    let (version, rollout) = (number(&m, "version"), number(&m, "rollout_bp"));
    let landed = match r.in_flight.take() {
        _ if version == r.version => {
            assert_eq!(
                rollout, r.rollout,
                "{key}: rollout changed, version did not"
            );
            None
        }
        Some(sent) if version > r.version => {
            assert_eq!(
                rollout, sent,
                "{key}: at v{version}, not what was in flight"
            );
            Some(Ack {
                key: key.to_owned(),
                state: m,
            })
        }
        in_flight => panic!(
            "{key}: at v{version} (rollout {rollout}) after the restart, but v{} (rollout {}) \
             was acknowledged and {in_flight:?} was in flight",
            r.version, r.rollout
        ),
    };
    (r.version, r.rollout) = (version, rollout);
    landed
}

/// Ramps one migration, from the state it finds, until the server goes away.
async fn ramp(
    http: reqwest::Client,
    base: String,
    mut r: Ramp,
    acks: watch::Sender<usize>,
) -> (Ramp, Vec<Ack>, Option<Ack>) {
    let key = r.key;
    let landed = settle(&http, &base, &mut r).await;
    let mut acked = Vec::new();
    loop {
        r.step += 1;
        let target = (r.step * 37) % 10_001;
        r.in_flight = Some(target);
        let body = json!({"rollout_bp": target, "expected_version": r.version, "reason": format!("ramp {}", r.step)});
        match call(
            &http,
            &base,
            &format!("/v1/migrations/{key}/rollout"),
            Some(body),
        )
        .await
        {
            Ok(m) => {
                let version = number(&m, "version");
                assert!(version > r.version, "{key}: acknowledged at v{version}");
                assert_eq!(number(&m, "rollout_bp"), target, "{key} v{version}");
                (r.version, r.rollout, r.in_flight) = (version, target, None);
                acked.push(Ack {
                    key: key.to_owned(),
                    state: m,
                });
                acks.send_modify(|n| *n += 1);
            }
            Err(Failure::Unreachable(_)) => return (r, acked, landed),
            Err(refused) => panic!("{key}: rollout to {target} refused: {refused:?}"),
        }
    }
}

/// Creates migrations `crash.c{cycle}-{i}` and moves each through `expand_applied` and an
/// advance, so creation and events are killed in flight too, until the server goes away.
/// Returns what was acknowledged and the key whose create got no answer, if it was a create.
async fn create(
    http: reqwest::Client,
    base: String,
    cycle: usize,
    acks: watch::Sender<usize>,
) -> (Vec<Ack>, Option<String>) {
    let mut acked = Vec::new();
    for i in 0.. {
        let key = format!("crash.c{cycle}-{i}");
        let body = json!({"key": key, "reason": "crash loop"});
        let mut version = match call(&http, &base, "/v1/migrations", Some(body)).await {
            Ok(m) => {
                let version = number(&m, "version");
                acked.push(Ack {
                    key: key.clone(),
                    state: m,
                });
                acks.send_modify(|n| *n += 1);
                version
            }
            Err(Failure::Unreachable(_)) => return (acked, Some(key)),
            Err(refused) => panic!("{key}: create refused: {refused:?}"),
        };
        for (path, mut body) in [
            ("events", json!({"event": "expand_applied"})),
            ("advance", json!({})),
        ] {
            body["expected_version"] = version.into();
            body["reason"] = "crash loop".into();
            match call(
                &http,
                &base,
                &format!("/v1/migrations/{key}/{path}"),
                Some(body),
            )
            .await
            {
                Ok(m) => {
                    version = number(&m, "version");
                    acked.push(Ack {
                        key: key.clone(),
                        state: m,
                    });
                    acks.send_modify(|n| *n += 1);
                }
                Err(Failure::Unreachable(_)) => return (acked, None),
                Err(refused) => panic!("{key}: {path} refused: {refused:?}"),
            }
        }
    }
    unreachable!()
}

async fn join<T>(what: &str, task: JoinHandle<T>) -> T {
    // Its last request ends by the client's timeout at the latest.
    tokio::time::timeout(2 * REQUEST_TIMEOUT, task)
        .await
        .unwrap_or_else(|_| panic!("{what} still running after the kill"))
        .unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

/// Creates the ramped migrations and brings them to a stage that takes a rollout.
async fn set_up(base: &str) -> Vec<Ramp> {
    let http = client();
    let mut ramps = Vec::new();
    for key in RAMPED {
        let body = json!({"key": key, "reason": "setup"});
        let mut m = call(&http, base, "/v1/migrations", Some(body))
            .await
            .unwrap();
        for (path, mut body) in [
            ("events", json!({"event": "expand_applied"})),
            ("advance", json!({})),
        ] {
            body["expected_version"] = m["version"].clone();
            body["reason"] = "setup".into();
            let path = format!("/v1/migrations/{key}/{path}");
            m = call(&http, base, &path, Some(body)).await.unwrap();
        }
        ramps.push(Ramp {
            key,
            version: number(&m, "version"),
            rollout: number(&m, "rollout_bp"),
            step: 0,
            in_flight: None,
        });
    }
    ramps
}

/// A migration's whole audit log, oldest first, following the cursor page by page.
async fn audit_log(http: &reqwest::Client, base: &str, key: &str) -> Result<Vec<Value>, Failure> {
    let mut entries = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/v1/migrations/{key}/audit?limit={AUDIT_PAGE}{cursor}");
        let page = call(http, base, &path, None).await?;
        entries.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next_before_id"].as_u64() {
            Some(id) => cursor = format!("&before_id={id}"),
            None => break,
        }
    }
    entries.reverse();
    Ok(entries)
}

async fn crash_loop_loses_nothing_acknowledged(store: &str, database_url: &str) {
    let started = Instant::now();
    let mut served = Some(serve(database_url, Some(TOKEN)));
    let mut ramps = set_up(&served.as_ref().unwrap().http).await;
    let mut all = Outcome::default();

    for cycle in 0..CYCLES {
        // The first cycle runs on the server that did the set-up.
        let server = served
            .take()
            .unwrap_or_else(|| serve(database_url, Some(TOKEN)));
        let base = server.http.clone();
        let http = client();
        let (acks, mut acked_so_far) = watch::channel(0usize);
        let ramping: Vec<_> = ramps
            .drain(..)
            .map(|r| tokio::spawn(ramp(http.clone(), base.clone(), r, acks.clone())))
            .collect();
        let creating = tokio::spawn(create(http.clone(), base.clone(), cycle, acks.clone()));
        // Only the writers hold senders now: if they all stop early, the wait below ends.
        drop(acks);
        tokio::time::timeout(
            CYCLE_DEADLINE,
            acked_so_far.wait_for(|n| *n >= ACKS_PER_CYCLE),
        )
        .await
        .unwrap_or_else(|_| panic!("{store} cycle {cycle}: under {ACKS_PER_CYCLE} acknowledged mutations after {CYCLE_DEADLINE:?}"))
        .unwrap_or_else(|_| panic!("{store} cycle {cycle}: every writer stopped before {ACKS_PER_CYCLE} acknowledged mutations"));
        kill_hard(server);

        for task in ramping {
            let (r, acked, landed) = join("a ramping writer", task).await;
            ramps.push(r);
            all.acked.extend(acked);
            all.landed.extend(landed);
        }
        let (acked, unsettled) = join("the creating writer", creating).await;
        all.acked.extend(acked);
        all.unsettled_creates.extend(unsettled);
    }

    let server = serve(database_url, Some(TOKEN));
    let base = server.http.clone();
    let http = client();
    // The requests in flight at the last kill are settled like those of every other kill.
    for mut r in ramps {
        all.landed.extend(settle(&http, &base, &mut r).await);
    }
    let creates_landed = verify(store, &http, &base, &all).await;
    terminate(server);
    eprintln!(
        "{store}: {CYCLES} kill -9 cycles, {} acknowledged mutations; in flight at a kill and \
         committed: {} ramps, {creates_landed} of {} creates; {:.1} s",
        all.acked.len(),
        all.landed.len(),
        all.unsettled_creates.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The final checks, on a server started after the last kill. Returns how many of the creates
/// in flight at a kill committed.
///
/// A mutation in flight at a kill was never acknowledged, so nothing says whether it happened;
/// what must hold is that it happened entirely or not at all. That follows from the checks
/// here: a state without its audit record would make the state's version differ from its
/// newest audit record's; an audit record without its state, or a version taken and not
/// recorded, would break a migration's chain of records or leave a gap in the store's versions.
/// The ramps' in-flight requests are also checked against what was sent (`settle`).
async fn verify(store: &str, http: &reqwest::Client, base: &str, all: &Outcome) -> usize {
    let snapshot = call(http, base, "/v1/migrations", None).await.unwrap();
    let newest = number(&snapshot, "version");
    let mut logs: HashMap<String, (Value, Vec<Value>)> = HashMap::new();
    let mut versions = Vec::new();
    for m in snapshot["migrations"].as_array().unwrap() {
        let key = m["key"].as_str().unwrap().to_owned();
        let log = audit_log(http, base, &key)
            .await
            .unwrap_or_else(|e| panic!("{store} {key}: audit log: {e:?}"));
        // Versions are store-wide (one counter for every migration), so one migration's
        // records are not 1, 2, 3…; what links them is that each starts from the state the
        // previous one left.
        assert_eq!(log[0]["action"], "create", "{store} {key}: first record");
        assert!(log[0]["before"].is_null(), "{store} {key}: create");
        for pair in log.windows(2) {
            assert_eq!(
                pair[1]["before"]["version"], pair[0]["version"],
                "{store} {key}: a record missing between v{} and v{}",
                pair[0]["version"], pair[1]["version"]
            );
        }
        for entry in &log {
            assert_eq!(entry["after"]["version"], entry["version"], "{store} {key}");
            versions.push(number(entry, "version"));
        }
        let last = &log[log.len() - 1]["after"];
        for field in COMPARED {
            assert_eq!(
                last[field], m[field],
                "{store} {key}: the state's {field} is not its newest audit record's"
            );
        }
        logs.insert(key, (m.clone(), log));
    }
    // Every version the store ever handed out is recorded once: 1 to the newest, no gaps.
    versions.sort_unstable();
    for (i, &v) in versions.iter().enumerate() {
        let expected = i as u64 + 1;
        assert_eq!(
            v, expected,
            "{store}: audit version {expected} missing or repeated (found v{v} in its place)"
        );
    }
    assert_eq!(
        versions.len() as u64,
        newest,
        "{store}: newest version {newest}"
    );

    let acked = all.acked.iter().map(|a| ("acknowledged", a));
    let landed = all.landed.iter().map(|a| ("committed in-flight", a));
    for (what, ack) in acked.chain(landed) {
        let (key, v) = (&ack.key, number(&ack.state, "version"));
        let Some((state, log)) = logs.get(key) else {
            panic!("{store} {key}: gone, with an {what} mutation at v{v}");
        };
        assert!(
            number(state, "version") >= v,
            "{store} {key}: at {}, {what} v{v}",
            state["version"]
        );
        let entry = log
            .iter()
            .find(|e| number(e, "version") == v)
            .unwrap_or_else(|| panic!("{store} {key}: audit record of {what} v{v} lost"));
        for field in COMPARED {
            assert_eq!(
                entry["after"][field], ack.state[field],
                "{store} {key} {what} v{v}: {field}"
            );
        }
    }

    let mut committed = 0;
    for key in &all.unsettled_creates {
        if logs.contains_key(key) {
            committed += 1;
            continue;
        }
        match audit_log(http, base, key).await {
            Err(Failure::Refused(StatusCode::NOT_FOUND, _)) => {}
            other => panic!("{store} {key}: not listed, yet its audit log reads {other:?}"),
        }
    }
    committed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_acknowledged_mutation_across_sigkills() {
    let dir = std::env::temp_dir().join(format!("switchyard-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/switchyard.db", dir.display());
    crash_loop_loses_nothing_acknowledged("sqlite", &url).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_acknowledged_mutation_across_sigkills() {
    let name = format!("switchyard_crash_{}", std::process::id());
    let (url, mut conn) = common::fresh_postgres(&name).await;
    crash_loop_loses_nothing_acknowledged("postgres", &url).await;
    common::drop_postgres(&mut conn, &name).await;
}
