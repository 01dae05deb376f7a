//! The backfill runner: copies data into the new shape in batches, resumably.
//!
//! The application gives a batch function: "process up to `limit` rows after `cursor`, return
//! how many and the last key". The runner
//! - records `backfill-started` (the server refuses it until rule 3 holds: every live client
//!   dual-writes), or resumes a running backfill from its server-side checkpoint;
//! - runs batches in key order, saving the checkpoint after each, so a crashed runner resumes
//!   where it stopped (a batch that ran but was not checkpointed runs again: batch functions
//!   must be idempotent, which keyset `UPDATE … SET new = f(old)` naturally is);
//! - waits between batches: a fixed pause, a rows-per-second limit, and while a release manager
//!   has paused it (`switchyard backfill pause`, seen through the client's watch stream) — a
//!   pause never interrupts a running batch;
//! - holds between batches while the database's health says so (a [`HealthCheck`]: replicas'
//!   replay lag, WAL rate, sessions waiting on the batches' locks, autovacuum on the table),
//!   re-checking on an interval and reporting why, since when and for how long in all with its
//!   checkpoints; a signal it cannot read holds it after a grace, rather than being guessed;
//! - keeps batches near a target duration (default 500 ms): a slower batch shrinks the window
//!   at once, faster ones grow it back slowly;
//! - takes the settings stored on the server (`switchyard backfill set`: batch size, rate,
//!   thresholds) from every checkpoint answer, so they apply from the next batch;
//! - stops when the backfill is cancelled, and records `backfill-complete` after the batch that
//!   says it is done;
//! - names its run (the version at which `backfill-started` was recorded) in every checkpoint
//!   and before recording completion, so a runner that missed a cancel, while the backfill was
//!   started again, is refused and stops instead of moving the new run's position.
//!
//! [`crate::postgres::PgBackfill`] (feature `postgres`) is a ready batch function for
//! PostgreSQL tables.

use crate::client::Client;
use crate::health::{HealthCheck, Reading, Thresholds, Window};
use crate::rpc::{self, ErrorKind, OnRefusal, ServerError, request};
use crate::state::Shared;
use crate::sync::heartbeat_message;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_domain::migration::BackfillStatus;
use switchyard_domain::{EventKind, Migration};
use switchyard_proto::v1 as pb;

/// What one batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Rows processed.
    pub rows: u64,
    /// Where the next batch starts (the last key processed, as text); `None` keeps the cursor.
    pub last_key: Option<String>,
    /// Nothing is left: the runner records `backfill-complete` after this batch. A plain keyset
    /// batch is done when it found fewer rows than its limit; the batch function says so
    /// explicitly because it may process fewer (a smaller batch after a statement timeout) or
    /// have a further pass to make (the Postgres flavour's sweep of rows it skipped).
    pub done: bool,
}

impl Batch {
    /// A keyset batch that asked for up to `limit` rows: done when it found fewer.
    pub fn keyset(rows: u64, last_key: Option<String>, limit: u64) -> Batch {
        Batch {
            rows,
            last_key,
            done: rows < limit,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackfillOutcome {
    /// Every batch ran and `backfill-complete` is recorded.
    Completed { rows: u64 },
    /// A release manager cancelled it.
    Cancelled { rows: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError<E> {
    /// The server refused to start or complete it (the message names the rule).
    #[error("refused by the server: {0}")]
    Refused(String),
    /// The server could not be reached to record progress; the checkpoint has the last batch
    /// that was saved, so a new run resumes there.
    #[error("cannot record progress on the server: {0}")]
    Server(String),
    /// The application's batch failed; a new run resumes at the last checkpoint.
    #[error("a batch failed: {0}")]
    Batch(E),
}

impl<E> From<ServerError> for BackfillError<E> {
    fn from(e: ServerError) -> Self {
        if e.kind.is_refusal() {
            BackfillError::Refused(e.message)
        } else {
            BackfillError::Server(e.message)
        }
    }
}

/// Where the server says the backfill is.
struct Progress {
    status: BackfillStatus,
    /// The last checkpoint's position, if one was saved.
    cursor: Option<String>,
    rows_done: u64,
    /// Time held for the database's health so far, over the whole backfill.
    throttled: Duration,
    /// The settings stored on the server.
    settings: pb::BackfillSettings,
}

/// What the runner reports about holding, with a checkpoint.
struct Hold<'a> {
    reason: &'a str,
    /// How long the current hold has lasted.
    held: Duration,
}

/// Runs a migration's backfill; build it with [`Client::backfill`].
pub struct BackfillRunner {
    shared: Arc<Shared>,
    key: String,
    /// The runner's own values; the server's settings replace them field by field.
    own: Pace,
    pause: Duration,
    total_estimate: u64,
    health: Option<Arc<dyn HealthCheck>>,
    recheck: Duration,
    unreadable_grace: Duration,
}

/// What paces the batches: the runner's own values, or those after the server's settings.
#[derive(Debug, Clone, PartialEq)]
struct Pace {
    batch_size: u64,
    max_rows_per_second: Option<f64>,
    batch_target: Option<Duration>,
    thresholds: Thresholds,
}

impl Pace {
    /// These values with each setting stored on the server in their place (0: off).
    fn with(&self, s: &pb::BackfillSettings) -> Pace {
        let millis = |v: Option<u64>, own: Option<Duration>| match v {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None => own,
        };
        let amount = |v: Option<u64>, own: Option<u64>| match v {
            Some(0) => None,
            Some(n) => Some(n),
            None => own,
        };
        let t = &self.thresholds;
        Pace {
            batch_size: s.batch_size.unwrap_or(self.batch_size).max(1),
            max_rows_per_second: match s.max_rows_per_second {
                Some(r) if r > 0.0 && r.is_finite() => Some(r),
                Some(_) => None,
                None => self.max_rows_per_second,
            },
            batch_target: millis(s.batch_target_ms, self.batch_target),
            thresholds: Thresholds {
                max_replica_lag: millis(s.max_replica_lag_ms, t.max_replica_lag),
                max_replica_lag_bytes: amount(s.max_replica_lag_bytes, t.max_replica_lag_bytes),
                max_wal_bytes_per_second: amount(
                    s.max_wal_bytes_per_second,
                    t.max_wal_bytes_per_second,
                ),
                yield_to_blocked_sessions: s
                    .yield_to_blocked_sessions
                    .unwrap_or(t.yield_to_blocked_sessions),
                hold_during_autovacuum: s
                    .hold_during_autovacuum
                    .unwrap_or(t.hold_during_autovacuum),
            },
        }
    }
}

impl Client {
    /// A backfill runner for `migration` (its token needs the `backfill` role, or `operator`).
    pub fn backfill(&self, migration: &str) -> BackfillRunner {
        // The runner's heartbeats name the migration, so lists of the migration's instances
        // show it beside the services that evaluate it.
        self.shared().registry.slot(migration).mark_used();
        BackfillRunner {
            shared: self.shared().clone(),
            key: migration.to_owned(),
            own: Pace {
                batch_size: 1_000,
                max_rows_per_second: None,
                batch_target: Some(Duration::from_millis(500)),
                thresholds: Thresholds::default(),
            },
            pause: Duration::ZERO,
            total_estimate: 0,
            health: None,
            recheck: Duration::from_secs(1),
            unreadable_grace: Duration::from_secs(30),
        }
    }
}

impl BackfillRunner {
    /// Rows per batch (default 1,000). Small batches keep each transaction, and its locks, short.
    pub fn batch_size(mut self, rows: u64) -> Self {
        self.own.batch_size = rows.max(1);
        self
    }

    /// Keep batches near this duration (default 500 ms; `None`: off): a batch that took longer
    /// shrinks the next ones in proportion, faster ones grow them back by a quarter at a time,
    /// up to the batch size.
    pub fn batch_target(mut self, target: Option<Duration>) -> Self {
        self.own.batch_target = target.filter(|t| !t.is_zero());
        self
    }

    /// Hold between batches while `check` reports a signal over its threshold (e.g.
    /// [`crate::postgres::PgBackfill::health`]). Without one, the runner never holds.
    pub fn health(mut self, check: impl HealthCheck + 'static) -> Self {
        self.health = Some(Arc::new(check));
        self
    }

    /// The thresholds of the health signals (default [`Thresholds::default`]); the server's
    /// settings (`switchyard backfill set`) replace them field by field.
    pub fn thresholds(mut self, thresholds: Thresholds) -> Self {
        self.own.thresholds = thresholds;
        self
    }

    /// How often a holding runner checks the signals again and reports (default 1 s), and how
    /// long a signal may be unreadable before the runner holds for it (default 30 s).
    pub fn health_timing(mut self, recheck: Duration, unreadable_grace: Duration) -> Self {
        self.recheck = recheck.max(Duration::from_millis(10));
        self.unreadable_grace = unreadable_grace;
        self
    }

    /// A pause after every batch, to leave the database room (default none).
    pub fn pause_between_batches(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    /// At most this many rows per second, averaged over the run.
    pub fn max_rows_per_second(mut self, rate: f64) -> Self {
        self.own.max_rows_per_second = (rate > 0.0).then_some(rate);
        self
    }

    /// The estimated number of rows, for progress and ETA (e.g. from `pg_class.reltuples`).
    pub fn total_estimate(mut self, rows: u64) -> Self {
        self.total_estimate = rows;
        self
    }

    /// Runs (or resumes) the backfill until it completes, is cancelled, or fails.
    pub async fn run<F, Fut, E>(&self, mut batch: F) -> Result<BackfillOutcome, BackfillError<E>>
    where
        F: FnMut(Option<String>, u64) -> Fut,
        Fut: Future<Output = Result<Batch, E>>,
    {
        // The run a resumed position belongs to, read before the position: a run started again
        // in between makes the first checkpoint refused, which ends this run as cancelled.
        let shown = self.migration().await?;
        let mut run = shown.backfill.started_version.map_or(0, |v| v.0);
        let progress = self.progress().await?;
        let (mut cursor, mut rows) = match progress.status {
            BackfillStatus::Complete => {
                return Ok(BackfillOutcome::Completed {
                    rows: progress.rows_done,
                });
            }
            BackfillStatus::Running => {
                tracing::info!(migration = %self.key, cursor = progress.cursor.as_deref().unwrap_or(""), rows = progress.rows_done, "resuming the backfill");
                (progress.cursor, progress.rows_done)
            }
            BackfillStatus::NotStarted => {
                // Rule 3 waits for every live instance, this one included: make sure the server
                // has this client's acknowledgement of the state it runs before asking. A client
                // that started before its first snapshot arrived (on its fallback, version 0)
                // first applies at least the state the server just showed.
                self.wait_for(shown.version.0).await;
                self.acknowledge().await?;
                let version = self.record(EventKind::BackfillStarted, 0).await?;
                run = version;
                // Follow our own start, so pause and cancel are seen from here on.
                self.wait_for(version).await;
                (None, 0)
            }
            BackfillStatus::None => {
                return Err(BackfillError::Refused(format!(
                    "migration {} has no backfill",
                    self.key
                )));
            }
        };
        // The server's settings, as of the last answer; applied before each batch.
        let mut pace = self.own.with(&progress.settings);
        let window = Window::default();
        let mut throttled = progress.throttled;
        let mut unreadable: HashMap<&'static str, Instant> = HashMap::new();
        // The rate limit averages over time spent running: a pause or a hold restarts it, so a
        // long one does not bank a burst for afterwards.
        let mut started = Instant::now();
        let mut rows_this_run = 0u64;
        'batches: loop {
            // Between batches: cancelled? paused? (Subscribe before reading, so a resume
            // applied in between is not missed.)
            let mut applied = self.shared.applied.subscribe();
            while let Some(m) = self.shared.migration(&self.key) {
                if m.backfill.status != BackfillStatus::Running {
                    // The local snapshot may lag the server (a slow stream, a start from a saved
                    // file): ask the server before taking it for a cancel.
                    if self.progress().await?.status == BackfillStatus::Running {
                        let seen = *applied.borrow_and_update();
                        let newer = applied.wait_for(|v| *v > seen);
                        let _ = tokio::time::timeout(Duration::from_secs(1), newer).await;
                        continue;
                    }
                    tracing::info!(migration = %self.key, rows, "the backfill was cancelled");
                    return Ok(BackfillOutcome::Cancelled { rows });
                }
                if !m.backfill.paused {
                    break;
                }
                tracing::info!(migration = %self.key, rows, "backfill paused; waiting for resume");
                let seen = *applied.borrow_and_update();
                let _ = applied.wait_for(|v| *v > seen).await.map(|_| ());
                started = Instant::now();
                rows_this_run = 0;
            }
            // Between batches: is the database healthy enough for another?
            if let Some(health) = &self.health {
                let mut hold: Option<(Instant, String)> = None;
                loop {
                    let readings = health.check(&pace.thresholds).await;
                    let Some(reason) = self.judge(readings, &mut unreadable) else {
                        break;
                    };
                    let since = match &hold {
                        Some((since, last)) if *last == reason => *since,
                        Some((since, _)) => {
                            tracing::info!(migration = %self.key, %reason, "backfill still holding");
                            *since
                        }
                        None => {
                            tracing::info!(migration = %self.key, %reason, "backfill holding for the database's health");
                            Instant::now()
                        }
                    };
                    hold = Some((since, reason.clone()));
                    let held = since.elapsed();
                    let saved = self
                        .checkpoint(
                            cursor.as_deref().unwrap_or(""),
                            rows,
                            run,
                            throttled + held,
                            Some(Hold {
                                reason: &reason,
                                held,
                            }),
                        )
                        .await;
                    if let Some(outcome) = self.cancelled_if_refused(&saved, rows, run).await {
                        return outcome;
                    }
                    // New thresholds apply to the next check, so a raised one releases the hold.
                    pace = self.apply(pace, saved?.settings, &window);
                    // A pause or cancel while holding is handled where it always is.
                    let paused_or_ended = self.shared.migration(&self.key).is_some_and(|m| {
                        m.backfill.paused || m.backfill.status != BackfillStatus::Running
                    });
                    if paused_or_ended {
                        throttled += since.elapsed();
                        continue 'batches;
                    }
                    tokio::time::sleep(self.recheck).await;
                }
                if let Some((since, _)) = hold {
                    throttled += since.elapsed();
                    tracing::info!(migration = %self.key, held = ?since.elapsed(), "backfill resumes after holding");
                    started = Instant::now();
                    rows_this_run = 0;
                }
            }
            let limit = window.get(pace.batch_size);
            let began = Instant::now();
            let ran = {
                let batch = batch(cursor.clone(), limit);
                match &self.health {
                    Some(health) => {
                        tokio::pin!(batch);
                        let watch = health.during_batch(&pace.thresholds);
                        tokio::select! {
                            ran = &mut batch => ran,
                            // A watcher that ends early watches no more; the batch goes on.
                            () = watch => batch.await,
                        }
                    }
                    None => batch.await,
                }
            }
            .map_err(BackfillError::Batch)?;
            let took = began.elapsed();
            if let Some(target) = pace.batch_target {
                if took > target {
                    // In proportion: the next batch should take about the target.
                    let rows = (limit as f64 * target.as_secs_f64() / took.as_secs_f64()) as u64;
                    tracing::debug!(migration = %self.key, ?took, ?target, rows, "batch over its target; shrinking");
                    window.shrink(rows.min(limit - 1));
                } else if took.as_secs_f64() < target.as_secs_f64() * 0.8 {
                    window.grow(limit, pace.batch_size, 1.25);
                }
            }
            rows += ran.rows;
            rows_this_run += ran.rows;
            if ran.last_key.is_some() {
                cursor = ran.last_key.clone();
            }
            // A cancel that arrived during the batch makes the server refuse what follows:
            // that is the cancel, not a failure.
            let saved = self
                .checkpoint(cursor.as_deref().unwrap_or(""), rows, run, throttled, None)
                .await;
            if let Some(outcome) = self.cancelled_if_refused(&saved, rows, run).await {
                return outcome;
            }
            let saved = saved?;
            if ran.done {
                let recorded = self.record(EventKind::BackfillComplete, run).await;
                if let Some(outcome) = self.cancelled_if_refused(&recorded, rows, run).await {
                    return outcome;
                }
                recorded?;
                tracing::info!(migration = %self.key, rows, "backfill complete");
                return Ok(BackfillOutcome::Completed { rows });
            }
            let before = pace.max_rows_per_second;
            pace = self.apply(pace, saved.settings, &window);
            if pace.max_rows_per_second != before {
                // A new rate counts from now.
                started = Instant::now();
                rows_this_run = 0;
            }
            let mut wait = self.pause;
            if let Some(rate) = pace.max_rows_per_second {
                let due = Duration::from_secs_f64(rows_this_run as f64 / rate);
                wait = wait.max(due.saturating_sub(started.elapsed()));
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// The pace after the server's latest settings; a changed batch size takes effect at once
    /// (the window starts again from it).
    fn apply(&self, pace: Pace, settings: Option<pb::BackfillSettings>, window: &Window) -> Pace {
        // None: a server from before settings; the runner's own values.
        let next = self.own.with(&settings.unwrap_or_default());
        if next != pace {
            tracing::info!(migration = %self.key, ?next, "backfill settings changed on the server");
        }
        if next.batch_size != pace.batch_size {
            window.reset();
        }
        next
    }

    /// Why to hold, from the unhealthy readings: every signal over its threshold, and every
    /// signal unreadable for longer than the grace. `None`: go on.
    fn judge(
        &self,
        readings: Vec<Reading>,
        unreadable: &mut HashMap<&'static str, Instant>,
    ) -> Option<String> {
        let mut reasons = Vec::new();
        let mut still_unreadable = Vec::new();
        for reading in readings {
            match reading {
                Reading::Over { reason, .. } => reasons.push(reason),
                Reading::Unreadable { signal, error } => {
                    still_unreadable.push(signal);
                    let since = *unreadable.entry(signal).or_insert_with(Instant::now);
                    if since.elapsed() >= self.unreadable_grace {
                        reasons.push(format!(
                            "cannot read {signal} for {} ({error}); holding rather than guessing",
                            crate::health::seconds(Duration::from_secs(since.elapsed().as_secs()))
                        ));
                    } else {
                        tracing::warn!(migration = %self.key, signal, %error, "cannot read a health signal; holding if it stays unreadable for {:?}", self.unreadable_grace);
                    }
                }
            }
        }
        unreadable.retain(|signal, _| still_unreadable.contains(signal));
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// After a refusal: if the server says this run is no longer running (cancelled, or
    /// cancelled and started again), it was cancelled.
    async fn cancelled_if_refused<T, E>(
        &self,
        result: &Result<T, BackfillError<E>>,
        rows: u64,
        run: u64,
    ) -> Option<Result<BackfillOutcome, BackfillError<E>>> {
        if !matches!(result, Err(BackfillError::Refused(_))) {
            return None;
        }
        let backfill = self.migration::<E>().await.ok()?.backfill;
        let running = backfill.status == BackfillStatus::Running;
        if running && backfill.started_version.map_or(0, |v| v.0) == run {
            return None;
        }
        tracing::info!(migration = %self.key, rows, "the backfill was cancelled");
        Some(Ok(BackfillOutcome::Cancelled { rows }))
    }

    async fn migration<E>(&self) -> Result<Migration, BackfillError<E>> {
        let message = pb::GetMigrationRequest {
            key: self.key.clone(),
        };
        let m = self
            .call(message, |mut c, r| async move { c.get_migration(r).await })
            .await?;
        Migration::try_from(m).map_err(|e| {
            BackfillError::Server(format!(
                "the server sent migration {}, which this client cannot read ({e}); upgrade the \
                 client",
                self.key
            ))
        })
    }

    /// Reports this client's applied version to the server now (as its heartbeat does).
    async fn acknowledge<E>(&self) -> Result<(), BackfillError<E>> {
        let _turn = self.shared.heartbeat_turn.lock().await;
        let message = heartbeat_message(&self.shared, self.shared.version(), false);
        self.call(message, |mut c, r| async move { c.heartbeat(r).await })
            .await?;
        Ok(())
    }

    async fn progress<E>(&self) -> Result<Progress, BackfillError<E>> {
        let message = pb::GetBackfillRequest {
            key: self.key.clone(),
        };
        let p = self
            .call(message, |mut c, r| async move { c.get_backfill(r).await })
            .await?;
        Ok(Progress {
            status: BackfillStatus::from(p.status()),
            throttled: Duration::from_millis(p.throttle.as_ref().map_or(0, |t| t.throttled_ms)),
            settings: p.settings.unwrap_or_default(),
            cursor: (!p.cursor.is_empty()).then_some(p.cursor),
            rows_done: p.rows_done,
        })
    }

    /// Saves the position (and the throttle state); returns the server's answer.
    async fn checkpoint<E>(
        &self,
        cursor: &str,
        rows: u64,
        run: u64,
        throttled: Duration,
        hold: Option<Hold<'_>>,
    ) -> Result<pb::BackfillProgress, BackfillError<E>> {
        let message = pb::BackfillCheckpointRequest {
            key: self.key.clone(),
            cursor: cursor.to_owned(),
            rows_done: rows,
            rows_total_estimate: self.total_estimate.max(rows),
            runner: format!(
                "{}/{}",
                self.shared.config.service, self.shared.config.instance_id
            ),
            started_version: run,
            throttle: Some(pb::BackfillThrottle {
                throttled: hold.is_some(),
                reason: hold.as_ref().map_or(String::new(), |h| h.reason.to_owned()),
                since_ms: 0,
                throttled_ms: throttled.as_millis() as u64,
                held_ms: hold.as_ref().map_or(0, |h| h.held.as_millis() as u64),
            }),
        };
        let answer = self
            .call(
                message,
                |mut c, r| async move { c.checkpoint_backfill(r).await },
            )
            .await?;
        Ok(answer)
    }

    /// Records an event at the migration's current version (re-reading it on a conflict); with
    /// `run` set, only while that run is the current one.
    async fn record<E>(&self, event: EventKind, run: u64) -> Result<u64, BackfillError<E>> {
        for _ in 0..5 {
            let current = self.migration().await?;
            let current_run = current.backfill.started_version.map_or(0, |v| v.0);
            if run != 0 && current_run != run {
                return Err(BackfillError::Refused(format!(
                    "the backfill of {} was started again (at version {current_run}) since this \
                     run began (at version {run})",
                    self.key
                )));
            }
            let message = pb::RecordEventRequest {
                key: self.key.clone(),
                event: pb::EventKind::from(event) as i32,
                expected_version: current.version.0,
                reason: format!(
                    "backfill runner {}/{}",
                    self.shared.config.service, self.shared.config.instance_id
                ),
                rows_done: 0,
                rows_total_estimate: 0,
                bypass_approval: false,
            };
            match self
                .call(message, |mut c, r| async move { c.record_event(r).await })
                .await
            {
                Ok(m) => return Ok(m.version),
                // Someone else changed the migration meanwhile: read it again.
                Err(e) if e.kind == ErrorKind::StaleVersion => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(BackfillError::Server(
            "the migration kept changing while recording the backfill's progress".to_owned(),
        ))
    }

    async fn wait_for(&self, version: u64) {
        let mut applied = self.shared.applied.subscribe();
        // Bounded: a client cut off from the server still runs on its checkpointed progress.
        let _ = tokio::time::timeout(Duration::from_secs(10), applied.wait_for(|v| *v >= version))
            .await;
    }

    /// One RPC, on the servers in turn; refusals are final, other failures are retried with
    /// backoff for about half a minute.
    async fn call<M, T, Call, Fut>(&self, message: M, call: Call) -> Result<T, ServerError>
    where
        M: Clone,
        Call: Fn(rpc::Client, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let attempt = |client| call(client, request(&self.shared, message.clone()));
        let mut delay = Duration::from_millis(100);
        let mut rounds = 0;
        loop {
            let failed = match rpc::first_answer(&self.shared, OnRefusal::Stop, attempt).await {
                Ok(answer) => return Ok(answer.into_inner()),
                Err(e) if e.kind.is_refusal() => return Err(e),
                Err(e) => e,
            };
            tokio::time::sleep(delay).await;
            rounds += 1;
            if rounds == 8 {
                return Err(failed);
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Pace {
        Pace {
            batch_size: 1_000,
            max_rows_per_second: Some(500.0),
            batch_target: Some(Duration::from_millis(500)),
            thresholds: Thresholds::default(),
        }
    }

    #[test]
    fn no_settings_leave_the_runners_own_values() {
        assert_eq!(own().with(&pb::BackfillSettings::default()), own());
    }

    #[test]
    fn settings_replace_field_by_field_and_zero_turns_off() {
        let settings = pb::BackfillSettings {
            batch_size: Some(7),
            max_rows_per_second: Some(0.0),
            max_replica_lag_ms: Some(2_000),
            max_replica_lag_bytes: Some(0),
            batch_target_ms: Some(0),
            hold_during_autovacuum: Some(false),
            ..Default::default()
        };
        let pace = own().with(&settings);
        assert_eq!(pace.batch_size, 7);
        assert_eq!(pace.max_rows_per_second, None, "0: no limit");
        assert_eq!(pace.batch_target, None, "0: off");
        assert_eq!(
            pace.thresholds.max_replica_lag,
            Some(Duration::from_secs(2))
        );
        assert_eq!(pace.thresholds.max_replica_lag_bytes, None, "0: off");
        assert_eq!(
            pace.thresholds.max_wal_bytes_per_second,
            Thresholds::default().max_wal_bytes_per_second,
            "not set: the runner's own"
        );
        assert!(!pace.thresholds.hold_during_autovacuum);
        assert!(pace.thresholds.yield_to_blocked_sessions);
    }
}
