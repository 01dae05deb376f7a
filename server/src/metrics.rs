//! Prometheus metrics. The recorder is process-wide (the `metrics` facade has one global
//! recorder), installed on first use; `/metrics` renders it.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (e.g. by an embedding application); then
        // this handle renders an empty registry rather than failing start-up.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        // Present from the start, so dashboards and alerts see 0 rather than nothing.
        metrics::gauge!("switchyard_open_watches").set(0.0);
        handle
    })
}

fn describe() {
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
    metrics::describe_counter!(
        "switchyard_http_requests_total",
        "HTTP requests by route and status"
    );
    metrics::describe_counter!(
        "switchyard_grpc_requests_total",
        "gRPC requests by method and status code"
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
        "Migration keys in heartbeats and telemetry that name no migration (ignored), by source"
    );
}

/// A backfill runner's throttle state, from its last checkpoint on this replica.
pub fn record_backfill_throttle(migration: &str, throttled: bool, throttled_ms: u64) {
    let label = [("migration", migration.to_owned())];
    metrics::gauge!("switchyard_backfill_throttled", &label).set(if throttled { 1.0 } else { 0.0 });
    metrics::gauge!("switchyard_backfill_throttled_seconds", &label)
        .set(throttled_ms as f64 / 1000.0);
}

pub fn record_refusal(rule: switchyard_domain::Rule) {
    metrics::counter!("switchyard_refusals_total", "rule" => rule.number().to_string())
        .increment(1);
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
