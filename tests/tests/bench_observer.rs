//! Benchmark (ignored by default; see BENCHMARKS.md): the usage observer's cost with 5,000
//! distinct statements in the target's `pg_stat_statements`. Prints the time per pass (the
//! first, which fetches and parses every text, and the steady ones, which read counters only)
//! and the CPU the observer's session used on the target, read from its backend's
//! `/proc/<pid>/stat`.
//!
//! cargo test --release -p switchyard-tests --test bench_observer -- --ignored --nocapture

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use switchyard_server::startup::TargetDatabase;
use switchyard_tests::pgcluster::PgCluster;
use switchyard_tests::{Db, TestClock, TestDb, TestServer, eventually};

const TABLES: usize = 50;
const COLUMNS: usize = 100;
const PASSES: usize = 20;

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the backend's stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf CLK_TCK");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

async fn usage(s: &TestServer, key: &str) -> Value {
    s.get(&format!("/v1/migrations/{key}/usage")).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand, see BENCHMARKS.md"]
async fn observer_pass_with_5000_statements() {
    let cluster = PgCluster::builder()
        .setting("pg_stat_statements.max", "10000")
        .start();
    cluster.execute("CREATE EXTENSION pg_stat_statements");
    cluster.execute("CREATE TABLE users (id bigint PRIMARY KEY, username text, handle text)");
    // 5,000 distinct statements (one per table and column), plus a few on the old shape; a
    // table at a time (psql takes them as one argument).
    for t in 0..TABLES {
        let columns: Vec<String> = (0..COLUMNS).map(|c| format!("c{c} int")).collect();
        cluster.execute(&format!(
            "CREATE TABLE t{t} (id int PRIMARY KEY, {})",
            columns.join(", ")
        ));
        let load: String = (0..COLUMNS)
            .map(|c| format!("SELECT c{c} FROM t{t} WHERE id = 1;\n"))
            .collect();
        cluster.execute(&load);
    }
    cluster.execute("SELECT username FROM users WHERE id = 1; SELECT * FROM users;");
    let entries = cluster.execute("SELECT count(*) FROM pg_stat_statements");
    println!("statements in pg_stat_statements: {entries}");

    let db = Arc::new(TestDb::new(Db::Sqlite).await);
    let url = format!(
        "main=postgres://postgres@127.0.0.1:{}/postgres",
        cluster.port()
    );
    let s = TestServer::start_configured(db, TestClock::running(), |c| {
        c.target_databases = vec![TargetDatabase::parse(&url).unwrap()];
        c.observe_interval = Duration::from_millis(500);
        c.observe_activity_interval = Duration::from_secs(1);
    })
    .await;
    let key = "users.bench";
    let (status, body) = s
        .post(
            "/v1/migrations",
            json!({"key": key, "reason": "bench", "target_database": "main",
                "old_shape": ["column:users.username"]}),
        )
        .await;
    assert!(status.is_success(), "{body}");

    let mut durations = Vec::new();
    let mut last = 0;
    let mut pid = String::new();
    let mut ticks_at_first = 0;
    while durations.len() < PASSES + 1 {
        eventually(Duration::from_secs(60), "the next pass", || async {
            usage(&s, key).await["last_pass_ms"].as_i64().unwrap_or(0) > last
        })
        .await;
        let u = usage(&s, key).await;
        last = u["last_pass_ms"].as_i64().unwrap();
        durations.push(u["last_pass_duration_ms"].as_u64().unwrap());
        if pid.is_empty() {
            pid = cluster.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'switchyard-observer'",
            );
            ticks_at_first = cpu_ticks(&pid);
        }
    }
    let ticks = cpu_ticks(&pid) - ticks_at_first;
    let cpu_per_pass_ms = ticks as f64 / ticks_per_second() * 1000.0 / PASSES as f64;
    let mut steady = durations[1..].to_vec();
    steady.sort_unstable();
    let median = steady[steady.len() / 2];
    println!(
        "first pass (every text fetched and parsed): {} ms",
        durations[0]
    );
    println!(
        "steady passes: median {median} ms, min {} ms, max {} ms over {PASSES}",
        steady[0],
        steady[steady.len() - 1]
    );
    println!(
        "target CPU (observer's backend): {cpu_per_pass_ms:.1} ms per steady pass; at the \
         default 60 s interval {:.4}% of one core",
        cpu_per_pass_ms / 60_000.0 * 100.0
    );
    let u = usage(&s, key).await;
    println!(
        "statements on target at the last pass: {}",
        u["statements_on_target"]
    );
    s.stop().await;
}
