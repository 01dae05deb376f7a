//! Benchmark (ignored by default; see BENCHMARKS.md): a PgBackfill of 100,000 rows on an own
//! primary whose streaming standby stops replaying for 2 s out of every 4 (as a replica busy
//! with long queries does), with throttling off and on. Prints rows/s and the peak replay lag
//! the primary saw (sampled every 50 ms).
//!
//! cargo test -p switchyard-tests --test bench_backfill_throttle -- --ignored --nocapture

use sqlx::postgres::PgPoolOptions;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use switchyard_client::health::Thresholds;
use switchyard_client::postgres::PgBackfill;
use switchyard_client::{BackfillOutcome, Client};
use switchyard_tests::pgcluster::PgCluster;
use switchyard_tests::{ADMIN_TOKEN, Db, TestServer};

const ROWS: i64 = 100_000;
const KEY: &str = "items.bench";

/// (rows/s, peak replay lag in bytes, peak replay lag in seconds, time held in seconds)
async fn run(cluster: &Arc<PgCluster>, throttled: bool) -> (f64, i64, f64, f64) {
    cluster.execute(&format!(
        "DROP TABLE IF EXISTS items; \
         CREATE TABLE items (id bigint PRIMARY KEY, old text NOT NULL, new text); \
         ALTER TABLE items SET (autovacuum_enabled = off); \
         INSERT INTO items (id, old) SELECT g, repeat('x', 200) || g FROM generate_series(1, {ROWS}) g; \
         CHECKPOINT"
    ));
    // Let the standby catch up with the load before measuring.
    let caught_up = Instant::now();
    while cluster.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) FROM pg_stat_replication \
         WHERE state = 'streaming'",
    ) != "0"
    {
        assert!(
            caught_up.elapsed() < Duration::from_secs(60),
            "the standby is not streaming, or not catching up: {:?}\nstandby log:\n{}\nprimary log:\n{}",
            cluster.execute("SELECT state, replay_lsn FROM pg_stat_replication"),
            cluster.standby_log(),
            cluster.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .connect(&cluster.url())
        .await
        .unwrap();
    let srv = TestServer::start(Db::Sqlite).await;
    srv.ready_for_backfill(KEY).await;
    let client = Client::builder(
        format!("http://{}", srv.server.grpc_addr),
        ADMIN_TOKEN,
        "api",
    )
    .connect()
    .await
    .unwrap();
    let backfill = PgBackfill::new(pool.clone(), "items", "id", "new = upper(old)")
        .pending("new IS DISTINCT FROM upper(old)");
    let mut runner = client.backfill(KEY).batch_size(1_000);
    if throttled {
        runner = runner
            .thresholds(Thresholds {
                max_replica_lag_bytes: Some(8 << 20),
                ..Thresholds::default()
            })
            .health_timing(Duration::from_millis(100), Duration::from_secs(30))
            .health(backfill.health());
    } else {
        runner = runner.batch_target(None);
    }

    let stop = Arc::new(AtomicBool::new(false));
    // The standby stops replaying 2 s in every 4.
    let pauser = {
        let (cluster, stop) = (cluster.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                cluster.execute_on_standby("SELECT pg_wal_replay_pause()");
                std::thread::sleep(Duration::from_secs(2));
                cluster.execute_on_standby("SELECT pg_wal_replay_resume()");
                std::thread::sleep(Duration::from_secs(2));
            }
        })
    };
    let sampler = {
        let (pool, stop) = (pool.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut bytes, mut secs) = (0i64, 0f64);
            while !stop.load(Ordering::Relaxed) {
                let (b, s): (Option<i64>, Option<f64>) = sqlx::query_as(
                    "SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn))::bigint, \
                            max(EXTRACT(epoch FROM replay_lag))::float8 FROM pg_stat_replication",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                bytes = bytes.max(b.unwrap_or(0));
                secs = secs.max(s.unwrap_or(0.0));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (bytes, secs)
        })
    };
    let began = Instant::now();
    let outcome = runner.run(|c, l| backfill.batch(c, l)).await.unwrap();
    let took = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (bytes, secs) = sampler.await.unwrap();
    pauser.join().unwrap();
    cluster
        .try_execute_on_standby("SELECT pg_wal_replay_resume()")
        .ok();
    assert_eq!(outcome, BackfillOutcome::Completed { rows: ROWS as u64 });
    let (_, p) = srv.get(&format!("/v1/migrations/{KEY}/backfill")).await;
    let held = p["throttle"]["throttled_seconds"].as_f64().unwrap_or(0.0);
    client.shutdown().await;
    srv.stop().await;
    (ROWS as f64 / took.as_secs_f64(), bytes, secs, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn backfill_throughput_and_replay_lag_with_and_without_throttling() {
    let cluster = Arc::new(PgCluster::builder().with_standby().start());
    println!("| throttling | rows/s | peak replay lag (bytes) | peak replay_lag (s) | held (s) |");
    println!("|---|---:|---:|---:|---:|");
    for throttled in [false, true, false, true] {
        let (rate, bytes, secs, held) = run(&cluster, throttled).await;
        println!(
            "| {} | {rate:.0} | {:.1} MiB | {secs:.2} | {held:.1} |",
            if throttled { "on (8 MiB)" } else { "off" },
            bytes as f64 / (1 << 20) as f64
        );
    }
}
