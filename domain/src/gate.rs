//! The contract gate (rule 7): may the old shape be dropped now? Pure: the server passes the
//! migration, the live fleet, the migration's reported traffic per minute, what the observer saw
//! in its database, the time, and its policy; the answer lists every check with its evidence and
//! what would make it pass.

use crate::migration::BackfillStatus;
use crate::time::{format_minute, format_second, format_span};
use crate::traffic::{TrafficCounts, minute_of};
use crate::usage::Observation;
use crate::{Fleet, Migration, Stage};

/// Server-wide gate settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatePolicy {
    /// No migration soaks for less than this, whatever its own setting.
    pub min_soak_seconds: u64,
    /// The largest share of new-shape operations that may fail during the soak (0.001 = 0.1%).
    pub max_new_error_ratio: f64,
}

impl Default for GatePolicy {
    fn default() -> Self {
        Self {
            min_soak_seconds: 0,
            max_new_error_ratio: 0.001,
        }
    }
}

impl GatePolicy {
    /// The soak period this policy applies to `m`: its own, raised to the server's floor.
    pub fn soak_ms(&self, m: &Migration) -> i64 {
        (m.soak_seconds.max(self.min_soak_seconds) as i64).saturating_mul(1000)
    }
}

/// The database's evidence is counted per minute, each observer pass a minute or so after the
/// statements it counts; counting from this long after the soak starts keeps statements from
/// just before it (the migrator's own, before the switch) out of the database check's window.
/// Client telemetry needs no such grace: its checks start from each instance's reports (see
/// [`Reports`]).
pub const REPORT_GRACE_MS: i64 = 2 * 60_000;

/// What the live client instances reported, by the server's clock: the evidence the soak's
/// traffic checks need before they can say anything.
///
/// A client reports every few seconds (an empty report when it did nothing), and each report
/// covers the operations since its previous one. So an instance whose latest report's interval
/// began after `complete` reached 100% has told the server everything it did since; until every
/// live instance has, the traffic checks fail with "no reports yet" rather than pass on no data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reports {
    pub instances: Vec<InstanceReport>,
    /// For the migration judged: each instance's latest report with old-shape operations.
    pub old_use: Vec<OldUse>,
}

/// One instance's last two reports (server receipt times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceReport {
    pub service: String,
    pub instance_id: String,
    pub reported_ms: Option<i64>,
    pub previous_reported_ms: Option<i64>,
}

/// An instance's latest report of old-shape operations for a migration: they happened between
/// `since_ms` (its previous report, or the start of the earliest minute they were counted in,
/// whichever is later) and `until_ms` (the report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldUse {
    pub service: String,
    pub instance_id: String,
    pub since_ms: i64,
    pub until_ms: i64,
    pub reads: u64,
    pub writes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckId {
    Soak,
    ClientsApplied,
    NoOldShapeTraffic,
    NoShadowMismatch,
    NewShapeErrors,
    Backfill,
    /// The target database saw no statement touching the old shape during the soak.
    DatabaseUsage,
    /// Retire before drop: the old shape retired for its probation, nothing failing on it.
    RetireProbation,
    /// The migration is already contracted (the only check then).
    Contracted,
}

impl CheckId {
    /// Every check `evaluate` runs, in its order (`Contracted` stands alone).
    pub const ALL: [CheckId; 8] = [
        CheckId::Soak,
        CheckId::ClientsApplied,
        CheckId::NoOldShapeTraffic,
        CheckId::NoShadowMismatch,
        CheckId::NewShapeErrors,
        CheckId::Backfill,
        CheckId::DatabaseUsage,
        CheckId::RetireProbation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::Soak => "soak",
            CheckId::ClientsApplied => "clients_applied",
            CheckId::NoOldShapeTraffic => "no_old_shape_traffic",
            CheckId::NoShadowMismatch => "no_shadow_mismatch",
            CheckId::NewShapeErrors => "new_shape_errors",
            CheckId::Backfill => "backfill",
            CheckId::DatabaseUsage => "database_usage",
            CheckId::RetireProbation => "retire_probation",
            CheckId::Contracted => "contracted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub id: CheckId,
    pub passed: bool,
    /// What was found, in plain words.
    pub evidence: String,
    /// What would make it pass (empty when it passes).
    pub remedy: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateReport {
    pub key: String,
    pub passed: bool,
    pub checks: Vec<Check>,
    /// When the soak period ends (or ended), if it has started.
    pub soak_ends_at_ms: Option<i64>,
    pub evaluated_at_ms: i64,
}

impl GateReport {
    /// The failing checks' remedies, for a refusal message.
    pub fn failures(&self) -> String {
        self.failing_remedies(None)
    }

    /// As [`GateReport::failures`], leaving out one check (`retired` needs every check but the
    /// retire probation, which only starts with it).
    pub fn failures_but(&self, but: CheckId) -> String {
        self.failing_remedies(Some(but))
    }

    fn failing_remedies(&self, but: Option<CheckId>) -> String {
        self.checks
            .iter()
            .filter(|c| !c.passed && Some(c.id) != but)
            .map(|c| format!("{}: {}", c.id.as_str(), c.remedy))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Check {
    fn pass(id: CheckId, evidence: String) -> Self {
        Self {
            id,
            passed: true,
            evidence,
            remedy: String::new(),
        }
    }

    fn fail(id: CheckId, evidence: String, remedy: String) -> Self {
        Self {
            id,
            passed: false,
            evidence,
            remedy,
        }
    }
}

/// What every check reads: the migration, the fleet, its traffic, the time, and the soak
/// derived from them.
struct Inputs<'a> {
    m: &'a Migration,
    fleet: &'a Fleet,
    traffic: &'a [(i64, TrafficCounts)],
    reports: &'a Reports,
    now_ms: i64,
    soak_ms: i64,
    /// `complete` at 100%: the state the gate is about.
    at_full: bool,
    /// When the current soak started, while at `complete` 100%.
    soak_start: Option<i64>,
}

impl Inputs<'_> {
    /// Reported traffic from the minute holding `from_ms` to `to_ms`.
    fn sum(&self, from_ms: i64, to_ms: i64) -> TrafficCounts {
        let mut total = TrafficCounts::default();
        for (minute, counts) in self.traffic {
            if *minute >= minute_of(from_ms) && *minute <= to_ms {
                total.add(counts);
            }
        }
        total
    }

    /// Where the database's window starts: the soak's start plus the observer's grace, and no
    /// earlier than one soak period ago.
    fn database_from(&self, start: i64) -> i64 {
        (start + REPORT_GRACE_MS).max(self.now_ms - self.soak_ms)
    }

    /// Live instances whose reports do not yet cover everything since `start` (their latest
    /// report's interval began before it, or they never reported), by service and id.
    fn not_reported_since(&self, start: i64) -> Vec<String> {
        self.fleet
            .live
            .iter()
            .filter(|live| {
                !self.reports.instances.iter().any(|r| {
                    r.service == live.service
                        && r.instance_id == live.instance_id
                        && r.previous_reported_ms.is_some_and(|p| p >= start)
                })
            })
            .map(|live| format!("{}/{}", live.service, live.instance_id))
            .collect()
    }

    /// The "no reports yet" failure of a traffic check, or `None` when every live instance has
    /// reported since `start`. With no live instance there is nobody to wait for: the expected
    /// services (the clients_applied check) say who must be running, and a migration of a
    /// database used by non-Switchyard callers has the database's own evidence.
    fn no_reports_yet(&self, id: CheckId, start: i64) -> Option<Check> {
        let waiting = self.not_reported_since(start);
        let live = self.fleet.live.len();
        let evidence = if waiting.is_empty() {
            return None;
        } else {
            format!(
                "no reports yet: {} of {live} live instance(s) have not reported since complete \
                 reached 100% at {} ({}{})",
                waiting.len(),
                format_second(start),
                waiting[..waiting.len().min(3)].join(", "),
                if waiting.len() > 3 { ", …" } else { "" }
            )
        };
        Some(Check::fail(
            id,
            evidence,
            "wait for the instances' next telemetry reports (a running client reports every few \
             seconds, idle or not); one that cannot report blocks the gate until it is fixed or \
             stops and its client TTL passes"
                .to_owned(),
        ))
    }
}

/// Where the soak's window for the database's evidence starts for `m` now; `None` while the
/// soak has not started.
pub fn window_from(m: &Migration, now_ms: i64, policy: &GatePolicy) -> Option<i64> {
    let at_full = m.stage == Stage::Complete && m.rollout_bp.is_full();
    let soak_ms = policy.soak_ms(m);
    m.soak_started_at_ms
        .filter(|_| at_full)
        .map(|start| (start + REPORT_GRACE_MS).max(now_ms - soak_ms))
}

/// Evaluates every check. `traffic` is the migration's reported counts per minute (start of
/// minute, counts), any order.
pub fn evaluate(
    m: &Migration,
    fleet: &Fleet,
    traffic: &[(i64, TrafficCounts)],
    reports: &Reports,
    database: &Observation,
    now_ms: i64,
    policy: &GatePolicy,
) -> GateReport {
    if m.stage == Stage::Contracted {
        return GateReport {
            key: m.key.to_string(),
            passed: true,
            checks: vec![Check::pass(
                CheckId::Contracted,
                "the migration is contracted: the old shape was dropped".to_owned(),
            )],
            soak_ends_at_ms: None,
            evaluated_at_ms: now_ms,
        };
    }
    let at_full = m.stage == Stage::Complete && m.rollout_bp.is_full();
    let inputs = Inputs {
        m,
        fleet,
        traffic,
        reports,
        now_ms,
        soak_ms: policy.soak_ms(m),
        at_full,
        soak_start: m.soak_started_at_ms.filter(|_| at_full),
    };
    let checks = vec![
        soak(&inputs),
        clients_applied(&inputs),
        no_old_shape_traffic(&inputs),
        no_shadow_mismatch(&inputs),
        new_shape_errors(&inputs, policy.max_new_error_ratio),
        backfill(m),
        database_usage(&inputs, database),
        retire_probation(&inputs, database),
    ];
    GateReport {
        key: m.key.to_string(),
        passed: checks.iter().all(|c| c.passed),
        checks,
        soak_ends_at_ms: inputs.soak_start.map(|s| s.saturating_add(inputs.soak_ms)),
        evaluated_at_ms: now_ms,
    }
}

/// 1. `complete` at 100% for the whole soak period.
fn soak(i: &Inputs) -> Check {
    let Some(start) = i.soak_start else {
        return Check::fail(
            CheckId::Soak,
            format!(
                "the front is at {} {}, not complete at 100%",
                i.m.stage, i.m.rollout_bp
            ),
            format!(
                "ramp complete to 100%; the soak ({}) starts then, and any step back restarts it",
                format_span(i.soak_ms)
            ),
        );
    };
    let ends = start.saturating_add(i.soak_ms);
    if i.now_ms >= ends {
        Check::pass(
            CheckId::Soak,
            format!(
                "complete at 100% since {} ({}), soak {}",
                format_minute(start),
                format_span(i.now_ms - start),
                format_span(i.soak_ms)
            ),
        )
    } else {
        Check::fail(
            CheckId::Soak,
            format!(
                "complete at 100% since {} ({} of a {} soak)",
                format_minute(start),
                format_span(i.now_ms - start),
                format_span(i.soak_ms)
            ),
            format!(
                "soak ends {}, in {}",
                format_minute(ends),
                format_span(ends - i.now_ms)
            ),
        )
    }
}

/// 2. Every live instance applied that state; every expected service is live.
fn clients_applied(i: &Inputs) -> Check {
    let m = i.m;
    let Some(&since) = m.full_since.get(&Stage::Complete).filter(|_| i.at_full) else {
        return Check::fail(
            CheckId::ClientsApplied,
            "complete is not at 100%, so there is no state to apply yet".to_owned(),
            "ramp complete to 100% and let clients acknowledge it".to_owned(),
        );
    };
    let waiting = i.fleet.not_applied(since, &m.expected_services);
    if !waiting.is_empty() {
        return Check::fail(
            CheckId::ClientsApplied,
            waiting.join("; "),
            format!(
                "every live instance must apply version {since} (complete at 100%) and \
                 every expected service must have a live instance"
            ),
        );
    }
    let expected = if m.expected_services.is_empty() {
        String::new()
    } else {
        format!(
            "; expected services live: {}",
            m.expected_services.join(", ")
        )
    };
    Check::pass(
        CheckId::ClientsApplied,
        format!(
            "{} live instance(s) applied version {since} or later{expected}",
            i.fleet.live.len()
        ),
    )
}

/// 3. No old-shape reads or writes during the soak period (its last `soak` stretch), with
///    every live instance's reports covering all of it.
fn no_old_shape_traffic(i: &Inputs) -> Check {
    let Some(start) = i.soak_start else {
        return Check::fail(
            CheckId::NoOldShapeTraffic,
            "the soak has not started".to_owned(),
            "ramp complete to 100%; old-shape traffic is checked over the soak period".to_owned(),
        );
    };
    let from = start.max(i.now_ms - i.soak_ms);
    // Old-shape operations reported in an interval wholly after the switch (an interval that
    // began before it may hold operations from before it), and not aged out of the soak.
    let mut blocking: Vec<&OldUse> = i
        .reports
        .old_use
        .iter()
        .filter(|u| u.since_ms >= start && u.until_ms > i.now_ms - i.soak_ms)
        .collect();
    blocking.sort_by_key(|u| std::cmp::Reverse(u.until_ms));
    if let Some(last) = blocking.first() {
        let key = &i.m.key;
        let others = blocking.len() - 1;
        return Check::fail(
            CheckId::NoOldShapeTraffic,
            format!(
                "{}/{} reported {} old-shape read(s) and {} write(s) between {} and {}{}",
                last.service,
                last.instance_id,
                last.reads,
                last.writes,
                format_second(last.since_ms),
                format_second(last.until_ms),
                if others > 0 {
                    format!(", and {others} other instance(s) used the old shape too")
                } else {
                    String::new()
                }
            ),
            format!(
                "find what still uses the old shape (`switchyard traffic {key}` and `switchyard \
                 instances --migration {key}`); the check passes once none is reported for the \
                 soak period, at the earliest {}",
                format_second(last.until_ms + i.soak_ms)
            ),
        );
    }
    if let Some(waiting) = i.no_reports_yet(CheckId::NoOldShapeTraffic, start) {
        return waiting;
    }
    Check::pass(
        CheckId::NoOldShapeTraffic,
        if i.fleet.live.is_empty() {
            format!(
                "no old-shape read or write reported since {}; no live client instance reports \
                 (the expected services and the database's evidence speak for who else may use \
                 the old shape)",
                format_second(from)
            )
        } else {
            format!(
                "no old-shape read or write reported since {}; all {} live instance(s) \
                 reported since complete reached 100%",
                format_second(from),
                i.fleet.live.len()
            )
        },
    )
}

/// 4. No shadow mismatch in the last live window.
fn no_shadow_mismatch(i: &Inputs) -> Check {
    let Some(w) = i.m.live_window else {
        return Check::fail(
            CheckId::NoShadowMismatch,
            "the migration has never been at live".to_owned(),
            "run live (shadow reads compared) before contracting".to_owned(),
        );
    };
    let end = w.ended_at_ms.unwrap_or(i.now_ms);
    // What was recorded at the window's close, or what is still retained (reports arriving
    // after the close), whichever saw more.
    let retained = i.sum(w.started_at_ms, end);
    let recorded = w.recorded.unwrap_or_default();
    let c = crate::migration::Compared {
        comparisons: retained.comparisons.max(recorded.comparisons),
        mismatches: retained.mismatches.max(recorded.mismatches),
    };
    // Telemetry is kept per minute: the whole minutes the live window touched are counted,
    // so comparisons made at shadow in its first minute (or after it in its last) are too,
    // and the message says so.
    let window = format!(
        "the last live window, {} to {} (counted in whole reported minutes, {} to {}, so \
         comparisons in those minutes just outside it count too)",
        format_second(w.started_at_ms),
        w.ended_at_ms
            .map_or_else(|| "now".to_owned(), format_second),
        format_minute(w.started_at_ms),
        format_minute(end),
    );
    if c.mismatches == 0 {
        Check::pass(
            CheckId::NoShadowMismatch,
            format!(
                "{} shadow comparison(s), no mismatch, in {window}",
                c.comparisons
            ),
        )
    } else {
        Check::fail(
            CheckId::NoShadowMismatch,
            format!(
                "{} of {} shadow comparison(s) mismatched in {window}",
                c.mismatches, c.comparisons
            ),
            "fix the new shape's data or code, step back to live and run it again without \
             mismatches"
                .to_owned(),
        )
    }
}

/// 5. New-shape errors under the limit during the soak period.
fn new_shape_errors(i: &Inputs, limit: f64) -> Check {
    let from = i
        .soak_start
        .map_or(i.now_ms - i.soak_ms, |s| s.max(i.now_ms - i.soak_ms));
    if let Some(start) = i.soak_start {
        if let Some(waiting) = i.no_reports_yet(CheckId::NewShapeErrors, start) {
            return waiting;
        }
    }
    // Counted per reported minute, from the minute holding `from`.
    let new = i.sum(from, i.now_ms).new;
    let ops = new.operations();
    let ratio = if ops == 0 {
        0.0
    } else {
        new.errors as f64 / ops as f64
    };
    let evidence = format!(
        "{} of {} new-shape operation(s) failed in the minutes since {} ({:.3}%, limit {:.3}%)",
        new.errors,
        ops,
        format_minute(from),
        ratio * 100.0,
        limit * 100.0
    );
    if ratio <= limit {
        Check::pass(CheckId::NewShapeErrors, evidence)
    } else {
        Check::fail(
            CheckId::NewShapeErrors,
            evidence,
            "bring new-shape errors under the limit; they are measured over the soak period"
                .to_owned(),
        )
    }
}

/// 6. The backfill, if any, complete.
fn backfill(m: &Migration) -> Check {
    match m.backfill.status {
        BackfillStatus::None => Check::pass(
            CheckId::Backfill,
            "the migration has no backfill".to_owned(),
        ),
        BackfillStatus::Complete => Check::pass(
            CheckId::Backfill,
            "the backfill is recorded complete".to_owned(),
        ),
        status => Check::fail(
            CheckId::Backfill,
            format!(
                "the backfill is {}",
                if status == BackfillStatus::Running {
                    "running"
                } else {
                    "not started"
                }
            ),
            "finish the backfill and record backfill-complete".to_owned(),
        ),
    }
}

/// 7. The target database ran no statement on the old shape during the soak.
///
/// Counted from the same point as the old-shape traffic check, and only with the database
/// observed without a gap all that time (see [`crate::usage::judge`]).
fn database_usage(i: &Inputs, database: &Observation) -> Check {
    let window_from = i.soak_start.map(|s| i.database_from(s));
    match crate::usage::judge(
        database,
        &i.m.database.old_shape_strings(),
        window_from,
        i.soak_ms,
        i.now_ms,
    ) {
        Ok(evidence) => Check::pass(CheckId::DatabaseUsage, evidence),
        Err((evidence, remedy)) => Check::fail(CheckId::DatabaseUsage, evidence, remedy),
    }
}

/// 8. Retire before drop, when the migration chose it.
///
/// Retired for the whole probation, the database showing the old names gone, no statement
/// failing on them, no restore since (see [`crate::usage::judge_retire`]).
fn retire_probation(i: &Inputs, database: &Observation) -> Check {
    let m = i.m;
    let Some(probation_s) = m.retire_probation_seconds else {
        return Check::pass(
            CheckId::RetireProbation,
            "the migration drops its old shape without retiring it first".to_owned(),
        );
    };
    let probation_ms = (probation_s as i64).saturating_mul(1000);
    let Some(retired_at) = m.retired_at_ms else {
        return Check::fail(
            CheckId::RetireProbation,
            "the old shape is not retired".to_owned(),
            format!(
                "once every other check passes, apply the retire SQL (`switchyard retire-sql \
                 {}`) and record `retired`; the drop then waits a probation of {}",
                m.key,
                format_span(probation_ms)
            ),
        );
    };
    match crate::usage::judge_retire(database, retired_at, probation_ms, i.now_ms) {
        Ok(evidence) => Check::pass(CheckId::RetireProbation, evidence),
        Err((evidence, remedy)) => Check::fail(CheckId::RetireProbation, evidence, remedy),
    }
}

/// Records the shadow comparisons of a live window that the change from `before` to `after`
/// closed, from the migration's reported traffic, so the gate keeps its evidence after the
/// telemetry is pruned.
pub fn record_closed_live_window(
    before: &Migration,
    after: &mut Migration,
    traffic: &[(i64, TrafficCounts)],
) {
    let closed_now = before.live_window.is_some_and(|w| w.ended_at_ms.is_none());
    let Some(w) = after.live_window.as_mut() else {
        return;
    };
    let Some(end) = w.ended_at_ms.filter(|_| closed_now) else {
        return;
    };
    let mut total = crate::migration::Compared::default();
    for (minute, counts) in traffic {
        if *minute >= minute_of(w.started_at_ms) && *minute <= end {
            total.comparisons += counts.comparisons;
            total.mismatches += counts.mismatches;
        }
    }
    w.recorded = Some(total);
}
