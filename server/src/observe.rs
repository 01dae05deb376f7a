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
}

/// A watched migration: its key and old-shape objects.
struct Watched {
    key: String,
    objects: Vec<(SchemaObject, String)>,
}

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
        let started = Instant::now();
        let read = self.read(&watched).await;
        let store = &self.app.store;
        match read {
            Ok(mut read) => {
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
                tracing::warn!(target_database = %self.name, %reason, "observing the target database failed");
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

    async fn connect(&self) -> Result<Connected, String> {
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(|_| "the target's URL cannot be parsed".to_owned())?
            .application_name(APPLICATION_NAME)
            .options([("statement_timeout", "10s")])
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

    /// Reads the statistics and resolves which statements touch a watched object.
    async fn read(&mut self, watched: &[Watched]) -> Result<PassRead, String> {
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
        Ok(PassRead {
            stats_reset,
            dealloc,
            max_statements: max,
            statements: counters.len() as u64,
            pass_ms: 0,
            watched: watched.iter().map(|w| w.key.clone()).collect(),
            relevant,
        })
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
