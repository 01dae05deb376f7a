//! Prometheus metrics. The recorder is process-wide (the `metrics` facade has one global
//! recorder), installed on first use; `/metrics` renders it.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Histogram buckets (seconds) for request, store and fan-out latencies: from well under a
/// millisecond (a decide served from memory) to seconds (a write waiting on a busy database).
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often recorded histogram values are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        // Buckets make these Prometheus histograms (without them the exporter writes
        // summaries, whose quantiles cannot be aggregated across replicas).
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
            .expect("static, non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        // A histogram keeps each recorded value until upkeep folds it into its buckets; without
        // this, a server nobody scrapes grows by every request's duration (about a megabyte a
        // second under a decide load), and a scrape folds minutes of them in one go. The
        // recorder is process-wide, so is this thread.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        // Another recorder may already be installed (e.g. by an embedding application); then
        // this handle renders an empty registry rather than failing start-up.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        // Present from the start, so dashboards and alerts see 0 rather than nothing.
        metrics::gauge!("switchyard_open_watches").set(0.0);
        metrics::gauge!("switchyard_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        metrics::gauge!("process_start_time_seconds").set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
                - process_uptime().as_secs_f64(),
        );
        handle
    })
}

/// What a scrape reports of a migration beyond its record, read from the store at the scrape.
#[derive(Debug, Clone, Default)]
pub struct MigrationReading {
    /// Live instances the rules count for it, and those of them that have not applied its
    /// latest change.
    pub live_instances: usize,
    pub instances_behind: usize,
    /// Whether the contract gate passes now (only evaluated at complete 100%).
    pub gate_passing: bool,
    /// The backfill's last checkpoint: rows done, estimated total, holding for the database,
    /// time held over the whole backfill.
    pub backfill: Option<(u64, u64, bool, u64)>,
}

/// Sets the per-migration gauges from the state about to be rendered, so a scrape always
/// reads the current state: the stage as a state set (1 for the current stage, 0 for the
/// others, so `switchyard_migration_stage{stage="live"} == 1` selects what is live), the
/// rollout as a ratio, the state version, seconds at the current stage, and what `reading`
/// found of its fleet, gate and backfill.
pub fn record_migrations<'a>(
    migrations: impl IntoIterator<Item = (&'a switchyard_domain::Migration, Option<MigrationReading>)>,
    now_ms: i64,
) {
    for (m, reading) in migrations {
        let key = m.key.to_string();
        let label = [("migration", key.clone())];
        metrics::gauge!("switchyard_migration_stage_seconds", &label)
            .set((now_ms - m.stage_since_ms).max(0) as f64 / 1000.0);
        for stage in switchyard_domain::Stage::ALL {
            metrics::gauge!("switchyard_migration_stage", "migration" => key.clone(), "stage" => stage.as_str())
                .set(if stage == m.stage { 1.0 } else { 0.0 });
        }
        metrics::gauge!("switchyard_migration_rollout_ratio", "migration" => key.clone())
            .set(f64::from(m.rollout_bp.get()) / 10_000.0);
        metrics::gauge!("switchyard_migration_version", "migration" => key.clone())
            .set(m.version.0 as f64);
        let Some(reading) = reading else {
            continue;
        };
        metrics::gauge!("switchyard_migration_live_instances", &label)
            .set(reading.live_instances as f64);
        metrics::gauge!("switchyard_migration_instances_behind", &label)
            .set(reading.instances_behind as f64);
        metrics::gauge!("switchyard_migration_gate_passing", &label).set(if reading.gate_passing {
            1.0
        } else {
            0.0
        });
        if let Some((done, total, throttled, throttled_ms)) = reading.backfill {
            metrics::gauge!("switchyard_backfill_rows_done", &label).set(done as f64);
            metrics::gauge!("switchyard_backfill_rows_estimate", &label).set(total as f64);
            metrics::gauge!("switchyard_backfill_throttled", &label).set(if throttled {
                1.0
            } else {
                0.0
            });
            metrics::gauge!("switchyard_backfill_throttled_seconds", &label)
                .set(throttled_ms as f64 / 1000.0);
        }
    }
}

/// The process's own figures, as Prometheus client libraries name them (`process_*`), read
/// from /proc at each scrape (Linux; elsewhere only the start time is reported).
pub fn record_process() {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may hold spaces), counted from `state` (field 3).
    let Some(fields) = stat.rsplit_once(')').map(|(_, rest)| {
        rest.split_whitespace()
            .map(|f| f.parse::<f64>().unwrap_or(0.0))
            .collect::<Vec<f64>>()
    }) else {
        return;
    };
    // Linux reports CPU time in clock ticks of USER_HZ, 100 on every mainstream build.
    const TICKS_PER_SECOND: f64 = 100.0;
    let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0.0);
    metrics::gauge!("process_cpu_seconds_total").set((field(14) + field(15)) / TICKS_PER_SECOND);
    metrics::gauge!("process_virtual_memory_bytes").set(field(23));
    metrics::gauge!("process_resident_memory_bytes").set(field(24) * page_size());
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("process_open_fds").set(fds.count() as f64);
    }
    if let Some(max) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse::<f64>().ok())
        })
    {
        metrics::gauge!("process_max_fds").set(max);
    }
}

/// The memory page size: from the kernel's own report of this process's pages.
fn page_size() -> f64 {
    // statm's resident pages against status's VmRSS in kB give the page size without libc.
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let pages = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<f64>().ok());
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok());
    match (pages, kb) {
        (Some(p), Some(kb)) if p > 0.0 => {
            // Rounded to a power of two: the two reads are moments apart.
            let size = kb * 1024.0 / p;
            2f64.powi(size.log2().round() as i32)
        }
        _ => 4096.0,
    }
}

/// How long this process has run: the recorder is installed at start-up, so its first use
/// is close enough to the start for a `process_start_time_seconds`.
fn process_uptime() -> Duration {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    STARTED.get_or_init(Instant::now).elapsed()
}

/// What clients reported of a migration's operations: counters to alert on (mismatches above
/// zero, new-shape errors), summed over every instance reporting to this replica.
pub fn record_client_traffic(migration: &str, counts: &switchyard_domain::traffic::TrafficCounts) {
    for (side, c) in [("old", &counts.old), ("new", &counts.new)] {
        for (kind, n) in [("read", c.reads), ("write", c.writes)] {
            if n > 0 {
                metrics::counter!("switchyard_client_operations_total",
                    "migration" => migration.to_owned(), "side" => side, "kind" => kind)
                .increment(n);
            }
        }
        if c.errors > 0 {
            metrics::counter!("switchyard_client_errors_total",
                "migration" => migration.to_owned(), "side" => side)
            .increment(c.errors);
        }
    }
    let label = [("migration", migration.to_owned())];
    metrics::counter!("switchyard_shadow_comparisons_total", &label).increment(counts.comparisons);
    metrics::counter!("switchyard_shadow_mismatches_total", &label).increment(counts.mismatches);
}

/// One HTTP request: counted by route and status, timed by route and method.
///
/// The handles are kept per thread, by route, method and status: looking one up in the
/// recorder builds and hashes its label set (three owned strings) on every call, which under a
/// decide load was a visible share of a request. The keys are bounded: routes are the router's
/// patterns (or "unmatched"), methods the handful `http::layers::Telemetry` names, statuses the few the
/// API answers with.
pub fn record_http(route: &str, method: &'static str, status: u16, elapsed: Duration) {
    thread_local! {
        static HTTP: std::cell::RefCell<std::collections::HashMap<Box<str>, RouteHandles>> =
            std::cell::RefCell::default();
    }
    HTTP.with_borrow_mut(|routes| {
        if !routes.contains_key(route) {
            routes.insert(route.into(), RouteHandles::default());
        }
        let handles = routes.get_mut(route).expect("inserted above");
        handles
            .duration(route, method)
            .record(elapsed.as_secs_f64());
        handles.count(route, status).increment(1);
    });
}

/// One route's metric handles, found by a short scan (a route sees one or two methods and a few
/// statuses).
#[derive(Default)]
struct RouteHandles {
    durations: Vec<(&'static str, metrics::Histogram)>,
    counts: Vec<(u16, metrics::Counter)>,
}

impl RouteHandles {
    fn duration(&mut self, route: &str, method: &'static str) -> &metrics::Histogram {
        found_or_made(&mut self.durations, method, || {
            metrics::histogram!(
                "switchyard_http_request_duration_seconds",
                "route" => route.to_owned(),
                "method" => method
            )
        })
    }

    fn count(&mut self, route: &str, status: u16) -> &metrics::Counter {
        found_or_made(&mut self.counts, status, || {
            metrics::counter!(
                "switchyard_http_requests_total",
                "route" => route.to_owned(),
                "status" => status.to_string()
            )
        })
    }
}

/// The value kept under `key`, made and kept on first use.
fn found_or_made<K: PartialEq + Copy, V>(
    kept: &mut Vec<(K, V)>,
    key: K,
    make: impl FnOnce() -> V,
) -> &V {
    let at = match kept.iter().position(|(k, _)| *k == key) {
        Some(at) => at,
        None => {
            kept.push((key, make()));
            kept.len() - 1
        }
    };
    &kept[at].1
}

/// One gRPC call, timed until its response (for Watch: until the stream starts).
pub fn record_grpc_duration(method: &'static str, elapsed: Duration) {
    metrics::histogram!("switchyard_grpc_request_duration_seconds", "method" => method)
        .record(elapsed.as_secs_f64());
}

/// How long a change took from this replica's hub to one watch stream's hand-off. Recorded
/// once per watcher per change, so the handle is looked up once, not per record (the recorder
/// is installed at start-up, before any watch stream exists).
pub fn record_fanout(elapsed: Duration) {
    static FANOUT: OnceLock<metrics::Histogram> = OnceLock::new();
    FANOUT
        .get_or_init(|| metrics::histogram!("switchyard_watch_fanout_seconds"))
        .record(elapsed.as_secs_f64());
}

/// Times a store write transaction (waiting for the write lock included) until dropped.
pub struct StoreWrite(pub Instant);

impl Drop for StoreWrite {
    fn drop(&mut self) {
        metrics::histogram!("switchyard_store_write_seconds")
            .record(self.0.elapsed().as_secs_f64());
    }
}

fn describe() {
    metrics::describe_gauge!(
        "switchyard_build_info",
        "Always 1; the server's version in the label"
    );
    metrics::describe_gauge!(
        "switchyard_migration_stage",
        "1 for each migration's current stage (the front's), 0 for its other stages"
    );
    metrics::describe_gauge!(
        "switchyard_migration_rollout_ratio",
        "The share of entities the front has reached at its stage, 0 to 1"
    );
    metrics::describe_gauge!(
        "switchyard_migration_version",
        "The state version of each migration's latest change"
    );
    metrics::describe_histogram!(
        "switchyard_observer_pass_seconds",
        "Time one usage-observer pass took reading a target database's statistics"
    );
    metrics::describe_counter!(
        "switchyard_observer_calls_total",
        "Calls of statements touching a watched old shape, as the usage observer counted them, by target"
    );
    metrics::describe_counter!(
        "switchyard_observer_failures_total",
        "Usage-observer passes that could not read their target database, by target"
    );
    metrics::describe_histogram!(
        "switchyard_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request time until the response head, by route and method"
    );
    metrics::describe_histogram!(
        "switchyard_grpc_request_duration_seconds",
        metrics::Unit::Seconds,
        "gRPC call time until its response, by method (for Watch: until the stream starts)"
    );
    metrics::describe_histogram!(
        "switchyard_watch_fanout_seconds",
        metrics::Unit::Seconds,
        "Time from a change reaching this replica to its hand-off to one watch stream, per stream"
    );
    metrics::describe_histogram!(
        "switchyard_store_write_seconds",
        metrics::Unit::Seconds,
        "Time a store write transaction took, waiting for the write lock included"
    );
    metrics::describe_counter!(
        "switchyard_plan_halts_total",
        "Migration plans halted by a guardrail"
    );
    metrics::describe_counter!(
        "switchyard_metrics_reading_failures_total",
        "Scrapes whose per-migration readings (fleet, gate, backfill) the store could not answer; those gauges kept their last values"
    );
    metrics::describe_counter!(
        "switchyard_client_operations_total",
        "Reads and writes clients reported per migration, by side (old, new) and kind"
    );
    metrics::describe_counter!(
        "switchyard_client_errors_total",
        "Failed operations clients reported per migration, by side (old, new)"
    );
    metrics::describe_counter!(
        "switchyard_shadow_comparisons_total",
        "Shadow reads clients compared per migration"
    );
    metrics::describe_counter!(
        "switchyard_shadow_mismatches_total",
        "Shadow reads whose old and new results differed, per migration"
    );
    metrics::describe_gauge!(
        "switchyard_migration_stage_seconds",
        "Seconds each migration's front has been at its current stage"
    );
    metrics::describe_gauge!(
        "switchyard_migration_live_instances",
        "Live client instances the safety rules count for each migration"
    );
    metrics::describe_gauge!(
        "switchyard_migration_instances_behind",
        "Live instances that have not applied each migration's latest change"
    );
    metrics::describe_gauge!(
        "switchyard_migration_gate_passing",
        "1 when each migration's contract gate passes now (evaluated at complete 100%), else 0"
    );
    metrics::describe_gauge!(
        "switchyard_backfill_rows_done",
        "Rows each migration's backfill has done, as of its runner's last checkpoint"
    );
    metrics::describe_gauge!(
        "switchyard_backfill_rows_estimate",
        "Each migration's backfill's estimated total rows, as of its runner's last checkpoint"
    );
    metrics::describe_gauge!(
        "process_cpu_seconds_total",
        "User and system CPU time of the server process"
    );
    metrics::describe_gauge!(
        "process_resident_memory_bytes",
        "Resident memory of the server process"
    );
    metrics::describe_gauge!(
        "process_virtual_memory_bytes",
        "Virtual memory of the server process"
    );
    metrics::describe_gauge!(
        "process_open_fds",
        "Open file descriptors of the server process"
    );
    metrics::describe_gauge!("process_max_fds", "The process's open file limit");
    metrics::describe_gauge!(
        "process_start_time_seconds",
        "When the server process started, Unix seconds"
    );
    metrics::describe_counter!(
        "switchyard_http_requests_total",
        "HTTP requests by route and status"
    );
    metrics::describe_counter!(
        "switchyard_grpc_requests_total",
        "gRPC requests by method and canonical status code (OK, FAILED_PRECONDITION, …); a call refused before it ran (unauthenticated) is counted under the method called"
    );
    metrics::describe_gauge!(
        "switchyard_backfill_throttled",
        "1 while a migration's backfill runner holds between batches for the database's health (replica lag, WAL rate, blocked sessions, autovacuum), as of its last checkpoint"
    );
    metrics::describe_gauge!(
        "switchyard_backfill_throttled_seconds",
        "Seconds a migration's backfill runner has held for the database's health, over the whole backfill"
    );
    metrics::describe_gauge!(
        "switchyard_open_watches",
        "Open watch streams (gRPC and SSE)"
    );
    metrics::describe_gauge!(
        "switchyard_snapshot_version",
        "Snapshot version held by this replica"
    );
    metrics::describe_gauge!(
        "switchyard_open_connections",
        "Open connections by listener (http, grpc), watch streams included"
    );
    metrics::describe_counter!(
        "switchyard_connections_closed_total",
        "Connections the server closed, by listener and reason (header_timeout, idle_timeout, displaced)"
    );
    metrics::describe_counter!(
        "switchyard_connections_refused_total",
        "Connections refused because every open one was in use at the cap, by listener"
    );
    metrics::describe_counter!(
        "switchyard_refusals_total",
        "Mutations refused, by safety rule"
    );
    metrics::describe_counter!(
        "switchyard_unknown_migration_reports_total",
        "Migration keys in heartbeats and telemetry that name no migration, or one outside the \
         token's scope (ignored), by source"
    );
}

pub fn record_refusal(rule: switchyard_domain::Rule) {
    metrics::counter!("switchyard_refusals_total", "rule" => rule.number().to_string())
        .increment(1);
}

/// A plan halted by a guardrail.
pub fn record_plan_halt() {
    metrics::counter!("switchyard_plan_halts_total").increment(1);
}

/// Counts migration keys a client reported that name no migration: they are not stored, and a
/// growing count points at a client built against migrations this server never had.
pub fn record_unknown_migrations(source: &'static str, count: usize) {
    if count > 0 {
        metrics::counter!("switchyard_unknown_migration_reports_total", "source" => source)
            .increment(count as u64);
    }
}

/// One of the server's watch slots, counted (and shown as a gauge) for as long as the stream
/// holding it lives.
pub struct OpenWatch(Arc<AtomicUsize>);

impl OpenWatch {
    /// A slot from `open`, unless `max` are taken.
    pub fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()?;
        metrics::gauge!("switchyard_open_watches").increment(1.0);
        Some(Self(open.clone()))
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("switchyard_open_watches").decrement(1.0);
    }
}
