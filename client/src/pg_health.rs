//! PostgreSQL health signals for the backfill runner ([`PgHealth`]), read from the primary the
//! backfill writes to:
//! - each standby's replay lag, in bytes (`pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)`
//!   from `pg_stat_replication`) and in time: the larger of `replay_lag` and this reader's own
//!   estimate, how long ago the primary's WAL first passed the standby's replay position.
//!   `replay_lag` alone is not enough: it is measured when the standby replays, so a standby
//!   whose replay stopped keeps showing its last, small value;
//! - WAL written per second: the change of `pg_current_wal_lsn()` over the last seconds;
//! - application sessions that waited on a lock a batch held (`pg_blocking_pids` against the
//!   batch sessions, found by their application name), sampled while batches run: between
//!   batches the backfill holds no locks, so the runner yields for a while after one is seen;
//! - autovacuum working on the backfilled table (`pg_stat_progress_vacuum`).
//!
//! Reading `pg_stat_replication` in full needs the `pg_monitor` (or `pg_read_all_stats`) role;
//! without it the replica signals are unreadable, and the runner holds after its grace.

use crate::health::{HealthCheck, Reading, Thresholds, bytes, seconds};
use futures::future::BoxFuture;
use sqlx::postgres::PgPool;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const REPLICA: &str = "replica lag";
const WAL: &str = "WAL rate";
const BLOCKED: &str = "blocked sessions";
const AUTOVACUUM: &str = "autovacuum";

/// Samples of the primary's WAL position kept for the rate and the lag estimate.
const SAMPLES_KEPT: Duration = Duration::from_secs(600);

/// The PostgreSQL [`HealthCheck`]; see the module documentation. Usually made by
/// [`crate::postgres::PgBackfill::health`].
pub struct PgHealth {
    pool: PgPool,
    table: Option<String>,
    batch_sessions: Option<String>,
    /// How long to hold after a session was seen waiting on a batch's locks.
    yield_for: Duration,
    /// How often sessions are sampled while a batch runs.
    sample_every: Duration,
    /// (when, the primary's WAL position in bytes), oldest first.
    wal: Mutex<VecDeque<(Instant, i64)>>,
    /// The last time sessions were seen waiting on a batch, and who.
    blocked: Mutex<Option<(Instant, String)>>,
}

impl PgHealth {
    /// Signals of the server `pool` connects to (the primary). Without [`PgHealth::table`]
    /// autovacuum is not watched; without [`PgHealth::batch_sessions`], blocked sessions are not.
    pub fn new(pool: PgPool) -> PgHealth {
        PgHealth {
            pool,
            table: None,
            batch_sessions: None,
            yield_for: Duration::from_secs(1),
            sample_every: Duration::from_millis(50),
            wal: Mutex::new(VecDeque::new()),
            blocked: Mutex::new(None),
        }
    }

    /// The backfilled table (optionally `schema.table`), for autovacuum.
    pub fn table(mut self, table: &str) -> Self {
        self.table = Some(table.to_owned());
        self
    }

    /// The application name the batch sessions carry while they run (see
    /// [`crate::postgres::PgBackfill::application_name`]).
    pub fn batch_sessions(mut self, application_name: &str) -> Self {
        self.batch_sessions = Some(application_name.to_owned());
        self
    }

    /// How long to hold after an application session was seen waiting on a batch (default
    /// 1 s), and how often sessions are sampled while a batch runs (default 50 ms).
    pub fn yield_to_blocked(mut self, hold: Duration, sample_every: Duration) -> Self {
        self.yield_for = hold;
        self.sample_every = sample_every.max(Duration::from_millis(1));
        self
    }

    async fn replicas(&self, t: &Thresholds, out: &mut Vec<Reading>) {
        let watch_wal = t.max_wal_bytes_per_second.is_some();
        let watch_lag = t.max_replica_lag.is_some() || t.max_replica_lag_bytes.is_some();
        if !watch_wal && !watch_lag {
            return;
        }
        let current: Result<i64, sqlx::Error> =
            sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
                .fetch_one(&self.pool)
                .await;
        let current = match current {
            Ok(c) => c,
            Err(e) => {
                let error = format!("cannot read pg_current_wal_lsn(): {e}");
                for signal in [(watch_lag, REPLICA), (watch_wal, WAL)] {
                    if signal.0 {
                        out.push(Reading::Unreadable {
                            signal: signal.1,
                            error: error.clone(),
                        });
                    }
                }
                return;
            }
        };
        let now = Instant::now();
        let samples = {
            let mut wal = self.wal.lock().unwrap();
            wal.push_back((now, current));
            while wal
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > SAMPLES_KEPT)
            {
                wal.pop_front();
            }
            wal.clone()
        };
        if let Some(max) = t.max_wal_bytes_per_second {
            // Over the last few seconds: one sample a moment ago says little.
            let base = samples
                .iter()
                .rev()
                .find(|(at, _)| now.duration_since(*at) >= Duration::from_secs(1));
            if let Some((at, lsn)) = base {
                let rate = (current - lsn) as f64 / now.duration_since(*at).as_secs_f64();
                if rate > max as f64 {
                    out.push(Reading::Over {
                        signal: WAL,
                        reason: format!(
                            "WAL written at {}/s > {}/s",
                            bytes(rate),
                            bytes(max as f64)
                        ),
                    });
                }
            }
        }
        if watch_lag {
            self.lag(t, &samples, now, out).await;
        }
    }

    async fn lag(
        &self,
        t: &Thresholds,
        samples: &VecDeque<(Instant, i64)>,
        now: Instant,
        out: &mut Vec<Reading>,
    ) {
        type Row = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<f64>,
            Option<i64>,
            Option<i64>,
        );
        let rows: Result<Vec<Row>, sqlx::Error> = sqlx::query_as(
            "SELECT application_name, client_addr::text, state, \
                    EXTRACT(epoch FROM replay_lag)::float8, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint, \
                    pg_wal_lsn_diff(replay_lsn, '0/0')::bigint \
             FROM pg_stat_replication ORDER BY application_name",
        )
        .fetch_all(&self.pool)
        .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                out.push(Reading::Unreadable {
                    signal: REPLICA,
                    error: format!("cannot read pg_stat_replication: {e}"),
                });
                return;
            }
        };
        for (app, addr, state, replay_lag, behind, replayed) in rows {
            // Without pg_monitor (or pg_read_all_stats) only the names are visible.
            let Some(state) = state else {
                out.push(Reading::Unreadable {
                    signal: REPLICA,
                    error: "pg_stat_replication hides the standbys' positions from this role; \
                            grant it pg_monitor"
                        .to_owned(),
                });
                return;
            };
            let name = match (app.as_deref(), addr.as_deref()) {
                // The default name says nothing; the address does.
                (Some(a), Some(addr)) if a.is_empty() || a == "walreceiver" => addr.to_owned(),
                (Some(a), _) if !a.is_empty() => a.to_owned(),
                (_, Some(addr)) => addr.to_owned(),
                _ => "(local)".to_owned(),
            };
            let (Some(behind), Some(replayed)) = (behind, replayed) else {
                // Starting up: it has not replayed anything yet that it reported.
                tracing::debug!(replica = %name, state, "replica has no replay position yet");
                continue;
            };
            if let Some(max) = t.max_replica_lag {
                // The earliest sample past the standby's position: WAL it has not replayed has
                // existed at least since then.
                let estimate = samples
                    .iter()
                    .find(|(_, lsn)| *lsn > replayed)
                    .map_or(Duration::ZERO, |(at, _)| now.duration_since(*at));
                let reported = replay_lag
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map_or(Duration::ZERO, Duration::from_secs_f64);
                let lag = estimate.max(reported);
                if lag > max {
                    out.push(Reading::Over {
                        signal: REPLICA,
                        reason: format!(
                            "replica {name} replay lag {} > {}",
                            seconds(lag),
                            seconds(max)
                        ),
                    });
                    continue;
                }
            }
            if let Some(max) = t.max_replica_lag_bytes
                && behind > 0
                && behind as u64 > max
            {
                out.push(Reading::Over {
                    signal: REPLICA,
                    reason: format!(
                        "replica {name} replay lag {} > {}",
                        bytes(behind as f64),
                        bytes(max as f64)
                    ),
                });
            }
        }
    }

    async fn autovacuum(&self, table: &str, out: &mut Vec<Reading>) {
        let rows: Result<Vec<(i32, String)>, sqlx::Error> = sqlx::query_as(
            "SELECT p.pid, p.phase FROM pg_stat_progress_vacuum p \
             JOIN pg_stat_activity a ON a.pid = p.pid \
             WHERE p.relid = to_regclass($1) AND a.backend_type = 'autovacuum worker'",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await;
        match rows {
            Ok(rows) => {
                if let Some((pid, phase)) = rows.first() {
                    out.push(Reading::Over {
                        signal: AUTOVACUUM,
                        reason: format!("autovacuum on {table} (pid {pid}, {phase})"),
                    });
                }
            }
            Err(e) => out.push(Reading::Unreadable {
                signal: AUTOVACUUM,
                error: format!("cannot read pg_stat_progress_vacuum: {e}"),
            }),
        }
    }

    /// Sessions waiting on a lock a batch session holds now: (pid, what it runs).
    async fn waiting_on_batches(&self, name: &str) -> Result<Vec<(i32, String)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT w.pid, left(coalesce(w.query, ''), 60) FROM pg_stat_activity w \
             WHERE w.wait_event_type = 'Lock' \
               AND w.application_name IS DISTINCT FROM $1 \
               AND pg_blocking_pids(w.pid) && \
                   ARRAY(SELECT pid FROM pg_stat_activity WHERE application_name = $1) \
             ORDER BY w.pid LIMIT 5",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await
    }
}

impl HealthCheck for PgHealth {
    fn check<'a>(&'a self, t: &'a Thresholds) -> BoxFuture<'a, Vec<Reading>> {
        Box::pin(async move {
            let mut out = Vec::new();
            self.replicas(t, &mut out).await;
            if t.hold_during_autovacuum
                && let Some(table) = &self.table
            {
                self.autovacuum(table, &mut out).await;
            }
            if t.yield_to_blocked_sessions {
                let seen = self.blocked.lock().unwrap().clone();
                if let Some((at, who)) = seen
                    && at.elapsed() < self.yield_for
                {
                    out.push(Reading::Over {
                        signal: BLOCKED,
                        reason: format!(
                            "application session(s) waited on the backfill's locks ({who}); \
                             yielding {}",
                            seconds(self.yield_for)
                        ),
                    });
                }
            }
            out
        })
    }

    fn during_batch<'a>(&'a self, t: &'a Thresholds) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(name) = self
                .batch_sessions
                .as_deref()
                .filter(|_| t.yield_to_blocked_sessions)
            else {
                return std::future::pending().await;
            };
            loop {
                match self.waiting_on_batches(name).await {
                    Ok(waiting) if !waiting.is_empty() => {
                        let who = waiting
                            .iter()
                            .map(|(pid, query)| format!("pid {pid}: {}", query.trim()))
                            .collect::<Vec<_>>()
                            .join("; ");
                        *self.blocked.lock().unwrap() = Some((Instant::now(), who));
                    }
                    Ok(_) => {}
                    // Sampling is best effort: a failure here shows as nothing seen, and the
                    // between-batch checks report an unreadable database.
                    Err(e) => tracing::debug!(error = %e, "cannot sample blocked sessions"),
                }
                tokio::time::sleep(self.sample_every).await;
            }
        })
    }
}
