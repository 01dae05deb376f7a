//! The usage observer's tables: per target database the lease and the statistics' identity,
//! the baselines the next pass subtracts, and per migration the coverage and the evidence
//! (statements touching its old shape, per minute).

use super::{Lease, Store, StoreError, Tx};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use switchyard_domain::traffic::minute_of;
use switchyard_domain::usage::{FailedStatement, ObjectRef, RetireEvidence, Session, StatementUse};

/// What one pass read from a target.
#[derive(Debug, Clone, Default)]
pub struct PassRead {
    /// `pg_stat_statements_info.stats_reset`, as text.
    pub stats_reset: String,
    /// `pg_stat_statements_info.dealloc`: statements evicted since the reset.
    pub dealloc: i64,
    /// `pg_stat_statements.max`, for the message when statements were evicted.
    pub max_statements: i64,
    /// Statements of the target's database in `pg_stat_statements`.
    pub statements: u64,
    /// How long reading the target took.
    pub pass_ms: u64,
    /// The migrations whose objects this pass looked for.
    pub watched: Vec<String>,
    /// The statements that touch a watched object.
    pub relevant: Vec<Relevant>,
    /// What this pass found of each retired migration's shape.
    pub retires: Vec<RetireRead>,
    /// Where reading the server log got to (file, offset), or why it cannot be read; `None`
    /// when no migration on the target is retired (the log is not read).
    pub log: Option<Result<(String, i64), String>>,
}

/// A retired migration's shape as one pass found it.
#[derive(Debug, Clone)]
pub struct RetireRead {
    pub key: String,
    pub retired_at_ms: i64,
    pub in_effect: bool,
    pub detail: String,
    /// Statements that failed on it in the log read this pass.
    pub failures: Vec<FailedStatement>,
    /// Part of the log was lost unread: the watch (and the probation) starts again now.
    pub restart_watch: bool,
}

/// Failing statements kept per retire (all are counted).
const KEPT_FAILURES: i64 = 100;

/// A statement touching at least one watched object, as read in a pass.
#[derive(Debug, Clone)]
pub struct Relevant {
    /// Its identity on the target (role, top level or nested, query id).
    pub entry: String,
    pub calls: i64,
    pub rows: i64,
    pub statement: String,
    pub role: String,
    /// Per watched migration it touches, the objects.
    pub migrations: Vec<(String, Vec<ObjectRef>)>,
    /// Sessions seen with it since the last pass.
    pub sessions: Vec<Session>,
}

/// What a recorded pass changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassOutcome {
    /// Why the evidence has a gap at this pass (coverage restarts), if it has.
    pub gap: Option<String>,
    /// Calls added to the evidence.
    pub calls: u64,
}

/// A target's state as the last pass left it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetStatus {
    pub holder: String,
    pub lease_until_ms: i64,
    pub last_pass_ms: Option<i64>,
    /// Why observing fails, and since when.
    pub failing: Option<(String, i64)>,
    pub pass_ms: u64,
    pub statements: u64,
    pub stats_reset: String,
    /// Where reading the server log got to.
    pub log_file: String,
    pub log_offset: i64,
    /// Why the server log cannot be read ('' when it can).
    pub log_error: String,
}

#[derive(Serialize, Deserialize)]
struct StoredRef {
    object: String,
    possible: Option<String>,
}

#[derive(Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct StoredSession {
    role: String,
    application_name: String,
    client_addr: String,
}

fn refs_json(refs: &[ObjectRef]) -> String {
    let stored: Vec<StoredRef> = refs
        .iter()
        .map(|r| StoredRef {
            object: r.object.clone(),
            possible: r.possible.clone(),
        })
        .collect();
    serde_json::to_string(&stored).expect("references serialise")
}

fn sessions_json(sessions: &BTreeSet<StoredSession>) -> String {
    serde_json::to_string(sessions).expect("sessions serialise")
}

fn read_sessions(json: &str) -> BTreeSet<StoredSession> {
    serde_json::from_str(json).unwrap_or_default()
}

impl From<&Session> for StoredSession {
    fn from(s: &Session) -> Self {
        Self {
            role: s.role.clone(),
            application_name: s.application_name.clone(),
            client_addr: s.client_addr.clone(),
        }
    }
}

impl Store {
    /// Takes or renews the lease to observe `target` until `until_ms`; `false` while another
    /// replica holds it. Only the holder reads the target, so no call is counted twice.
    pub async fn observer_lease(
        &self,
        target: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        self.lease(Lease::ObserverTarget, target, holder, now_ms, until_ms)
            .await
    }

    /// Records a pass: the calls since the last one (per migration and minute), the new
    /// baselines, and a gap if the statistics were reset or statements evicted. `None` when
    /// `holder` has lost the lease meanwhile (nothing is written).
    pub async fn record_pass(
        &self,
        target: &str,
        holder: &str,
        now_ms: i64,
        pass: &PassRead,
    ) -> Result<Option<PassOutcome>, StoreError> {
        let for_update = self.backend.for_update();
        self.write(|tx| {
            Box::pin(async move {
                let row: Option<(String, String, i64, i64)> = sqlx::query_as(&format!(
                    "SELECT holder, stats_reset, dealloc, last_pass_ms FROM observer_targets \
                     WHERE target = $1{for_update}"
                ))
                .bind(target)
                .fetch_optional(&mut **tx)
                .await?;
                let Some((current_holder, stats_reset, dealloc, last_pass_ms)) = row else {
                    return Ok(None);
                };
                if current_holder != holder {
                    return Ok(None);
                }
                let first = last_pass_ms == 0;
                let mut gap = None;
                if !first && stats_reset != pass.stats_reset {
                    gap = Some(format!(
                        "pg_stat_statements was reset at {}",
                        pass.stats_reset
                    ));
                } else if !first && dealloc != pass.dealloc {
                    gap = Some(format!(
                        "pg_stat_statements evicted {} statement(s) between two passes (its \
                         max is {}): an evicted statement's calls are lost; raise \
                         pg_stat_statements.max",
                        (pass.dealloc - dealloc).max(0),
                        pass.max_statements
                    ));
                }
                let baselines: HashMap<String, (i64, i64)> =
                    sqlx::query_as::<_, (String, i64, i64)>(
                        "SELECT entry, calls, rows_seen FROM observer_baselines WHERE target = $1",
                    )
                    .bind(target)
                    .fetch_all(&mut **tx)
                    .await?
                    .into_iter()
                    .map(|(entry, calls, rows)| (entry, (calls, rows)))
                    .collect();
                let covered: HashSet<String> = sqlx::query_scalar(
                    "SELECT migration_key FROM usage_coverage WHERE target = $1",
                )
                .bind(target)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .collect();
                // A migration watched for the first time: its coverage starts now, and the
                // counters read now are its baseline.
                let mut starting = HashSet::new();
                for key in &pass.watched {
                    if !covered.contains(key) {
                        starting.insert(key.as_str());
                        sqlx::query(
                            "INSERT INTO usage_coverage (migration_key, target, since_ms, why) \
                             VALUES ($1, $2, $3, 'first observed') ON CONFLICT (migration_key) \
                             DO UPDATE SET target = excluded.target, since_ms = excluded.since_ms, \
                             why = excluded.why",
                        )
                        .bind(key)
                        .bind(target)
                        .bind(now_ms)
                        .execute(&mut **tx)
                        .await?;
                    }
                }
                let minute = minute_of(now_ms);
                let mut added = 0u64;
                for s in &pass.relevant {
                    let (calls, rows) = match baselines.get(&s.entry) {
                        Some(&(calls, rows)) if s.calls >= calls => {
                            (s.calls - calls, (s.rows - rows).max(0))
                        }
                        Some(_) => {
                            // Counters went back without a reset of the whole view: this
                            // statement alone was reset (or evicted and seen again).
                            gap.get_or_insert_with(|| {
                                "a statement's counters went back (pg_stat_statements_reset \
                                 of one statement, or an eviction)"
                                    .to_owned()
                            });
                            (s.calls, s.rows)
                        }
                        // Not touching a watched object at the last pass, so new since it
                        // (a migration watched only from now starts below).
                        None if first => (0, 0),
                        None => (s.calls, s.rows),
                    };
                    if calls <= 0 {
                        // No new calls, but sessions seen with it since: they ran its last
                        // calls, so they join its latest row.
                        if !s.sessions.is_empty() {
                            for (key, _) in &s.migrations {
                                add_sessions(tx, key, s).await?;
                            }
                        }
                        continue;
                    }
                    for (key, refs) in &s.migrations {
                        if starting.contains(key.as_str()) {
                            continue;
                        }
                        add_use(tx, key, minute, now_ms, s, refs, calls, rows).await?;
                        added += calls as u64;
                    }
                }
                sqlx::query("DELETE FROM observer_baselines WHERE target = $1")
                    .bind(target)
                    .execute(&mut **tx)
                    .await?;
                for s in &pass.relevant {
                    sqlx::query(
                        "INSERT INTO observer_baselines (target, entry, calls, rows_seen) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(target)
                    .bind(&s.entry)
                    .bind(s.calls)
                    .bind(s.rows)
                    .execute(&mut **tx)
                    .await?;
                }
                for r in &pass.retires {
                    record_retire(tx, now_ms, r).await?;
                }
                match &pass.log {
                    Some(Ok((file, offset))) => {
                        sqlx::query(
                            "UPDATE observer_targets SET log_file = $2, log_offset = $3, \
                             log_error = '' WHERE target = $1",
                        )
                        .bind(target)
                        .bind(file)
                        .bind(offset)
                        .execute(&mut **tx)
                        .await?;
                    }
                    Some(Err(why)) => {
                        sqlx::query("UPDATE observer_targets SET log_error = $2 WHERE target = $1")
                            .bind(target)
                            .bind(why)
                            .execute(&mut **tx)
                            .await?;
                    }
                    None => {}
                }
                if let Some(why) = &gap {
                    sqlx::query(
                        "UPDATE usage_coverage SET since_ms = $2, why = $3 WHERE target = $1",
                    )
                    .bind(target)
                    .bind(now_ms)
                    .bind(why)
                    .execute(&mut **tx)
                    .await?;
                }
                sqlx::query(
                    "UPDATE observer_targets SET stats_reset = $2, dealloc = $3, \
                     last_pass_ms = $4, error = '', error_since_ms = 0, pass_ms = $5, \
                     statements = $6 WHERE target = $1",
                )
                .bind(target)
                .bind(&pass.stats_reset)
                .bind(pass.dealloc)
                .bind(now_ms)
                .bind(pass.pass_ms as i64)
                .bind(pass.statements as i64)
                .execute(&mut **tx)
                .await?;
                Ok(Some(PassOutcome { gap, calls: added }))
            })
        })
        .await
    }

    /// Records why reading `target` failed (kept with the time it started failing).
    pub async fn record_observer_error(
        &self,
        target: &str,
        holder: &str,
        now_ms: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE observer_targets SET error = $3, error_since_ms = CASE \
                     WHEN error_since_ms = 0 THEN $4 ELSE error_since_ms END \
                     WHERE target = $1 AND holder = $2",
                )
                .bind(target)
                .bind(holder)
                .bind(reason)
                .bind(now_ms)
                .execute(&mut **tx)
                .await?;
                Ok(())
            })
        })
        .await
    }

    pub async fn observer_status(&self, target: &str) -> Result<Option<TargetStatus>, StoreError> {
        type Row = (
            String,
            i64,
            i64,
            String,
            i64,
            i64,
            i64,
            String,
            String,
            i64,
            String,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT holder, lease_until_ms, last_pass_ms, error, error_since_ms, pass_ms, \
             statements, stats_reset, log_file, log_offset, log_error FROM observer_targets \
             WHERE target = $1",
        )
        .bind(target)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(
                holder,
                lease_until_ms,
                last,
                error,
                error_since,
                pass_ms,
                statements,
                reset,
                log_file,
                log_offset,
                log_error,
            )| {
                TargetStatus {
                    holder,
                    lease_until_ms,
                    last_pass_ms: (last > 0).then_some(last),
                    failing: (!error.is_empty()).then_some((error, error_since)),
                    pass_ms: pass_ms.max(0) as u64,
                    statements: statements.max(0) as u64,
                    stats_reset: reset,
                    log_file,
                    log_offset,
                    log_error,
                }
            },
        ))
    }

    /// What the observer found of a migration's retire at `retired_at_ms`, if it has looked.
    pub async fn retire_evidence(
        &self,
        key: &str,
        retired_at_ms: i64,
    ) -> Result<Option<RetireEvidence>, StoreError> {
        let row: Option<(i64, i64, String, i64)> = sqlx::query_as(
            "SELECT watched_since_ms, in_effect, detail, checked_at_ms FROM retire_checks \
             WHERE migration_key = $1 AND retired_at_ms = $2",
        )
        .bind(key)
        .bind(retired_at_ms)
        .fetch_optional(&self.pool)
        .await?;
        let Some((watched_since_ms, in_effect, detail, checked_at_ms)) = row else {
            return Ok(None);
        };
        type Failure = (i64, String, String, String, String, String, String, String);
        let failures: Vec<Failure> = sqlx::query_as(
            "SELECT seen_at_ms, logged_at, sqlstate, message, statement, role, \
             application_name, client_addr FROM retire_failures WHERE migration_key = $1 \
             AND retired_at_ms = $2 ORDER BY seen_at_ms",
        )
        .bind(key)
        .bind(retired_at_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(RetireEvidence {
            retired_at_ms,
            watched_since_ms,
            in_effect: in_effect != 0,
            detail,
            checked_at_ms,
            failures: failures
                .into_iter()
                .map(
                    |(seen_at_ms, logged_at, sqlstate, message, statement, role, app, addr)| {
                        FailedStatement {
                            seen_at_ms,
                            logged_at,
                            sqlstate,
                            message,
                            statement,
                            session: Session {
                                role,
                                application_name: app,
                                client_addr: addr,
                            },
                        }
                    },
                )
                .collect(),
        }))
    }

    /// Since when a migration's objects have been watched without a gap, and why then.
    pub async fn usage_coverage(&self, key: &str) -> Result<Option<(i64, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT since_ms, why FROM usage_coverage WHERE migration_key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// A migration's evidence seen after `since_ms`, newest first, at most `limit` rows.
    pub async fn usage(
        &self,
        key: &str,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<StatementUse>, StoreError> {
        type Row = (i64, i64, String, String, String, String, i64, i64, String);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT minute_ms, last_seen_ms, entry, statement, role, objects, calls, rows_seen, \
             sessions FROM usage_statements WHERE migration_key = $1 AND last_seen_ms > $2 \
             ORDER BY last_seen_ms DESC, entry LIMIT $3",
        )
        .bind(key)
        .bind(since_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    minute_ms,
                    last_seen_ms,
                    entry,
                    statement,
                    role,
                    objects,
                    calls,
                    rows,
                    sessions,
                )| {
                    let objects: Vec<StoredRef> =
                        serde_json::from_str(&objects).unwrap_or_default();
                    StatementUse {
                        minute_ms,
                        last_seen_ms,
                        entry,
                        statement,
                        role,
                        objects: objects
                            .into_iter()
                            .map(|r| ObjectRef {
                                object: r.object,
                                possible: r.possible,
                            })
                            .collect(),
                        calls: calls.max(0) as u64,
                        rows: rows.max(0) as u64,
                        sessions: read_sessions(&sessions)
                            .into_iter()
                            .map(|s| Session {
                                role: s.role,
                                application_name: s.application_name,
                                client_addr: s.client_addr,
                            })
                            .collect(),
                    }
                },
            )
            .collect())
    }
}

/// Records what a pass found of a retire: the catalog check, and the failing statements (the
/// first [`KEPT_FAILURES`] kept). The first pass after a retire starts its watch.
async fn record_retire(tx: &mut Tx<'_>, now_ms: i64, r: &RetireRead) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO retire_checks (migration_key, retired_at_ms, watched_since_ms, in_effect, \
         detail, checked_at_ms, failures_total) VALUES ($1, $2, $3, $4, $5, $3, $6) \
         ON CONFLICT (migration_key, retired_at_ms) DO UPDATE SET in_effect = excluded.in_effect, \
         detail = excluded.detail, checked_at_ms = excluded.checked_at_ms, \
         failures_total = retire_checks.failures_total + excluded.failures_total, \
         watched_since_ms = CASE WHEN $7 THEN excluded.watched_since_ms \
         ELSE retire_checks.watched_since_ms END",
    )
    .bind(&r.key)
    .bind(r.retired_at_ms)
    .bind(now_ms)
    .bind(i64::from(r.in_effect))
    .bind(&r.detail)
    .bind(r.failures.len() as i64)
    .bind(r.restart_watch)
    .execute(&mut **tx)
    .await?;
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM retire_failures WHERE migration_key = $1 AND retired_at_ms = $2",
    )
    .bind(&r.key)
    .bind(r.retired_at_ms)
    .fetch_one(&mut **tx)
    .await?;
    for f in r
        .failures
        .iter()
        .take((KEPT_FAILURES - kept).max(0) as usize)
    {
        sqlx::query(
            "INSERT INTO retire_failures (migration_key, retired_at_ms, seen_at_ms, logged_at, \
             sqlstate, message, statement, role, application_name, client_addr) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&r.key)
        .bind(r.retired_at_ms)
        .bind(now_ms)
        .bind(&f.logged_at)
        .bind(&f.sqlstate)
        .bind(&f.message)
        .bind(&f.statement)
        .bind(&f.session.role)
        .bind(&f.session.application_name)
        .bind(&f.session.client_addr)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Merges the sessions of `s` into its latest row for the migration, if it has one.
async fn add_sessions(tx: &mut Tx<'_>, key: &str, s: &Relevant) -> Result<(), StoreError> {
    let latest: Option<(i64, String)> = sqlx::query_as(
        "SELECT minute_ms, sessions FROM usage_statements WHERE migration_key = $1 AND entry = $2 \
         ORDER BY minute_ms DESC LIMIT 1",
    )
    .bind(key)
    .bind(&s.entry)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((minute, json)) = latest else {
        return Ok(());
    };
    let mut sessions = read_sessions(&json);
    let before = sessions.len();
    merge_sessions(&mut sessions, &s.sessions);
    if sessions.len() != before {
        sqlx::query(
            "UPDATE usage_statements SET sessions = $4 WHERE migration_key = $1 \
             AND minute_ms = $2 AND entry = $3",
        )
        .bind(key)
        .bind(minute)
        .bind(&s.entry)
        .bind(sessions_json(&sessions))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn merge_sessions(into: &mut BTreeSet<StoredSession>, seen: &[Session]) {
    for session in seen {
        if into.len() >= switchyard_domain::usage::MAX_SESSIONS {
            break;
        }
        into.insert(StoredSession::from(session));
    }
}

/// Adds a statement's calls to its row for the migration and minute, merging the sessions seen.
#[allow(clippy::too_many_arguments)]
async fn add_use(
    tx: &mut Tx<'_>,
    key: &str,
    minute: i64,
    now_ms: i64,
    s: &Relevant,
    refs: &[ObjectRef],
    calls: i64,
    rows: i64,
) -> Result<(), StoreError> {
    let existing: Option<String> = sqlx::query_scalar(
        "SELECT sessions FROM usage_statements WHERE migration_key = $1 AND minute_ms = $2 \
         AND entry = $3",
    )
    .bind(key)
    .bind(minute)
    .bind(&s.entry)
    .fetch_optional(&mut **tx)
    .await?;
    let mut sessions = existing.as_deref().map(read_sessions).unwrap_or_default();
    merge_sessions(&mut sessions, &s.sessions);
    sqlx::query(
        "INSERT INTO usage_statements (migration_key, minute_ms, entry, last_seen_ms, statement, \
         role, objects, calls, rows_seen, sessions) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
         $10) ON CONFLICT (migration_key, minute_ms, entry) DO UPDATE SET \
         last_seen_ms = excluded.last_seen_ms, calls = usage_statements.calls + excluded.calls, \
         rows_seen = usage_statements.rows_seen + excluded.rows_seen, \
         sessions = excluded.sessions",
    )
    .bind(key)
    .bind(minute)
    .bind(&s.entry)
    .bind(now_ms)
    .bind(&s.statement)
    .bind(&s.role)
    .bind(refs_json(refs))
    .bind(calls)
    .bind(rows)
    .bind(sessions_json(&sessions))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
