//! The database's own evidence of who uses a migration's old shape: what the server's observer
//! saw in the target's `pg_stat_statements` (and, for who ran it, `pg_stat_activity`), and how
//! the gate reads it. Pure: the server passes the observations, the time and the window.

use crate::time::{format_minute, format_span};

/// A database session seen running (or having last run) a statement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Session {
    pub role: String,
    pub application_name: String,
    /// Empty for a local (Unix-socket) connection.
    pub client_addr: String,
}

impl std::fmt::Display for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let app = if self.application_name.is_empty() {
            "no application_name"
        } else {
            &self.application_name
        };
        write!(f, "{app} (role {}", self.role)?;
        if !self.client_addr.is_empty() {
            write!(f, ", from {}", self.client_addr)?;
        }
        write!(f, ")")
    }
}

/// One old-shape object a statement uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// The object's written form (`column:users.username`).
    pub object: String,
    /// `None`: the statement names it; `Some(why)`: it may use it (`SELECT *`, an unqualified
    /// name), and why.
    pub possible: Option<String>,
}

/// A statement's calls seen in one minute by one role: one row of evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementUse {
    /// The start of the minute of the observer's pass that saw the calls.
    pub minute_ms: i64,
    /// The pass that last added to this row.
    pub last_seen_ms: i64,
    /// The statement's identity on the target (database, role, query id).
    pub entry: String,
    /// Normalized text (constants replaced by `$n`).
    pub statement: String,
    pub role: String,
    pub objects: Vec<ObjectRef>,
    pub calls: u64,
    pub rows: u64,
    /// Sessions seen with it as their current or last statement (a sample: short statements
    /// between two samples are counted but their sessions may be missed).
    pub sessions: Vec<Session>,
}

/// Whether the observer can vouch for a migration's database, and since when.
// One is built per gate answer and none is stored, so the size of `Declared` costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The migration names no target database: only client telemetry speaks for the old shape.
    NotDeclared,
    Declared {
        target: String,
        /// Whether this server has the target in its configuration.
        configured: bool,
        /// The migration declares no old-shape object: there is nothing to look for.
        nothing_declared: bool,
        /// Since when the statistics have been read without a gap that could hide calls, and
        /// why it started then; `None`: never observed.
        covered_since: Option<(i64, String)>,
        /// The last pass that read the target.
        last_pass_ms: Option<i64>,
        /// Why the last attempt failed, and since when it has been failing.
        failing: Option<(String, i64)>,
        /// A pass older than this is stale evidence.
        stale_after_ms: i64,
        uses: Vec<StatementUse>,
        /// What the observer saw of the current retire, if it has looked since it.
        retire: Option<RetireEvidence>,
        /// Why the target's server log (where failing statements are) cannot be read.
        log_failing: Option<String>,
    },
}

/// What the observer saw of a retired old shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetireEvidence {
    /// The retire it belongs to (the migration's `retired_at_ms`).
    pub retired_at_ms: i64,
    /// The first pass that looked after the retire: failing statements count from there.
    pub watched_since_ms: i64,
    /// Whether the last catalog check found every old name gone and its retired name present.
    pub in_effect: bool,
    /// What the catalog check found, in words.
    pub detail: String,
    pub checked_at_ms: i64,
    /// Statements that failed on a retired object, from the target's server log.
    pub failures: Vec<FailedStatement>,
}

/// A statement the target refused because it names a retired object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedStatement {
    /// When the observer read it.
    pub seen_at_ms: i64,
    /// The server log's own timestamp.
    pub logged_at: String,
    pub sqlstate: String,
    pub message: String,
    pub statement: String,
    pub session: Session,
}

/// What the gate and `switchyard usage` say about one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Used during the soak window: the gate fails on it.
    Blocks,
    /// Every session seen with it is a Switchyard client's (the migrator's old side or a
    /// backfill runner) and it stopped before the window: expected.
    Expected,
    /// Outside the window, but run by a caller that is not a known client: it would block.
    Unexpected,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Blocks => "blocks",
            Verdict::Expected => "expected",
            Verdict::Unexpected => "unexpected",
        }
    }
}

/// A statement's rows added up, for display and for the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementSummary {
    pub entry: String,
    pub statement: String,
    pub role: String,
    pub objects: Vec<ObjectRef>,
    pub calls: u64,
    pub rows: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub sessions: Vec<Session>,
    /// Calls during the window (those the gate counts).
    pub calls_in_window: u64,
    pub verdict: Verdict,
}

/// How many sessions one statement keeps (a pool of hundreds would otherwise flood the list).
pub const MAX_SESSIONS: usize = 16;

/// Adds up `uses` per statement, newest first. `window_from`: where the gate's window starts
/// (rows seen after it block); `known_services`: the application names of Switchyard clients.
pub fn summarize(
    uses: &[StatementUse],
    window_from: Option<i64>,
    known_services: &[String],
) -> Vec<StatementSummary> {
    let mut by_entry: std::collections::BTreeMap<&str, StatementSummary> = Default::default();
    for u in uses {
        let s = by_entry
            .entry(u.entry.as_str())
            .or_insert_with(|| StatementSummary {
                entry: u.entry.clone(),
                statement: u.statement.clone(),
                role: u.role.clone(),
                objects: u.objects.clone(),
                calls: 0,
                rows: 0,
                first_seen_ms: u.minute_ms,
                last_seen_ms: u.last_seen_ms,
                sessions: Vec::new(),
                calls_in_window: 0,
                verdict: Verdict::Expected,
            });
        s.calls += u.calls;
        s.rows += u.rows;
        s.first_seen_ms = s.first_seen_ms.min(u.minute_ms);
        s.last_seen_ms = s.last_seen_ms.max(u.last_seen_ms);
        if window_from.is_some_and(|from| u.last_seen_ms > from) {
            s.calls_in_window += u.calls;
        }
        for session in &u.sessions {
            if s.sessions.len() < MAX_SESSIONS && !s.sessions.contains(session) {
                s.sessions.push(session.clone());
            }
        }
    }
    let mut out: Vec<StatementSummary> = by_entry.into_values().collect();
    for s in &mut out {
        s.sessions.sort();
        let known = !s.sessions.is_empty()
            && s.sessions
                .iter()
                .all(|x| known_services.contains(&x.application_name));
        s.verdict = if s.calls_in_window > 0 {
            Verdict::Blocks
        } else if known {
            Verdict::Expected
        } else {
            Verdict::Unexpected
        };
    }
    out.sort_by(|a, b| {
        b.last_seen_ms
            .cmp(&a.last_seen_ms)
            .then_with(|| a.entry.cmp(&b.entry))
    });
    out
}

/// How many statements a gate message names; the rest are counted.
const NAMED_STATEMENTS: usize = 5;

/// The gate's verdict on the database's evidence: `Ok(evidence)` or `Err((evidence, remedy))`.
/// `window_from`: where the soak's window starts (`None`: the soak has not started);
/// `soak_ms`: the soak period (a coverage gap restarts the wait for a full one).
pub fn judge(
    obs: &Observation,
    old_shape: &[String],
    window_from: Option<i64>,
    soak_ms: i64,
    now_ms: i64,
) -> Result<String, (String, String)> {
    let Observation::Declared {
        target,
        nothing_declared,
        covered_since,
        uses,
        ..
    } = obs
    else {
        return Ok(
            "the migration names no target database, so the database is not observed; \
                   only client telemetry speaks for the old shape (declare target_database and \
                   old_shape to have the database's own evidence)"
                .to_owned(),
        );
    };
    if *nothing_declared {
        return Err((
            format!("the migration names database {target} but declares no old-shape object"),
            "declare the objects the contract drops (old_shape, or `switchyard migration create \
             --contract-sql FILE`), so the observer knows what to look for"
                .to_owned(),
        ));
    }
    let last = readable(obs, now_ms)?;
    let Some(from) = window_from else {
        return Err((
            "the soak has not started".to_owned(),
            "ramp complete to 100%; the database's statements are checked over the soak period"
                .to_owned(),
        ));
    };
    let (since, why) = covered_since
        .clone()
        .unwrap_or((i64::MAX, "never observed".to_owned()));
    if since > from {
        let earliest = since.saturating_add(soak_ms);
        return Err((
            format!(
                "database {target} is observed without a gap only since {} ({why}), after the \
                 window starting {}",
                format_minute(since),
                format_minute(from)
            ),
            format!(
                "the database must be observed for a whole soak period; if nothing touches the \
                 old shape the check passes at the earliest {}",
                format_minute(earliest)
            ),
        ));
    }
    let objects = old_shape.join(", ");
    let blocking: Vec<StatementSummary> = summarize(uses, Some(from), &[])
        .into_iter()
        .filter(|s| s.verdict == Verdict::Blocks)
        .collect();
    if blocking.is_empty() {
        return Ok(format!(
            "database {target} saw no statement touching {objects} since {} (observed without a \
             gap since {}, last read {})",
            format_minute(from),
            format_minute(since),
            format_minute(last)
        ));
    }
    let mut named: Vec<String> = blocking
        .iter()
        .take(NAMED_STATEMENTS)
        .map(describe)
        .collect();
    if blocking.len() > NAMED_STATEMENTS {
        named.push(format!(
            "and {} more statement(s)",
            blocking.len() - NAMED_STATEMENTS
        ));
    }
    let last_use = blocking
        .iter()
        .map(|s| s.last_seen_ms)
        .max()
        .unwrap_or(now_ms);
    Err((
        format!(
            "database {target} ran {} statement(s) touching the old shape since {}: {}",
            blocking.len(),
            format_minute(from),
            named.join("; ")
        ),
        format!(
            "find these callers and move them to the new shape (`switchyard usage KEY` lists \
             each with its sessions); the check passes once the database sees none for a soak \
             period, at the earliest {}",
            format_minute(last_use.saturating_add(soak_ms))
        ),
    ))
}

/// Whether the observer vouches for the target now: configured here, not failing, and read
/// within the staleness bound. `Ok(last pass)`, or why not with what to do. Both checks stand
/// on it: neither passes without a readable target.
pub(crate) fn readable(obs: &Observation, now_ms: i64) -> Result<i64, (String, String)> {
    let Observation::Declared {
        target,
        configured,
        last_pass_ms,
        failing,
        stale_after_ms,
        ..
    } = obs
    else {
        return Err((
            "the migration names no target database".to_owned(),
            "declare target_database and old_shape".to_owned(),
        ));
    };
    if !configured {
        return Err((
            format!("this server is not configured to observe database {target}"),
            format!(
                "start the server with --target-database {target}=postgres://… (a read-only role \
                 with pg_read_all_stats)"
            ),
        ));
    }
    if let Some((reason, since)) = failing {
        let last = last_pass_ms.map_or("never read it".to_owned(), |t| {
            format!("last read it at {}", format_minute(t))
        });
        return Err((
            format!(
                "database {target} cannot be observed since {}: {reason}; the observer {last}",
                format_minute(*since)
            ),
            "fix what the reason names; the check never passes without the database's evidence"
                .to_owned(),
        ));
    }
    match last_pass_ms.filter(|t| now_ms - *t <= *stale_after_ms) {
        Some(last) => Ok(last),
        None => Err((
            match last_pass_ms {
                Some(t) => format!(
                    "database {target} was last observed at {} ({} ago)",
                    format_minute(*t),
                    format_span(now_ms - *t)
                ),
                None => format!("database {target} has not been observed yet"),
            },
            "the observer passes every --observe-interval; check that a server replica \
             configured with this target is running, and its log"
                .to_owned(),
        )),
    }
}

/// The retire probation's verdict: `Ok(evidence)` or `Err((evidence, remedy))`.
pub fn judge_retire(
    obs: &Observation,
    retired_at: i64,
    probation_ms: i64,
    now_ms: i64,
) -> Result<String, (String, String)> {
    let Observation::Declared {
        target,
        retire,
        log_failing,
        ..
    } = obs
    else {
        return Err((
            "a retire is checked in its database, and the migration names none".to_owned(),
            "retire before drop needs target_database and old_shape declared".to_owned(),
        ));
    };
    let restore = "restore the old shape (`switchyard restore-sql KEY`, then record `restored`), \
                   move the caller to the new shape, and retire again";
    readable(obs, now_ms)?;
    if let Some(reason) = log_failing {
        return Err((
            format!("statements failing on the retired shape cannot be seen: {reason}"),
            "make the failures visible: the target needs logging_collector = on and jsonlog in \
             log_destination, and the observer's role EXECUTE on pg_current_logfile(text), \
             pg_stat_file(text, boolean) and pg_read_binary_file(text, bigint, bigint, boolean)"
                .to_owned(),
        ));
    }
    let Some(r) = retire.as_ref().filter(|r| r.retired_at_ms == retired_at) else {
        return Err((
            format!(
                "the observer has not looked at database {target} since the retire at {}",
                format_minute(retired_at)
            ),
            "wait for the next observer pass (--observe-interval)".to_owned(),
        ));
    };
    if !r.in_effect {
        return Err((
            format!(
                "database {target} does not show the old shape retired: {}",
                r.detail
            ),
            "apply the retire SQL (`switchyard retire-sql KEY`), or record `restored` if it was \
             undone"
                .to_owned(),
        ));
    }
    if !r.failures.is_empty() {
        let named: Vec<String> = r
            .failures
            .iter()
            .take(NAMED_STATEMENTS)
            .map(|f| {
                format!(
                    "`{}` failed at {} ({} {}) in {}",
                    shorten(&f.statement, 200),
                    f.logged_at,
                    f.sqlstate,
                    f.message,
                    f.session
                )
            })
            .collect();
        return Err((
            format!(
                "{} statement(s) failed on the retired shape since {}: {}",
                r.failures.len(),
                format_minute(r.watched_since_ms),
                named.join("; ")
            ),
            restore.to_owned(),
        ));
    }
    // Failures are seen from the first pass after the retire: the probation counts from there
    // if the observer was late.
    let from = retired_at.max(r.watched_since_ms);
    let ends = from.saturating_add(probation_ms);
    if now_ms < ends {
        return Err((
            format!(
                "retired since {} ({} of a {} probation); {}; no statement has failed on it",
                format_minute(from),
                format_span(now_ms - from),
                format_span(probation_ms),
                r.detail
            ),
            format!(
                "probation ends {}, in {}",
                format_minute(ends),
                format_span(ends - now_ms)
            ),
        ));
    }
    Ok(format!(
        "retired since {} ({}, probation {}); {}; no statement failed on it",
        format_minute(from),
        format_span(now_ms - from),
        format_span(probation_ms),
        r.detail
    ))
}

/// `SELECT username FROM users WHERE id = $1` (column:users.username) 1204 call(s), last seen
/// 12:40Z, by report-cron (role app, from 10.0.0.5)
fn describe(s: &StatementSummary) -> String {
    let objects: Vec<String> = s
        .objects
        .iter()
        .map(|o| match &o.possible {
            None => o.object.clone(),
            Some(why) => format!("possibly {}: {why}", o.object),
        })
        .collect();
    let who = if s.sessions.is_empty() {
        format!("role {}, no session seen running it", s.role)
    } else {
        s.sessions
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "`{}` ({}) {} call(s), last seen {}, by {who}",
        shorten(&s.statement, 200),
        objects.join("; "),
        s.calls_in_window,
        format_minute(s.last_seen_ms)
    )
}

pub(crate) fn shorten(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const T0: i64 = 1_796_119_200_000;

    fn session(app: &str) -> Session {
        Session {
            role: "app".into(),
            application_name: app.into(),
            client_addr: "10.0.0.5".into(),
        }
    }

    fn used(at: i64, entry: &str, calls: u64, sessions: Vec<Session>) -> StatementUse {
        StatementUse {
            minute_ms: at - at.rem_euclid(MIN),
            last_seen_ms: at,
            entry: entry.into(),
            statement: format!("SELECT username FROM users WHERE id = $1 -- {entry}"),
            role: "app".into(),
            objects: vec![ObjectRef {
                object: "column:users.username".into(),
                possible: None,
            }],
            calls,
            rows: calls,
            sessions,
        }
    }

    fn observed(covered_since: i64, last_pass: i64, uses: Vec<StatementUse>) -> Observation {
        Observation::Declared {
            target: "main".into(),
            configured: true,
            nothing_declared: false,
            covered_since: Some((covered_since, "first observed".into())),
            last_pass_ms: Some(last_pass),
            failing: None,
            stale_after_ms: 3 * MIN,
            uses,
            retire: None,
            log_failing: None,
        }
    }

    fn shape() -> Vec<String> {
        vec!["column:users.username".into()]
    }

    #[test]
    fn a_use_during_the_window_fails_naming_statement_caller_and_calls() {
        let from = T0 + 10 * MIN;
        let obs = observed(
            T0,
            T0 + 20 * MIN,
            vec![
                used(T0 + 5 * MIN, "q1", 40, vec![session("orders-svc")]),
                used(T0 + 15 * MIN, "q2", 7, vec![session("report-cron")]),
                used(T0 + 16 * MIN, "q2", 5, vec![]),
            ],
        );
        let (evidence, remedy) = judge(&obs, &shape(), Some(from), 60 * MIN, T0 + 20 * MIN)
            .expect_err("a use in the window");
        assert!(evidence.contains("1 statement(s)"), "{evidence}");
        assert!(evidence.contains("q2"), "{evidence}");
        assert!(evidence.contains("12 call(s)"), "{evidence}");
        assert!(
            evidence.contains("report-cron (role app, from 10.0.0.5)"),
            "{evidence}"
        );
        assert!(!evidence.contains("q1"), "before the window: {evidence}");
        assert!(remedy.contains("switchyard usage"), "{remedy}");
        assert!(
            remedy.contains(&format_minute(T0 + 16 * MIN + 60 * MIN)),
            "{remedy}"
        );
    }

    #[test]
    fn no_use_in_the_window_passes_only_with_coverage_from_its_start() {
        let from = T0 + 10 * MIN;
        let early = vec![used(T0 + 5 * MIN, "q1", 40, vec![session("orders-svc")])];
        let ok = judge(
            &observed(T0, T0 + 20 * MIN, early.clone()),
            &shape(),
            Some(from),
            60 * MIN,
            T0 + 20 * MIN,
        )
        .expect("covered, nothing in the window");
        assert!(
            ok.contains("saw no statement touching column:users.username"),
            "{ok}"
        );

        // Statistics reset after the window started: no verdict from a gap.
        let (evidence, remedy) = judge(
            &observed(T0 + 12 * MIN, T0 + 20 * MIN, early),
            &shape(),
            Some(from),
            60 * MIN,
            T0 + 20 * MIN,
        )
        .unwrap_err();
        assert!(evidence.contains("only since"), "{evidence}");
        assert!(remedy.contains(&format_minute(T0 + 72 * MIN)), "{remedy}");
    }

    #[test]
    fn no_data_never_passes() {
        let from = Some(T0);
        let now = T0 + 20 * MIN;
        let failing = Observation::Declared {
            target: "main".into(),
            configured: true,
            nothing_declared: false,
            covered_since: Some((T0 - MIN, "first observed".into())),
            last_pass_ms: Some(T0 + 5 * MIN),
            failing: Some(("pg_stat_statements is not installed".into(), T0 + 6 * MIN)),
            stale_after_ms: 3 * MIN,
            uses: vec![],
            retire: None,
            log_failing: None,
        };
        let (evidence, _) = judge(&failing, &shape(), from, MIN, now).unwrap_err();
        assert!(
            evidence.contains("pg_stat_statements is not installed"),
            "{evidence}"
        );

        // Stale: the last pass is too old, even with no error recorded.
        let stale = observed(T0 - MIN, T0 + 5 * MIN, vec![]);
        let (evidence, _) = judge(&stale, &shape(), from, MIN, now).unwrap_err();
        assert!(evidence.contains("last observed"), "{evidence}");

        let mut unconfigured = stale;
        if let Observation::Declared { configured, .. } = &mut unconfigured {
            *configured = false;
        }
        let (_, remedy) = judge(&unconfigured, &shape(), from, MIN, now).unwrap_err();
        assert!(remedy.contains("--target-database main="), "{remedy}");

        // Never observed at all.
        let never = Observation::Declared {
            target: "main".into(),
            configured: true,
            nothing_declared: false,
            covered_since: None,
            last_pass_ms: None,
            failing: None,
            stale_after_ms: 3 * MIN,
            uses: vec![],
            retire: None,
            log_failing: None,
        };
        assert!(judge(&never, &shape(), from, MIN, now).is_err());
        // An undeclared migration is not the database's to judge.
        assert!(judge(&Observation::NotDeclared, &[], from, MIN, now).is_ok());
    }

    fn retired(evidence: Option<RetireEvidence>, log_failing: Option<&str>) -> Observation {
        let mut obs = observed(T0, T0 + 20 * MIN, vec![]);
        if let Observation::Declared {
            retire,
            log_failing: log,
            ..
        } = &mut obs
        {
            *retire = evidence;
            *log = log_failing.map(str::to_owned);
        }
        obs
    }

    fn evidence(in_effect: bool, failures: Vec<FailedStatement>) -> RetireEvidence {
        RetireEvidence {
            retired_at_ms: T0,
            watched_since_ms: T0 + MIN,
            in_effect,
            detail: "column:users.username is renamed to username__retired".into(),
            checked_at_ms: T0 + 19 * MIN,
            failures,
        }
    }

    #[test]
    fn a_retire_passes_only_in_effect_with_nothing_failing_after_its_probation() {
        let now = T0 + 20 * MIN;
        let probation = 10 * MIN;
        // Counted from the first pass after the retire; passes at the end, not before.
        let ok = judge_retire(
            &retired(Some(evidence(true, vec![])), None),
            T0,
            probation,
            now,
        );
        assert!(ok.unwrap().contains("no statement failed on it"));
        let (early, remedy) = judge_retire(
            &retired(Some(evidence(true, vec![])), None),
            T0,
            probation,
            T0 + 10 * MIN,
        )
        .unwrap_err();
        assert!(early.contains("of a 10m probation"), "{early}");
        assert!(remedy.contains(&format_minute(T0 + 11 * MIN)), "{remedy}");

        let failed = FailedStatement {
            seen_at_ms: T0 + 5 * MIN,
            logged_at: "2026-12-01 10:05:00 UTC".into(),
            sqlstate: "42703".into(),
            message: "column \"username\" does not exist".into(),
            statement: "SELECT username FROM users".into(),
            session: session("report-cron"),
        };
        let (e, remedy) = judge_retire(
            &retired(Some(evidence(true, vec![failed])), None),
            T0,
            probation,
            now,
        )
        .unwrap_err();
        assert!(
            e.contains("1 statement(s) failed") && e.contains("report-cron"),
            "{e}"
        );
        assert!(remedy.contains("restore"), "{remedy}");

        let (e, _) = judge_retire(
            &retired(Some(evidence(false, vec![])), None),
            T0,
            probation,
            now,
        )
        .unwrap_err();
        assert!(e.contains("does not show the old shape retired"), "{e}");
        // No evidence of failures (log unreadable) or none since this retire: never a pass.
        let (e, remedy) = judge_retire(
            &retired(Some(evidence(true, vec![])), Some("permission denied")),
            T0,
            probation,
            now,
        )
        .unwrap_err();
        assert!(e.contains("cannot be seen: permission denied"), "{e}");
        assert!(remedy.contains("pg_read_binary_file"), "{remedy}");
        assert!(judge_retire(&retired(None, None), T0, probation, now).is_err());
        assert!(
            judge_retire(
                &retired(Some(evidence(true, vec![])), None),
                T0 - 1,
                probation,
                now
            )
            .is_err(),
            "evidence of an earlier retire does not count"
        );
    }

    #[test]
    fn summaries_tell_expected_callers_from_unexpected_ones() {
        let uses = vec![
            used(T0, "migrator", 10, vec![session("orders-svc")]),
            used(T0 + MIN, "cron", 3, vec![session("report-cron")]),
            used(T0 + 2 * MIN, "unseen", 1, vec![]),
            used(T0 + 2 * MIN, "migrator", 5, vec![session("orders-svc")]),
        ];
        let known = vec!["orders-svc".to_owned()];
        let s = summarize(&uses, None, &known);
        let verdict = |entry: &str| s.iter().find(|x| x.entry == entry).unwrap().verdict;
        assert_eq!(verdict("migrator"), Verdict::Expected);
        assert_eq!(verdict("cron"), Verdict::Unexpected);
        assert_eq!(
            verdict("unseen"),
            Verdict::Unexpected,
            "no session seen: unknown"
        );
        let m = s.iter().find(|x| x.entry == "migrator").unwrap();
        assert_eq!(
            (m.calls, m.first_seen_ms, m.last_seen_ms),
            (15, T0, T0 + 2 * MIN)
        );
        // In the window, even a known client's use blocks: at complete its migrator no longer
        // touches the old shape, so something else in it does.
        let s = summarize(&uses, Some(T0 + MIN + 1), &known);
        assert_eq!(
            s.iter().find(|x| x.entry == "migrator").unwrap().verdict,
            Verdict::Blocks
        );
    }
}
