//! The usage observer: the server reads each `--target-database`'s `pg_stat_statements` (and,
//! for who ran a statement, `pg_stat_activity`), keeps the statements that touch a watched
//! migration's old-shape objects, and records their calls per minute as the gate's evidence.
//!
//! It runs inside the server rather than as a separate process: the server already holds the
//! targets' configuration, the store where the evidence and the lease live, and the gate that
//! reads it, so there is no second credential, API or deployment to keep in step.
//!
//! With several replicas, one holds a lease per target in the store and only it reads that
//! target; the counters it subtracts are kept in the store, so a replica taking over continues
//! from the same baseline (no call is counted twice or lost). `pg_stat_statements` counts are
//! cumulative, so a pass that fails (the target unreachable for a while) loses nothing: the next
//! one sees the calls made meanwhile. What does lose calls, a statistics reset or an eviction,
//! restarts the migration's coverage, and the gate then waits for a full soak of evidence.

use crate::app::App;
use crate::store::{PassRead, Relevant};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_domain::usage::{ObjectRef, Session};
use switchyard_domain::{Stage, TargetName};
use switchyard_sql::{Certainty, SchemaObject};
use tokio::sync::watch;

/// How often the observer reads each target.
#[derive(Debug, Clone, Copy)]
pub struct ObserveConfig {
    /// One pass over `pg_stat_statements`: the evidence's resolution.
    pub interval: Duration,
    /// One look at `pg_stat_activity` for who runs the statements found.
    pub activity_interval: Duration,
}

impl ObserveConfig {
    /// Evidence older than this (three passes missed) is stale: the gate does not trust it.
    pub fn stale_after(&self) -> Duration {
        self.interval * 3 + Duration::from_secs(5)
    }
}

/// The name the observer's connections carry, so a DBA sees what they are.
pub const APPLICATION_NAME: &str = "switchyard-observer";

/// How long connecting to, or one statement on, a target may take.
const TARGET_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts one observer per target; each stops when `stop` turns true.
pub fn spawn(
    app: Arc<App>,
    targets: Vec<(TargetName, String)>,
    config: ObserveConfig,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let replica = format!("replica-{:016x}", rand::random::<u64>());
    targets
        .into_iter()
        .map(|(name, url)| {
            let observer = Observer {
                app: app.clone(),
                name,
                url,
                replica: replica.clone(),
                config,
                conn: None,
                parsed: HashMap::new(),
                watched_objects: Vec::new(),
                relevant: HashMap::new(),
                sessions: HashMap::new(),
                holding: false,
                failing: None,
                warned_superuser: false,
            };
            tokio::spawn(observer.run(stop.clone()))
        })
        .collect()
}

/// A statement's identity in `pg_stat_statements` within one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EntryId {
    userid: i64,
    toplevel: bool,
    queryid: i64,
}

impl EntryId {
    fn key(&self) -> String {
        let level = if self.toplevel { "top" } else { "nested" };
        format!("{}/{level}/{}", self.userid, self.queryid)
    }
}

struct Connected {
    conn: PgConnection,
    /// The target database's oid: `pg_stat_statements` covers the whole cluster.
    db_oid: i64,
}

struct Observer {
    app: Arc<App>,
    name: TargetName,
    url: String,
    replica: String,
    config: ObserveConfig,
    conn: Option<Connected>,
    /// Each statement's references to the watched objects, parsed once per statement, with its
    /// text when it has any (the text is the evidence).
    parsed: HashMap<EntryId, (Vec<switchyard_sql::Reference>, String)>,
    /// The objects `parsed` was resolved against; when they change, everything is re-parsed.
    watched_objects: Vec<SchemaObject>,
    /// The statements touching a watched object at the last pass (whose sessions are sampled).
    relevant: HashMap<i64, HashSet<i64>>,
    /// Sessions seen since the last pass, per (role oid, query id).
    sessions: HashMap<(i64, i64), BTreeSet<Session>>,
    holding: bool,
    /// The reason the last pass failed: a failure logs a warning when it starts or changes,
    /// not on every pass.
    failing: Option<String>,
    warned_superuser: bool,
}

/// A watched migration: its key and old-shape objects.
struct Watched {
    key: String,
    objects: Vec<(SchemaObject, String)>,
    /// The domain's form of the objects (for the retire's catalog check).
    declared: Vec<switchyard_domain::SchemaObject>,
    /// When its old shape was retired, if it is.
    retired_at: Option<i64>,
}

/// Where to read the server log from, and which retires were watched before this pass.
struct LogState {
    file: String,
    offset: i64,
    /// Retires (key, retired_at) the observer had looked at before: a log line read now is
    /// theirs; a retire seen for the first time starts its watch at this pass.
    known: HashSet<(String, i64)>,
}

/// An error line of the server log: a statement the target refused.
#[derive(serde::Deserialize)]
struct LogLine {
    #[serde(default)]
    timestamp: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    dbname: String,
    #[serde(default)]
    remote_host: String,
    #[serde(default)]
    error_severity: String,
    #[serde(default)]
    state_code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    statement: String,
    #[serde(default)]
    application_name: String,
}

/// What the observer's role needs to read the server log (superusers only, by default); the
/// files read are the log files in the data directory, nothing else.
pub const LOG_GRANT: &str = "GRANT EXECUTE ON FUNCTION pg_current_logfile(text), \
    pg_stat_file(text, boolean), pg_read_binary_file(text, bigint, bigint, boolean) TO the \
    observer's role";

/// How much of the server log one pass reads at most.
const LOG_CHUNK: i64 = 16 << 20;

impl Observer {
    async fn run(mut self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut passes = tokio::time::interval(self.config.interval);
        passes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut looks = tokio::time::interval(self.config.activity_interval);
        looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The guard `wait_for` returns is not `Send`: drop it inside its own future.
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = passes.tick() => self.pass().await,
                _ = looks.tick() => {
                    if self.holding && !self.relevant.is_empty() {
                        if let Err(e) = self.sample_activity().await {
                            tracing::debug!(target_database = %self.name, error = %e, "sampling pg_stat_activity failed");
                            self.conn = None;
                        }
                    }
                }
                _ = &mut stopped => return Ok(()),
            }
        }
    }

    fn watched(&self) -> Vec<Watched> {
        self.app
            .hub
            .snapshot()
            .migrations
            .values()
            .filter(|m| {
                m.stage != Stage::Contracted
                    && m.database.target.as_ref() == Some(&self.name)
                    && !m.database.old_shape.is_empty()
            })
            .map(|m| Watched {
                key: m.key.to_string(),
                objects: m
                    .database
                    .old_shape
                    .iter()
                    .map(|o| (SchemaObject::from(o), o.to_string()))
                    .collect(),
                declared: m.database.old_shape.clone(),
                retired_at: m.retired_at_ms,
            })
            .collect()
    }

    async fn pass(&mut self) {
        let watched = self.watched();
        if watched.is_empty() {
            // Nothing to look for: no connection is kept to the target.
            self.holding = false;
            self.conn = None;
            return;
        }
        let now = self.app.now();
        let lease = now + self.config.stale_after().as_millis() as i64;
        match self
            .app
            .store
            .observer_lease(self.name.as_str(), &self.replica, now, lease)
            .await
        {
            Ok(true) => self.holding = true,
            Ok(false) => {
                // Another replica observes this target.
                self.holding = false;
                self.conn = None;
                self.sessions.clear();
                return;
            }
            Err(e) => {
                tracing::warn!(target_database = %self.name, error = %e, "taking the observer lease failed");
                return;
            }
        }
        let log = match self.log_state(&watched).await {
            Ok(log) => log,
            Err(e) => {
                tracing::warn!(target_database = %self.name, error = %e, "reading the observer's state failed");
                return;
            }
        };
        let started = Instant::now();
        let read = self.read(&watched, log.as_ref()).await;
        let store = &self.app.store;
        match read {
            Ok(mut read) => {
                if self.failing.take().is_some() {
                    tracing::info!(target_database = %self.name, "observing the target database works again");
                }
                read.pass_ms = started.elapsed().as_millis() as u64;
                self.sessions.clear();
                let now = self.app.now();
                match store
                    .record_pass(self.name.as_str(), &self.replica, now, &read)
                    .await
                {
                    Ok(Some(outcome)) => {
                        metrics::histogram!("switchyard_observer_pass_seconds", "target" => self.name.to_string())
                            .record(read.pass_ms as f64 / 1000.0);
                        metrics::counter!("switchyard_observer_calls_total", "target" => self.name.to_string())
                            .increment(outcome.calls);
                        if let Some(gap) = outcome.gap {
                            tracing::warn!(target_database = %self.name, %gap, "usage evidence has a gap: coverage restarts now");
                        }
                    }
                    Ok(None) => self.holding = false,
                    Err(e) => {
                        tracing::warn!(target_database = %self.name, error = %e, "recording an observer pass failed")
                    }
                }
            }
            Err(reason) => {
                // Reconnect next time: the connection may be what failed.
                self.conn = None;
                if self.failing.as_ref() != Some(&reason) {
                    tracing::warn!(target_database = %self.name, %reason, "observing the target database failed");
                } else {
                    tracing::debug!(target_database = %self.name, %reason, "observing the target database still fails");
                }
                self.failing = Some(reason.clone());
                metrics::counter!("switchyard_observer_failures_total", "target" => self.name.to_string())
                    .increment(1);
                let now = self.app.now();
                if let Err(e) = store
                    .record_observer_error(self.name.as_str(), &self.replica, now, &reason)
                    .await
                {
                    tracing::warn!(target_database = %self.name, error = %e, "recording an observer failure failed");
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<Connected, String> {
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(|_| "the target's URL cannot be parsed".to_owned())?
            .application_name(APPLICATION_NAME)
            // A safety belt under the read-only role the configuration should name: whatever
            // the role may do, the observer's own sessions cannot write.
            .options([
                ("statement_timeout", "10s"),
                ("default_transaction_read_only", "on"),
            ])
            .disable_statement_logging();
        let mut conn = tokio::time::timeout(TARGET_TIMEOUT, options.connect())
            .await
            .map_err(|_| format!("connecting timed out after {TARGET_TIMEOUT:?}"))?
            .map_err(|e| explain(&e))?;
        let (user, db_oid, superuser, read_all): (String, i64, bool, bool) = sqlx::query_as(
            "SELECT current_user::text, (SELECT oid::bigint FROM pg_database \
             WHERE datname = current_database()), r.rolsuper, \
             pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') \
             FROM pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(|e| explain(&e))?;
        if superuser && !self.warned_superuser {
            self.warned_superuser = true;
            tracing::warn!(
                target_database = %self.name,
                role = %user,
                "the observer connects as a superuser: give it a role with pg_read_all_stats only"
            );
        }
        if !superuser && !read_all {
            return Err(format!(
                "permission denied: role {user} sees only its own statements in \
                 pg_stat_statements and pg_stat_activity; GRANT pg_read_all_stats TO {user}"
            ));
        }
        let installed: Option<String> = sqlx::query_scalar(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'",
        )
        .fetch_optional(&mut conn)
        .await
        .map_err(|e| explain(&e))?;
        if installed.is_none() {
            return Err(
                "pg_stat_statements is not installed in the target database: CREATE \
                        EXTENSION pg_stat_statements (its library must be in \
                        shared_preload_libraries)"
                    .to_owned(),
            );
        }
        Ok(Connected { conn, db_oid })
    }

    /// Where the server log was left and which retires were already watched; `None` when no
    /// watched migration is retired (the log is not read).
    async fn log_state(
        &self,
        watched: &[Watched],
    ) -> Result<Option<LogState>, crate::store::StoreError> {
        if watched.iter().all(|w| w.retired_at.is_none()) {
            return Ok(None);
        }
        let store = &self.app.store;
        let status = store.observer_status(self.name.as_str()).await?;
        let mut known = HashSet::new();
        for w in watched {
            if let Some(at) = w.retired_at
                && store.retire_evidence(&w.key, at).await?.is_some()
            {
                known.insert((w.key.clone(), at));
            }
        }
        Ok(Some(LogState {
            file: status
                .as_ref()
                .map(|s| s.log_file.clone())
                .unwrap_or_default(),
            offset: status.as_ref().map_or(0, |s| s.log_offset),
            known,
        }))
    }

    /// Reads the statistics and resolves which statements touch a watched object.
    async fn read(
        &mut self,
        watched: &[Watched],
        log: Option<&LogState>,
    ) -> Result<PassRead, String> {
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let mut all: Vec<SchemaObject> = watched
            .iter()
            .flat_map(|w| w.objects.iter().map(|(o, _)| o.clone()))
            .collect();
        all.sort();
        all.dedup();
        if all != self.watched_objects {
            self.parsed.clear();
            self.watched_objects = all;
        }
        let Connected { conn, db_oid } = self.conn.as_mut().expect("connected above");
        let db_oid = *db_oid;
        let (dealloc, stats_reset, max): (i64, String, i64) = sqlx::query_as(
            "SELECT dealloc, stats_reset::text, \
             current_setting('pg_stat_statements.max')::bigint FROM pg_stat_statements_info",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| explain(&e))?;
        // Without the text: the target reads its query-text file only for statements new to us.
        let counters: Vec<(i64, bool, i64, i64, i64)> = sqlx::query_as(
            "SELECT userid::bigint, toplevel, queryid, calls, rows \
             FROM pg_stat_statements(false) WHERE dbid = $1 AND queryid IS NOT NULL",
        )
        .bind(db_oid)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| explain(&e))?;
        let present: HashSet<EntryId> = counters
            .iter()
            .map(|&(userid, toplevel, queryid, _, _)| EntryId {
                userid,
                toplevel,
                queryid,
            })
            .collect();
        self.parsed.retain(|id, _| present.contains(id));
        let unknown: Vec<i64> = present
            .iter()
            .filter(|id| !self.parsed.contains_key(id))
            .map(|id| id.queryid)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !unknown.is_empty() {
            let texts: Vec<(i64, bool, i64, Option<String>)> = sqlx::query_as(
                "SELECT userid::bigint, toplevel, queryid, query FROM pg_stat_statements(true) \
                 WHERE dbid = $1 AND queryid = ANY($2)",
            )
            .bind(db_oid)
            .bind(&unknown)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| explain(&e))?;
            for (userid, toplevel, queryid, text) in texts {
                let id = EntryId {
                    userid,
                    toplevel,
                    queryid,
                };
                let text = text.unwrap_or_default();
                if text == "<insufficient privilege>" {
                    return Err("permission denied: the observer's role cannot read other \
                                roles' statements; GRANT pg_read_all_stats to it"
                        .to_owned());
                }
                let refs = switchyard_sql::references(&text, &self.watched_objects);
                let text = if refs.is_empty() { String::new() } else { text };
                self.parsed.insert(id, (refs, text));
            }
        }
        let hits: Vec<(EntryId, i64, i64)> = counters
            .iter()
            .map(|&(userid, toplevel, queryid, calls, rows)| {
                (
                    EntryId {
                        userid,
                        toplevel,
                        queryid,
                    },
                    calls,
                    rows,
                )
            })
            .filter(|(id, _, _)| self.parsed.get(id).is_some_and(|(r, _)| !r.is_empty()))
            .collect();
        let roles: HashMap<i64, String> = if hits.is_empty() {
            HashMap::new()
        } else {
            let oids: Vec<i64> = hits.iter().map(|(id, _, _)| id.userid).collect();
            sqlx::query_as(
                "SELECT oid::bigint, rolname::text FROM pg_roles WHERE oid::bigint = ANY($1)",
            )
            .bind(&oids)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| explain(&e))?
            .into_iter()
            .collect()
        };
        self.relevant.clear();
        for (id, _, _) in &hits {
            self.relevant
                .entry(id.queryid)
                .or_default()
                .insert(id.userid);
        }
        // One look now, so a statement new since the last pass has its sessions too (an idle
        // session still shows the query id of its last statement).
        if !self.relevant.is_empty() {
            self.sample_activity().await?;
        }
        let mut relevant = Vec::with_capacity(hits.len());
        for (id, calls, rows) in hits {
            let (refs, text) = &self.parsed[&id];
            let migrations: Vec<(String, Vec<ObjectRef>)> = watched
                .iter()
                .filter_map(|w| {
                    let mine: Vec<ObjectRef> =
                        refs.iter()
                            .filter_map(|r| {
                                w.objects.iter().find(|(o, _)| *o == r.object).map(
                                    |(_, written)| ObjectRef {
                                        object: written.clone(),
                                        possible: match &r.certainty {
                                            Certainty::Definite => None,
                                            Certainty::Possible { why } => Some(why.clone()),
                                        },
                                    },
                                )
                            })
                            .collect();
                    (!mine.is_empty()).then(|| (w.key.clone(), mine))
                })
                .collect();
            relevant.push(Relevant {
                entry: id.key(),
                calls,
                rows,
                statement: text.clone(),
                role: roles
                    .get(&id.userid)
                    .cloned()
                    .unwrap_or_else(|| format!("oid {}", id.userid)),
                migrations,
                sessions: self
                    .sessions
                    .get(&(id.userid, id.queryid))
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default(),
            });
        }
        let (retires, log) = match log {
            None => (Vec::new(), None),
            Some(state) => self.read_retires(watched, state).await?,
        };
        Ok(PassRead {
            stats_reset,
            dealloc,
            max_statements: max,
            statements: counters.len() as u64,
            pass_ms: 0,
            watched: watched.iter().map(|w| w.key.clone()).collect(),
            relevant,
            retires,
            log,
        })
    }

    /// For each retired migration: whether the catalog shows its old names gone and retired
    /// names present, and the statements the server log shows failing on them since the last
    /// pass. A log that cannot be read is reported, not an error of the pass: usage evidence
    /// does not depend on it.
    async fn read_retires(
        &mut self,
        watched: &[Watched],
        state: &LogState,
    ) -> Result<
        (
            Vec<crate::store::RetireRead>,
            Option<Result<(String, i64), String>>,
        ),
        String,
    > {
        let Connected { conn, .. } = self.conn.as_mut().expect("connected");
        let database: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| explain(&e))?;
        let mut retires = Vec::new();
        for w in watched {
            let Some(retired_at) = w.retired_at else {
                continue;
            };
            let (in_effect, detail) = catalog_state(conn, &w.declared).await?;
            retires.push(crate::store::RetireRead {
                key: w.key.clone(),
                retired_at_ms: retired_at,
                in_effect,
                detail,
                failures: Vec::new(),
                restart_watch: false,
            });
        }
        let log = match read_log(conn, &state.file, state.offset).await {
            Ok(LogRead {
                lines,
                position,
                lost,
            }) => {
                if lost {
                    // A statement may have failed unseen: every retire's watch (and so its
                    // probation) starts again from this pass.
                    for r in &mut retires {
                        r.restart_watch = true;
                    }
                }
                for line in lines {
                    if line.error_severity != "ERROR"
                        || !matches!(line.state_code.as_str(), "42703" | "42P01")
                        || line.dbname != database
                    {
                        continue;
                    }
                    for (r, w) in retires
                        .iter_mut()
                        .zip(watched.iter().filter(|w| w.retired_at.is_some()))
                    {
                        if !state.known.contains(&(r.key.clone(), r.retired_at_ms)) {
                            continue;
                        }
                        if w.declared.iter().any(|o| names(&line.message, o)) {
                            r.failures.push(switchyard_domain::usage::FailedStatement {
                                seen_at_ms: 0,
                                logged_at: line.timestamp.clone(),
                                sqlstate: line.state_code.clone(),
                                message: line.message.clone(),
                                statement: line.statement.clone(),
                                session: Session {
                                    role: line.user.clone(),
                                    application_name: line.application_name.clone(),
                                    client_addr: line.remote_host.clone(),
                                },
                            });
                        }
                    }
                }
                Some(Ok(position))
            }
            Err(why) => Some(Err(why)),
        };
        Ok((retires, log))
    }

    /// Who is running (or last ran) a relevant statement: `pg_stat_activity` shows each
    /// session's current or, when idle, last query id.
    async fn sample_activity(&mut self) -> Result<(), String> {
        let Some(Connected { conn, db_oid }) = self.conn.as_mut() else {
            return Ok(());
        };
        let ids: Vec<i64> = self.relevant.keys().copied().collect();
        let rows: Vec<(i64, i64, String, String, String)> = sqlx::query_as(
            "SELECT usesysid::bigint, query_id, coalesce(usename::text, ''), application_name, \
             coalesce(host(client_addr), '') FROM pg_stat_activity \
             WHERE datid = $1 AND query_id = ANY($2) AND pid <> pg_backend_pid()",
        )
        .bind(*db_oid)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| explain(&e))?;
        for (userid, queryid, role, application_name, client_addr) in rows {
            if !self
                .relevant
                .get(&queryid)
                .is_some_and(|users| users.contains(&userid))
            {
                continue;
            }
            let seen = self.sessions.entry((userid, queryid)).or_default();
            if seen.len() < switchyard_domain::usage::MAX_SESSIONS {
                seen.insert(Session {
                    role,
                    application_name,
                    client_addr,
                });
            }
        }
        Ok(())
    }
}

/// A target's error in words a release manager can act on, never with the URL.
fn explain(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            let hint = match code.as_ref() {
                "28P01" | "28000" => {
                    " (authentication failed: check the user and password in the server's \
                     --target-database)"
                }
                "3D000" => " (the database in the target's URL does not exist)",
                "42501" => " (permission denied: the observer's role needs pg_read_all_stats)",
                "55000" => " (pg_stat_statements must be in the target's shared_preload_libraries)",
                _ => "",
            };
            format!("{} [SQLSTATE {code}]{hint}", db.message())
        }
        sqlx::Error::Io(io) => format!("cannot reach the target: {io}"),
        sqlx::Error::Tls(_) => "the TLS handshake with the target failed".to_owned(),
        sqlx::Error::PoolTimedOut => "timed out".to_owned(),
        other => format!("{other}"),
    }
}

/// Whether a refusal message (`column "username" does not exist`, `column u.username does not
/// exist`, `relation "legacy" does not exist`) names the old name of a retired object.
fn names(message: &str, object: &switchyard_domain::SchemaObject) -> bool {
    use switchyard_domain::SchemaObject as O;
    let message = message.to_lowercase();
    match object {
        O::Column { column, .. } => {
            let column = column.to_lowercase();
            message.starts_with("column ")
                && (message.contains(&format!("\"{column}\""))
                    || message.contains(&format!(".{column} does not exist")))
        }
        O::Table { schema, table } => {
            let table = table.to_lowercase();
            message.starts_with("relation ")
                && (message.contains(&format!("\"{table}\""))
                    || schema.as_ref().is_some_and(|s| {
                        message.contains(&format!("\"{}.{table}\"", s.to_lowercase()))
                    }))
        }
        O::Index { .. } => false,
    }
}

/// `"schema"."name"` as `to_regclass` reads it (names fold to lower case, as unquoted SQL does).
fn regclass(schema: &Option<String>, name: &str) -> String {
    let schema = schema.as_deref().unwrap_or("public").to_lowercase();
    format!("\"{schema}\".\"{}\"", name.to_lowercase())
}

/// Whether every column and table of the old shape is gone under its name and present under
/// its retired one, with what was found for each.
async fn catalog_state(
    conn: &mut PgConnection,
    objects: &[switchyard_domain::SchemaObject],
) -> Result<(bool, String), String> {
    use switchyard_domain::SchemaObject as O;
    let tables: Vec<(&Option<String>, &str)> = objects
        .iter()
        .filter_map(|o| match o {
            O::Table { schema, table } => Some((schema, table.as_str())),
            _ => None,
        })
        .collect();
    let mut all = true;
    let mut found = Vec::new();
    for o in objects {
        let Some(retired) = o.retired_name() else {
            continue;
        };
        let (old, new): (bool, bool) = match o {
            O::Column {
                schema,
                table,
                column,
            } => {
                if tables.contains(&(schema, table.as_str())) {
                    continue;
                }
                sqlx::query_as(
                    "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) \
                     AND attname = $2 AND NOT attisdropped), EXISTS (SELECT 1 FROM pg_attribute \
                     WHERE attrelid = to_regclass($1) AND attname = $3 AND NOT attisdropped)",
                )
                .bind(regclass(schema, table))
                .bind(column.to_lowercase())
                .bind(retired.to_lowercase())
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| explain(&e))?
            }
            O::Table { schema, table } => {
                sqlx::query_as("SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL")
                    .bind(regclass(schema, table))
                    .bind(regclass(schema, &retired))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| explain(&e))?
            }
            O::Index { .. } => continue,
        };
        let written = o.to_string();
        found.push(match (old, new) {
            (false, true) => format!("{written} is renamed to {retired}"),
            (true, _) => {
                all = false;
                format!("{written} still exists under its name")
            }
            (false, false) => {
                all = false;
                format!("{written} is gone and no {retired} exists (dropped?)")
            }
        });
    }
    Ok((all, found.join("; ")))
}

/// What one read of the server log found.
struct LogRead {
    lines: Vec<LogLine>,
    /// Where the next read starts.
    position: (String, i64),
    /// A file was removed before it was read to its end: failures in it are unknown.
    lost: bool,
}

/// The complete lines of the server's jsonlog from `file` at `offset` on (the rest of a rotated
/// file first), and where the next read starts. With no position yet, it starts at the current
/// end: what was logged before the observer looked is not a retire's.
async fn read_log(conn: &mut PgConnection, file: &str, offset: i64) -> Result<LogRead, String> {
    let current: Option<String> = sqlx::query_scalar("SELECT pg_current_logfile('jsonlog')")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| log_error(&e))?;
    let Some(current) = current else {
        return Err(
            "the target writes no jsonlog: set logging_collector = on and add jsonlog \
                    to log_destination (PostgreSQL 15 or later)"
                .to_owned(),
        );
    };
    if file.is_empty() {
        let end = file_size(conn, &current).await?.unwrap_or(0);
        return Ok(LogRead {
            lines: Vec::new(),
            position: (current, end),
            lost: false,
        });
    }
    let mut reads = Vec::new();
    if file != current {
        reads.push((file.to_owned(), offset));
        reads.push((current.clone(), 0));
    } else {
        reads.push((current.clone(), offset));
    }
    let mut lines = Vec::new();
    let mut position = (current.clone(), 0);
    let mut lost = false;
    for (path, from) in reads {
        let Some(len) = file_size(conn, &path).await? else {
            // Rotated away and removed before it was read to its end.
            lost = true;
            position = (current.clone(), 0);
            continue;
        };
        let want = (len - from).clamp(0, LOG_CHUNK);
        let bytes: Vec<u8> = if want == 0 {
            Vec::new()
        } else {
            sqlx::query_scalar("SELECT pg_read_binary_file($1, $2, $3, true)")
                .bind(&path)
                .bind(from)
                .bind(want)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| log_error(&e))?
        };
        // Only whole lines: a line still being written is read next time.
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for line in bytes[..whole].split(|b| *b == b'\n') {
            if let Ok(parsed) = serde_json::from_slice::<LogLine>(line) {
                lines.push(parsed);
            }
        }
        position = (path, from + whole as i64);
    }
    Ok(LogRead {
        lines,
        position,
        lost,
    })
}

/// A file's size in the target's data directory; `None` if it no longer exists.
async fn file_size(conn: &mut PgConnection, path: &str) -> Result<Option<i64>, String> {
    sqlx::query_scalar("SELECT (pg_stat_file($1, true)).size")
        .bind(path)
        .fetch_one(conn)
        .await
        .map_err(|e| log_error(&e))
}

fn log_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("42501") => format!(
            "permission denied reading the server log ({}): {LOG_GRANT}",
            db.message()
        ),
        other => format!("reading the server log: {}", explain(other)),
    }
}
