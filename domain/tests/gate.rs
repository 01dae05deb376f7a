//! Integration tests of the contract gate (`switchyard_domain::gate::evaluate`) and of rule 7
//! (`rules::contract`), through the public API only.
//!
//! Every migration here is built the way the server builds it: `Migration::create`, then a
//! sequence of `rules::apply` calls at chosen times, so `soak_started_at_ms`, `live_window` and
//! `full_since` are the ones the rules derive. The gate is then fed hand-made traffic minutes.
//!
//! The standard timeline (UTC):
//!
//! | when               | what                                            |
//! |--------------------|-------------------------------------------------|
//! | 2023-11-14T22:13Z  | created, expand recorded, dual_write, backfill, shadow |
//! | 2023-11-14T22:23Z  | advance to live (the live window opens)         |
//! | 2023-11-14T23:13Z  | advance to rampdown (the live window closes)    |
//! | 2023-11-15T00:13Z  | complete reaches 100%: the one-day soak starts  |
//! | 2023-11-16T00:13Z  | the soak ends                                   |
//! | 2023-11-16T01:13Z  | `AFTER`: when the healthy migration passes      |

use switchyard_domain::gate::{
    Check, CheckId, GatePolicy, GateReport, InstanceReport, OldUse, Reports, evaluate,
};
use switchyard_domain::migration::Window;
use switchyard_domain::rules::{apply, contract};
use switchyard_domain::time::format_minute;
use switchyard_domain::traffic::{TrafficCounts, minute_of};
use switchyard_domain::usage::{ObjectRef, Observation, Session, StatementUse};
use switchyard_domain::{
    BackfillStatus, BasisPoints, DomainError, Event, Fleet, LiveInstance, Migration, MigrationKey,
    NewMigration, Operation, Rule, Stage, Version,
};

const KEY: &str = "users.username-to-handle";
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// 2023-11-14T22:13:00Z, the start of a minute.
const T0: i64 = 1_699_999_980_000;
/// 2023-11-14T22:23Z.
const LIVE_START: i64 = T0 + 10 * MIN;
/// 2023-11-14T23:13Z.
const LIVE_END: i64 = T0 + HOUR;
/// 2023-11-15T00:13Z: complete reaches 100%.
const SOAK_START: i64 = T0 + 2 * HOUR;
const SOAK_SECONDS: u64 = 24 * 3600;
const SOAK_MS: i64 = DAY;
/// 2023-11-16T00:13Z.
const SOAK_END: i64 = SOAK_START + SOAK_MS;
/// 2023-11-16T01:13Z: an hour after the soak ended.
const AFTER: i64 = SOAK_END + HOUR;

const ALL_CHECKS: [CheckId; 8] = CheckId::ALL;

// ---------------------------------------------------------------------------------------------
// Building migrations with the rules
// ---------------------------------------------------------------------------------------------

fn bp(v: u32) -> BasisPoints {
    BasisPoints::new(v).unwrap()
}

fn ramp(rollout: u32) -> Operation {
    Operation::SetRollout {
        stage: None,
        rollout: bp(rollout),
    }
}

fn ramp_stage(stage: Stage, rollout: u32) -> Operation {
    Operation::SetRollout {
        stage: Some(stage),
        rollout: bp(rollout),
    }
}

fn instance(service: &str, id: &str, applied: Version) -> LiveInstance {
    LiveInstance {
        service: service.to_owned(),
        instance_id: id.to_owned(),
        applied_version: applied,
    }
}

/// One migration moved by `rules::apply`, each step at a given time, with a fleet in which
/// every expected service has an instance that applied the current version.
struct Driver {
    m: Migration,
}

impl Driver {
    fn new(soak_seconds: u64, has_backfill: bool, expected_services: &[&str]) -> Driver {
        Driver {
            m: Migration::create(
                NewMigration {
                    key: MigrationKey::parse(KEY).unwrap(),
                    description: "move usernames to handles".to_owned(),
                    owner: "identity".to_owned(),
                    entity_kind: "user_id".to_owned(),
                    soak_seconds,
                    expected_services: expected_services.iter().map(|s| s.to_string()).collect(),
                    has_backfill,
                    shadow_sample: BasisPoints::FULL,
                    database: Default::default(),
                    retire_probation_seconds: None,
                },
                0x5eed,
                Version(1),
                T0,
            ),
        }
    }

    fn caught_up(&self) -> Fleet {
        Fleet {
            live: self
                .m
                .expected_services
                .iter()
                .map(|s| instance(s, &format!("{s}-1"), self.m.version))
                .collect(),
        }
    }

    fn try_at(&self, now: i64, op: Operation) -> Result<Migration, DomainError> {
        apply(
            &self.m,
            self.m.version,
            "gate test step",
            &op,
            &self.caught_up(),
            Version(self.m.version.0 + 1),
            now,
        )
        .map(|(m, _)| m)
    }

    fn at(&mut self, now: i64, op: Operation) -> &Migration {
        match self.try_at(now, op) {
            Ok(m) => {
                self.m = m;
                &self.m
            }
            Err(e) => panic!(
                "{op:?} at {} {} was refused: {e}",
                self.m.stage, self.m.rollout_bp
            ),
        }
    }

    /// Off → shadow at 100% (with the backfill, if any), all at `now`.
    fn drive_to_shadow(&mut self, now: i64) {
        self.at(now, Operation::Record(Event::ExpandApplied));
        self.at(now, Operation::Advance);
        self.at(now, ramp(10_000));
        if self.m.has_backfill {
            self.at(now, Operation::Record(Event::BackfillStarted));
            self.at(now, Operation::Record(Event::BackfillComplete));
        }
        self.at(now, Operation::Advance);
        self.at(now, ramp(10_000));
        assert_eq!(
            (self.m.stage, self.m.rollout_bp),
            (Stage::Shadow, BasisPoints::FULL)
        );
    }

    /// The standard timeline (see the module docs), up to complete at 100% at `SOAK_START`.
    fn standard(soak_seconds: u64, has_backfill: bool, expected_services: &[&str]) -> Driver {
        let mut d = Driver::new(soak_seconds, has_backfill, expected_services);
        d.drive_to_shadow(T0);
        // The live window runs while some entity is at live: from (live, >0%) to
        // (rampdown, 100%).
        d.at(LIVE_START - MIN, Operation::Advance);
        d.at(LIVE_START, ramp(10_000));
        d.at(LIVE_END - MIN, Operation::Advance);
        d.at(LIVE_END, ramp(10_000));
        d.at(SOAK_START - MIN, Operation::Advance);
        assert_eq!(d.m.soak_started_at_ms, None, "complete at 0% does not soak");
        d.at(SOAK_START, ramp(10_000));
        assert_eq!(
            (d.m.stage, d.m.rollout_bp),
            (Stage::Complete, BasisPoints::FULL)
        );
        assert_eq!(d.m.soak_started_at_ms, Some(SOAK_START));
        assert_eq!(
            d.m.live_window,
            Some(Window {
                started_at_ms: LIVE_START,
                ended_at_ms: Some(LIVE_END),
                recorded: None,
            })
        );
        assert_eq!(d.m.full_since.get(&Stage::Complete), Some(&d.m.version));
        d
    }

    /// The usual migration: one-day soak, a backfill, one expected service `api`.
    fn completed() -> Driver {
        Driver::standard(SOAK_SECONDS, true, &["api"])
    }

    /// The version whose application the gate asks of every live instance.
    fn complete_version(&self) -> Version {
        *self
            .m
            .full_since
            .get(&Stage::Complete)
            .expect("complete at 100%")
    }
}

// ---------------------------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------------------------

fn counts(f: impl FnOnce(&mut TrafficCounts)) -> TrafficCounts {
    let mut c = TrafficCounts::default();
    f(&mut c);
    c
}

fn old_ops(reads: u64, writes: u64) -> TrafficCounts {
    counts(|c| {
        c.old.reads = reads;
        c.old.writes = writes;
    })
}

fn new_ops(reads: u64, writes: u64, errors: u64) -> TrafficCounts {
    counts(|c| {
        c.new.reads = reads;
        c.new.writes = writes;
        c.new.errors = errors;
        c.new.latency.record(800);
    })
}

fn shadow(comparisons: u64, mismatches: u64) -> TrafficCounts {
    counts(|c| {
        c.old.reads = comparisons;
        c.new.reads = comparisons;
        c.comparisons = comparisons;
        c.mismatches = mismatches;
    })
}

/// What a healthy migration on the standard timeline reports:
/// - during shadow (before live) and live, shadow reads compared without a mismatch: 5 live
///   minutes of 100 comparisons (500 in the live window);
/// - during rampdown and in the minute complete reached 100%, old writes (still dual-writing);
/// - during the soak, from an hour in until `AFTER`, one sampled minute an hour of 90 new
///   reads and 10 new writes, no error: 25 minutes, 2500 operations.
fn healthy() -> Vec<(i64, TrafficCounts)> {
    let mut t = vec![(LIVE_START - 5 * MIN, shadow(40, 0))];
    for i in 0..5 {
        t.push((LIVE_START + i * 10 * MIN, shadow(100, 0)));
    }
    t.push((LIVE_END + 5 * MIN, old_ops(0, 30)));
    t.push((SOAK_START, old_ops(0, 7)));
    for h in 1..=25 {
        t.push((SOAK_START + h * HOUR, new_ops(90, 10, 0)));
    }
    t
}

fn with(
    mut traffic: Vec<(i64, TrafficCounts)>,
    minute: i64,
    c: TrafficCounts,
) -> Vec<(i64, TrafficCounts)> {
    assert_eq!(minute % MIN, 0, "traffic minutes start a minute");
    traffic.push((minute, c));
    traffic
}

// ---------------------------------------------------------------------------------------------
// Evaluating
// ---------------------------------------------------------------------------------------------

fn gate(m: &Migration, fleet: &Fleet, traffic: &[(i64, TrafficCounts)], now: i64) -> GateReport {
    evaluate(
        m,
        fleet,
        traffic,
        &reports(fleet, traffic, now),
        &Observation::NotDeclared,
        now,
        &GatePolicy::default(),
    )
}

/// What the server would know of the reports behind `traffic` at `now`: every live instance
/// reported a moment ago (so its reports cover everything until then), and the store's
/// latest old-shape use is the latest minute with old-shape operations, reported by `api-1`
/// in an interval that began just before that minute (so the minute complete reached 100%
/// in began before the switch, as a real report's would).
fn reports(fleet: &Fleet, traffic: &[(i64, TrafficCounts)], now: i64) -> Reports {
    let latest_old = traffic
        .iter()
        .filter(|(minute, c)| *minute <= now && c.old.operations() > 0)
        .max_by_key(|(minute, _)| *minute);
    Reports {
        instances: fleet
            .live
            .iter()
            .map(|i| InstanceReport {
                service: i.service.clone(),
                instance_id: i.instance_id.clone(),
                reported_ms: Some(now),
                previous_reported_ms: Some(now - 1),
            })
            .collect(),
        old_use: latest_old
            .map(|(minute, c)| OldUse {
                service: "api".into(),
                instance_id: "api-1".into(),
                since_ms: minute - 1,
                until_ms: (minute + MIN).min(now),
                reads: c.old.reads,
                writes: c.old.writes,
            })
            .into_iter()
            .collect(),
    }
}

/// The standard migration's live fleet: one `api` instance that applied the complete version.
fn fleet_of(d: &Driver) -> Fleet {
    Fleet {
        live: vec![instance("api", "api-1", d.complete_version())],
    }
}

fn check(report: &GateReport, id: CheckId) -> &Check {
    report
        .checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no {id:?} check in {report:#?}"))
}

fn failing(report: &GateReport) -> Vec<CheckId> {
    report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.id)
        .collect()
}

/// Asserts that exactly `ids` fail, that the verdict and the remedies agree with that, and that
/// the checks come in their documented order.
fn assert_failing(report: &GateReport, ids: &[CheckId]) {
    let order: Vec<CheckId> = report.checks.iter().map(|c| c.id).collect();
    assert_eq!(order, ALL_CHECKS, "{report:#?}");
    assert_eq!(failing(report), ids, "{report:#?}");
    assert_eq!(report.passed, ids.is_empty(), "{report:#?}");
    for c in &report.checks {
        assert!(!c.evidence.is_empty(), "{c:?}");
        assert_eq!(c.remedy.is_empty(), c.passed, "{c:?}");
    }
    assert_eq!(report.key, KEY);
}

fn assert_fails_alone(report: &GateReport, id: CheckId, evidence: &str, remedy: &str) {
    assert_failing(report, &[id]);
    let c = check(report, id);
    assert_eq!(c.evidence, evidence, "{id:?}");
    assert_eq!(c.remedy, remedy, "{id:?}");
    assert_eq!(report.failures(), format!("{}: {remedy}", id.as_str()));
}

// ---------------------------------------------------------------------------------------------
// All checks pass
// ---------------------------------------------------------------------------------------------

#[test]
fn a_healthy_migration_passes_every_check_with_its_evidence() {
    let d = Driver::completed();
    let v = d.complete_version();
    let report = gate(&d.m, &fleet_of(&d), &healthy(), AFTER);
    assert_failing(&report, &[]);
    assert_eq!(report.failures(), "");
    assert_eq!(report.soak_ends_at_ms, Some(SOAK_END));
    assert_eq!(report.evaluated_at_ms, AFTER);
    let evidence: Vec<&str> = report.checks.iter().map(|c| c.evidence.as_str()).collect();
    assert_eq!(
        evidence,
        [
            "complete at 100% since 2023-11-15T00:13Z (1d 1h), soak 1d".to_owned(),
            format!("1 live instance(s) applied version {v} or later; expected services live: api"),
            // The last soak-long stretch: from an hour after the soak started.
            "no old-shape read or write reported since 2023-11-15T01:13:00Z; all 1 live \
             instance(s) reported since complete reached 100%"
                .to_owned(),
            "500 shadow comparison(s), no mismatch, in the last live window, 2023-11-14T22:23:00Z \
             to 2023-11-14T23:13:00Z (counted in whole reported minutes, 2023-11-14T22:23Z to \
             2023-11-14T23:13Z, so comparisons in those minutes just outside it count too)"
                .to_owned(),
            "0 of 2500 new-shape operation(s) failed in the minutes since 2023-11-15T01:13Z \
             (0.000%, limit 0.100%)"
                .to_owned(),
            "the backfill is recorded complete".to_owned(),
            "the migration names no target database, so the database is not observed; only \
             client telemetry speaks for the old shape (declare target_database and old_shape \
             to have the database's own evidence)"
                .to_owned(),
            "the migration drops its old shape without retiring it first".to_owned(),
        ]
    );
}

/// The database's evidence counts over the same stretch as the clients' old-shape traffic: a
/// use before it is history, one inside it fails the gate alone.
#[test]
fn a_statement_on_the_old_shape_in_the_soak_window_fails_the_database_check_alone() {
    let d = Driver::completed();
    let fleet = fleet_of(&d);
    let reader = |at: i64| StatementUse {
        minute_ms: minute_of(at),
        last_seen_ms: at,
        entry: "16384/10/42".into(),
        statement: "SELECT username FROM users WHERE id = $1".into(),
        role: "reports".into(),
        objects: vec![ObjectRef {
            object: "column:users.username".into(),
            possible: None,
        }],
        calls: 9,
        rows: 9,
        sessions: vec![Session {
            role: "reports".into(),
            application_name: "nightly-report".into(),
            client_addr: "10.1.2.3".into(),
        }],
    };
    let observed = |uses: Vec<StatementUse>| Observation::Declared {
        target: "main".into(),
        configured: true,
        nothing_declared: false,
        covered_since: Some((SOAK_START - HOUR, "first observed".into())),
        last_pass_ms: Some(AFTER - 60_000),
        failing: None,
        stale_after_ms: 3 * 60_000,
        uses,
        retire: None,
        log_failing: None,
    };
    // One hour after the soak ended, the window is the last soak period: from SOAK_START + 1h.
    let before_window = observed(vec![reader(SOAK_START + HOUR - 60_000)]);
    let report = evaluate(
        &d.m,
        &fleet,
        &healthy(),
        &reports(&fleet, &healthy(), AFTER),
        &before_window,
        AFTER,
        &GatePolicy::default(),
    );
    assert_failing(&report, &[]);
    let inside = observed(vec![reader(SOAK_START + HOUR + 60_000)]);
    let report = evaluate(
        &d.m,
        &fleet,
        &healthy(),
        &reports(&fleet, &healthy(), AFTER),
        &inside,
        AFTER,
        &GatePolicy::default(),
    );
    assert_failing(&report, &[CheckId::DatabaseUsage]);
    let c = check(&report, CheckId::DatabaseUsage);
    assert!(
        c.evidence
            .contains("SELECT username FROM users WHERE id = $1"),
        "{}",
        c.evidence
    );
    assert!(c.evidence.contains("9 call(s)"), "{}", c.evidence);
    assert!(
        c.evidence
            .contains("nightly-report (role reports, from 10.1.2.3)"),
        "{}",
        c.evidence
    );
    assert!(c.remedy.contains("switchyard usage"), "{}", c.remedy);
}

#[test]
fn the_soak_passes_at_the_exact_end_and_not_a_millisecond_before() {
    let d = Driver::completed();
    let fleet = fleet_of(&d);
    let at_end = gate(&d.m, &fleet, &healthy(), SOAK_END);
    assert_failing(&at_end, &[]);
    assert_eq!(
        check(&at_end, CheckId::Soak).evidence,
        "complete at 100% since 2023-11-15T00:13Z (1d), soak 1d"
    );
    let just_before = gate(&d.m, &fleet, &healthy(), SOAK_END - 1);
    assert_fails_alone(
        &just_before,
        CheckId::Soak,
        "complete at 100% since 2023-11-15T00:13Z (23h 59m of a 1d soak)",
        "soak ends 2023-11-16T00:13Z, in 0s",
    );
}

#[test]
fn a_migration_without_backfill_or_expected_services_and_no_live_instance_passes() {
    // Nobody is running, and nobody is expected to: no report is missing. (Expected services
    // demand presence; the database's evidence speaks for callers that are not clients.)
    let d = Driver::standard(SOAK_SECONDS, false, &[]);
    let report = gate(&d.m, &Fleet::default(), &healthy(), AFTER);
    assert_failing(&report, &[]);
    assert_eq!(
        check(&report, CheckId::NoOldShapeTraffic).evidence,
        "no old-shape read or write reported since 2023-11-15T01:13:00Z; no live client \
         instance reports (the expected services and the database's evidence speak for who else \
         may use the old shape)"
    );
    assert_eq!(
        check(&report, CheckId::ClientsApplied).evidence,
        format!(
            "0 live instance(s) applied version {} or later",
            d.complete_version()
        )
    );
    assert_eq!(
        check(&report, CheckId::Backfill).evidence,
        "the migration has no backfill"
    );
}

#[test]
fn before_every_live_instance_reported_since_the_switch_the_traffic_checks_fail() {
    let d = Driver::completed();
    let v = d.complete_version();
    let fleet = Fleet {
        live: vec![instance("api", "api-1", v), instance("api", "api-2", v)],
    };
    let mut reports = reports(&fleet, &healthy(), AFTER);
    // api-2's latest report covers an interval that began before complete reached 100%.
    reports.instances[1].previous_reported_ms = Some(SOAK_START - 1);
    let report = evaluate(
        &d.m,
        &fleet,
        &healthy(),
        &reports,
        &Observation::NotDeclared,
        AFTER,
        &GatePolicy::default(),
    );
    assert_failing(
        &report,
        &[CheckId::NoOldShapeTraffic, CheckId::NewShapeErrors],
    );
    assert_eq!(
        check(&report, CheckId::NoOldShapeTraffic).evidence,
        "no reports yet: 1 of 2 live instance(s) have not reported since complete reached 100% \
         at 2023-11-15T00:13:00Z (api/api-2)"
    );
    // Reported since: both pass.
    reports.instances[1].previous_reported_ms = Some(SOAK_START);
    let report = evaluate(
        &d.m,
        &fleet,
        &healthy(),
        &reports,
        &Observation::NotDeclared,
        AFTER,
        &GatePolicy::default(),
    );
    assert_failing(&report, &[]);
}

#[test]
fn soak_not_elapsed_fails_alone_and_says_when_it_ends() {
    let d = Driver::completed();
    let now = SOAK_END - 90 * MIN;
    let report = gate(&d.m, &fleet_of(&d), &healthy(), now);
    assert_fails_alone(
        &report,
        CheckId::Soak,
        "complete at 100% since 2023-11-15T00:13Z (22h 30m of a 1d soak)",
        "soak ends 2023-11-16T00:13Z, in 1h 30m",
    );
    assert_eq!(report.soak_ends_at_ms, Some(SOAK_END));
    assert_eq!(format_minute(SOAK_END), "2023-11-16T00:13Z");
    // The day-granular span of a soak that has barely started.
    let early = gate(&d.m, &fleet_of(&d), &healthy(), SOAK_START + 5 * MIN);
    assert_eq!(
        check(&early, CheckId::Soak).remedy,
        "soak ends 2023-11-16T00:13Z, in 23h 55m"
    );
}

#[test]
fn a_front_not_at_complete_100_fails_the_soak_and_the_checks_that_hang_on_it() {
    // Complete ramped back to 50%: every entity is no longer at complete, so there is no soak,
    // no state for clients to apply, and no soak window to look for old traffic in. These three
    // cannot fail apart from each other; the other three still pass.
    let mut d = Driver::completed();
    d.at(SOAK_START + HOUR, ramp(5_000));
    assert_eq!(d.m.soak_started_at_ms, None);
    assert_eq!(d.m.full_since.get(&Stage::Complete), None);
    let fleet = Fleet {
        live: vec![instance("api", "api-1", d.m.version)],
    };
    let report = gate(&d.m, &fleet, &healthy(), AFTER);
    assert_failing(
        &report,
        &[
            CheckId::Soak,
            CheckId::ClientsApplied,
            CheckId::NoOldShapeTraffic,
        ],
    );
    assert_eq!(report.soak_ends_at_ms, None);
    let soak = check(&report, CheckId::Soak);
    assert_eq!(
        soak.evidence,
        "the front is at complete 50%, not complete at 100%"
    );
    assert_eq!(
        soak.remedy,
        "ramp complete to 100%; the soak (1d) starts then, and any step back restarts it"
    );
    let clients = check(&report, CheckId::ClientsApplied);
    assert_eq!(
        clients.evidence,
        "complete is not at 100%, so there is no state to apply yet"
    );
    assert_eq!(
        clients.remedy,
        "ramp complete to 100% and let clients acknowledge it"
    );
    let old = check(&report, CheckId::NoOldShapeTraffic);
    assert_eq!(old.evidence, "the soak has not started");
    assert_eq!(
        old.remedy,
        "ramp complete to 100%; old-shape traffic is checked over the soak period"
    );
    assert!(
        report
            .failures()
            .starts_with("soak: ramp complete to 100%; the soak (1d) starts then"),
        "{}",
        report.failures()
    );

    // Rampdown at 100% (complete never reached) reads the same.
    let mut r = Driver::new(SOAK_SECONDS, false, &[]);
    r.drive_to_shadow(T0);
    r.at(LIVE_START, Operation::Advance);
    r.at(LIVE_START, ramp(10_000));
    r.at(LIVE_END, Operation::Advance);
    r.at(LIVE_END, ramp(10_000));
    let report = gate(&r.m, &Fleet::default(), &healthy(), AFTER);
    assert_failing(
        &report,
        &[
            CheckId::Soak,
            CheckId::ClientsApplied,
            CheckId::NoOldShapeTraffic,
        ],
    );
    assert_eq!(
        check(&report, CheckId::Soak).evidence,
        "the front is at rampdown 100%, not complete at 100%"
    );
}

#[test]
fn a_live_instance_that_has_not_applied_complete_fails_alone() {
    let d = Driver::completed();
    let v = d.complete_version();
    let behind = Version(v.0 - 1);
    let fleet = Fleet {
        live: vec![
            instance("api", "api-1", v),
            instance("api", "api-2", behind),
            instance("worker", "worker-1", Version(v.0 + 5)),
        ],
    };
    let report = gate(&d.m, &fleet, &healthy(), AFTER);
    assert_fails_alone(
        &report,
        CheckId::ClientsApplied,
        &format!("instance api-2 of api has applied version {behind}, needs {v} or later"),
        &format!(
            "every live instance must apply version {v} (complete at 100%) and every expected \
             service must have a live instance"
        ),
    );
    // Once it applies that version (or a later one), the gate passes.
    let fleet = Fleet {
        live: vec![
            instance("api", "api-1", v),
            instance("api", "api-2", Version(v.0 + 1)),
        ],
    };
    let report = gate(&d.m, &fleet, &healthy(), AFTER);
    assert_failing(&report, &[]);
    assert_eq!(
        check(&report, CheckId::ClientsApplied).evidence,
        format!("2 live instance(s) applied version {v} or later; expected services live: api")
    );
}

#[test]
fn an_expected_service_without_a_live_instance_fails_alone() {
    let d = Driver::standard(SOAK_SECONDS, true, &["api", "worker"]);
    let v = d.complete_version();
    let fleet = Fleet {
        live: vec![instance("api", "api-1", v)],
    };
    let remedy = format!(
        "every live instance must apply version {v} (complete at 100%) and every expected \
         service must have a live instance"
    );
    let report = gate(&d.m, &fleet, &healthy(), AFTER);
    assert_fails_alone(
        &report,
        CheckId::ClientsApplied,
        "expected service worker has no live instance",
        &remedy,
    );
    // No live instance at all: every expected service is named.
    let report = gate(&d.m, &Fleet::default(), &healthy(), AFTER);
    assert_fails_alone(
        &report,
        CheckId::ClientsApplied,
        "expected service api has no live instance; expected service worker has no live instance",
        &remedy,
    );
    // Both reasons at once, instances first.
    let fleet = Fleet {
        live: vec![instance("api", "api-1", Version(v.0 - 2))],
    };
    let report = gate(&d.m, &fleet, &healthy(), AFTER);
    assert_fails_alone(
        &report,
        CheckId::ClientsApplied,
        &format!(
            "instance api-1 of api has applied version {}, needs {v} or later; expected service \
             worker has no live instance",
            v.0 - 2
        ),
        &remedy,
    );
    let fleet = Fleet {
        live: vec![instance("api", "api-1", v), instance("worker", "w-7", v)],
    };
    let report = gate(&d.m, &fleet, &healthy(), AFTER);
    assert_failing(&report, &[]);
    assert_eq!(
        check(&report, CheckId::ClientsApplied).evidence,
        format!(
            "2 live instance(s) applied version {v} or later; expected services live: api, worker"
        )
    );
}

#[test]
fn old_shape_traffic_during_the_soak_fails_alone() {
    let d = Driver::completed();
    let last = SOAK_START + 3 * HOUR; // 2023-11-15T03:13Z
    let traffic = with(
        with(healthy(), SOAK_START + 2 * HOUR, old_ops(2, 0)),
        last,
        old_ops(1, 2),
    );
    let report = gate(&d.m, &fleet_of(&d), &traffic, AFTER);
    assert_fails_alone(
        &report,
        CheckId::NoOldShapeTraffic,
        "api/api-1 reported 1 old-shape read(s) and 2 write(s) between 2023-11-15T03:12:59Z and \
         2023-11-15T03:14:00Z",
        "find what still uses the old shape (`switchyard traffic users.username-to-handle` and \
         `switchyard instances --migration users.username-to-handle`); the check passes once \
         none is reported for the soak period, at the earliest 2023-11-16T03:14:00Z",
    );
    // Writes alone count as much as reads.
    let traffic = with(healthy(), SOAK_START + 5 * HOUR, old_ops(0, 1));
    let report = gate(&d.m, &fleet_of(&d), &traffic, AFTER);
    assert_failing(&report, &[CheckId::NoOldShapeTraffic]);
}

#[test]
fn old_shape_use_reported_in_an_interval_that_began_before_the_switch_is_ignored() {
    let d = Driver::completed();
    let now = SOAK_START + 10 * HOUR; // inside the soak: the window starts at the soak start
    let fleet = fleet_of(&d);
    let judged = |old_use: OldUse| {
        let mut reports = reports(&fleet, &healthy(), now);
        reports.old_use = vec![old_use];
        evaluate(
            &d.m,
            &fleet,
            &healthy(),
            &reports,
            &Observation::NotDeclared,
            now,
            &GatePolicy::default(),
        )
    };
    let used = |since_ms: i64, until_ms: i64| OldUse {
        service: "api".into(),
        instance_id: "api-1".into(),
        since_ms,
        until_ms,
        reads: 3,
        writes: 0,
    };
    // A report whose interval straddles the switch may hold operations from before it (the
    // dual writes of rampdown, reads before the change reached the instance).
    let report = judged(used(SOAK_START - 1, SOAK_START + 4_000));
    assert_failing(&report, &[CheckId::Soak]);
    assert_eq!(
        check(&report, CheckId::NoOldShapeTraffic).evidence,
        "no old-shape read or write reported since 2023-11-15T00:13:00Z; all 1 live \
         instance(s) reported since complete reached 100%"
    );
    // One whose interval began at the switch or after holds only operations after it: exact
    // times, no grace.
    let report = judged(used(SOAK_START, SOAK_START + 4_000));
    assert_failing(&report, &[CheckId::Soak, CheckId::NoOldShapeTraffic]);
    assert_eq!(
        check(&report, CheckId::NoOldShapeTraffic).evidence,
        "api/api-1 reported 3 old-shape read(s) and 0 write(s) between 2023-11-15T00:13:00Z and \
         2023-11-15T00:13:04Z"
    );
}

#[test]
fn old_shape_traffic_older_than_the_soak_period_ages_out() {
    let d = Driver::completed();
    let last = SOAK_START + 3 * HOUR;
    let traffic = with(healthy(), last, old_ops(4, 0));
    // The remedy names the moment it passes: a soak period after the end of that minute.
    let passes_at = last + MIN + SOAK_MS;
    assert_eq!(format_minute(passes_at), "2023-11-16T03:14Z");
    let fleet = fleet_of(&d);
    let report = gate(&d.m, &fleet, &traffic, passes_at - 1);
    assert_failing(&report, &[CheckId::NoOldShapeTraffic]);
    assert!(
        check(&report, CheckId::NoOldShapeTraffic)
            .remedy
            .ends_with("at the earliest 2023-11-16T03:14:00Z"),
        "{report:#?}"
    );
    let report = gate(&d.m, &fleet, &traffic, passes_at);
    assert_failing(&report, &[]);
    assert_eq!(
        check(&report, CheckId::NoOldShapeTraffic).evidence,
        "no old-shape read or write reported since 2023-11-15T03:14:00Z; all 1 live \
         instance(s) reported since complete reached 100%"
    );
}

#[test]
fn a_shadow_mismatch_in_the_last_live_window_fails_alone() {
    let d = Driver::completed();
    let traffic = with(healthy(), LIVE_START + 5 * MIN, shadow(20, 3));
    let report = gate(&d.m, &fleet_of(&d), &traffic, AFTER);
    assert_fails_alone(
        &report,
        CheckId::NoShadowMismatch,
        "3 of 520 shadow comparison(s) mismatched in the last live window, 2023-11-14T22:23:00Z to 2023-11-14T23:13:00Z (counted in whole \
         reported minutes, 2023-11-14T22:23Z to 2023-11-14T23:13Z, so comparisons in those \
         minutes just outside it count too)",
        "fix the new shape's data or code, step back to live and run it again without \
         mismatches",
    );
    // The window's last minute is in it.
    let traffic = with(healthy(), LIVE_END, shadow(1, 1));
    assert_failing(
        &gate(&d.m, &fleet_of(&d), &traffic, AFTER),
        &[CheckId::NoShadowMismatch],
    );
}

#[test]
fn a_shadow_mismatch_outside_the_last_live_window_is_ignored() {
    // Before live: mismatches while only shadow compared.
    let d = Driver::completed();
    let traffic = with(healthy(), LIVE_START - 2 * MIN, shadow(50, 9));
    let report = gate(&d.m, &fleet_of(&d), &traffic, AFTER);
    assert_failing(&report, &[]);
    assert_eq!(
        check(&report, CheckId::NoShadowMismatch).evidence,
        "500 shadow comparison(s), no mismatch, in the last live window, 2023-11-14T22:23:00Z to 2023-11-14T23:13:00Z (counted in whole \
         reported minutes, 2023-11-14T22:23Z to 2023-11-14T23:13Z, so comparisons in those \
         minutes just outside it count too)"
    );

    // An earlier live window: live, mismatches, a step back to shadow to fix them, live again.
    let mut d = Driver::new(SOAK_SECONDS, true, &["api"]);
    d.drive_to_shadow(T0);
    let first = T0 + 5 * MIN;
    d.at(first - MIN, Operation::Advance);
    d.at(first, ramp(2_000));
    d.at(first + 4 * MIN, ramp(0));
    d.at(first + 4 * MIN, Operation::Retreat);
    assert_eq!(
        d.m.live_window,
        Some(Window {
            started_at_ms: first,
            ended_at_ms: Some(first + 4 * MIN),
            recorded: None,
        })
    );
    d.at(LIVE_START - MIN, Operation::Advance);
    d.at(LIVE_START, ramp(10_000));
    assert_eq!(
        d.m.live_window,
        Some(Window {
            started_at_ms: LIVE_START,
            ended_at_ms: None,
            recorded: None,
        })
    );
    d.at(LIVE_END - MIN, Operation::Advance);
    d.at(LIVE_END, ramp(10_000));
    d.at(SOAK_START - MIN, Operation::Advance);
    d.at(SOAK_START, ramp(10_000));
    let traffic = with(healthy(), first + 2 * MIN, shadow(30, 12));
    let fleet = fleet_of(&d);
    assert_failing(&gate(&d.m, &fleet, &traffic, AFTER), &[]);
    // The same mismatches in the second window fail it.
    let traffic = with(healthy(), LIVE_START + 20 * MIN, shadow(30, 12));
    assert_failing(
        &gate(&d.m, &fleet, &traffic, AFTER),
        &[CheckId::NoShadowMismatch],
    );
}

/// Suspected bug. The live window closes when the *stage* leaves `live`, i.e. on the advance
/// from `(live, 100%)` to `(rampdown, 0%)`. README, "Concepts": "`(S, 100%)` behaves exactly like
/// `(next(S), 0%)`", so at `(rampdown, 0%)` every entity is still at live and compares shadow
/// reads, and while rampdown ramps the entities not yet reached keep comparing. Mismatches
/// they report are ignored by the gate: a migration whose new shape mismatched for an hour at
/// `(rampdown, 0%)` passes. The window should last while any entity is at live (until the
/// trailing stage passes live, i.e. rampdown at 100%).
#[test]
fn mismatches_while_rampdown_ramps_and_entities_are_still_live_count() {
    let mut d = Driver::new(SOAK_SECONDS, true, &["api"]);
    d.drive_to_shadow(T0);
    d.at(LIVE_START, Operation::Advance);
    d.at(LIVE_START + MIN, ramp(10_000));
    d.at(LIVE_END, Operation::Advance); // (rampdown, 0%): every entity still at live
    assert_eq!(d.m.front().trailing(), Stage::Live);
    d.at(LIVE_END + 50 * MIN, ramp(5_000)); // half the entities still at live
    d.at(LIVE_END + 55 * MIN, ramp(10_000));
    d.at(SOAK_START - MIN, Operation::Advance);
    d.at(SOAK_START, ramp(10_000));
    // Shadow reads compared (and mismatched) at (rampdown, 0%), by entities at live.
    let traffic = with(healthy(), LIVE_END + 20 * MIN, shadow(200, 40));
    let report = gate(&d.m, &fleet_of(&d), &traffic, AFTER);
    assert_failing(&report, &[CheckId::NoShadowMismatch]);
}

#[test]
fn a_migration_that_never_ran_live_fails_the_mismatch_check_alone() {
    // Not reachable through the rules (complete is after live); a record from before the live
    // window was kept reads like this.
    let mut d = Driver::completed();
    d.m.live_window = None;
    let report = gate(&d.m, &fleet_of(&d), &healthy(), AFTER);
    assert_fails_alone(
        &report,
        CheckId::NoShadowMismatch,
        "the migration has never been at live",
        "run live (shadow reads compared) before contracting",
    );
}

#[test]
fn new_shape_errors_above_the_limit_fail_alone() {
    let d = Driver::completed();
    let fleet = fleet_of(&d);
    // 2500 healthy operations plus 500 reads with 4 errors: 4 of 3000 = 0.133% > 0.1%.
    let traffic = with(
        healthy(),
        SOAK_START + 5 * HOUR + 30 * MIN,
        new_ops(500, 0, 4),
    );
    let report = gate(&d.m, &fleet, &traffic, AFTER);
    assert_fails_alone(
        &report,
        CheckId::NewShapeErrors,
        "4 of 3000 new-shape operation(s) failed in the minutes since 2023-11-15T01:13Z (0.133%, limit 0.100%)",
        "bring new-shape errors under the limit; they are measured over the soak period",
    );
    // Exactly at the limit passes.
    let traffic = with(
        healthy(),
        SOAK_START + 5 * HOUR + 30 * MIN,
        new_ops(500, 0, 3),
    );
    let report = gate(&d.m, &fleet, &traffic, AFTER);
    assert_failing(&report, &[]);
    assert_eq!(
        check(&report, CheckId::NewShapeErrors).evidence,
        "3 of 3000 new-shape operation(s) failed in the minutes since 2023-11-15T01:13Z (0.100%, limit 0.100%)"
    );
    // A looser policy lets the 4 errors through.
    let loose = GatePolicy {
        max_new_error_ratio: 0.01,
        ..GatePolicy::default()
    };
    let traffic = with(
        healthy(),
        SOAK_START + 5 * HOUR + 30 * MIN,
        new_ops(500, 0, 4),
    );
    let report = evaluate(
        &d.m,
        &fleet,
        &traffic,
        &reports(&fleet, &traffic, AFTER),
        &Observation::NotDeclared,
        AFTER,
        &loose,
    );
    assert_failing(&report, &[]);
    assert_eq!(
        check(&report, CheckId::NewShapeErrors).evidence,
        "4 of 3000 new-shape operation(s) failed in the minutes since 2023-11-15T01:13Z (0.133%, limit 1.000%)"
    );
    // Errors from before the soak window (rampdown, the grace minutes) do not count.
    let traffic = with(
        with(healthy(), LIVE_END + 10 * MIN, new_ops(10, 0, 10)),
        SOAK_START + MIN,
        new_ops(10, 0, 10),
    );
    assert_failing(&gate(&d.m, &fleet, &traffic, AFTER), &[]);
}

#[test]
fn a_backfill_not_complete_fails_alone() {
    // Not reachable through the rules (rule 4 needs it complete before shadow); the check
    // stands on its own.
    let mut d = Driver::completed();
    d.m.backfill.status = BackfillStatus::Running;
    let report = gate(&d.m, &fleet_of(&d), &healthy(), AFTER);
    assert_fails_alone(
        &report,
        CheckId::Backfill,
        "the backfill is running",
        "finish the backfill and record backfill-complete",
    );
    d.m.backfill.status = BackfillStatus::NotStarted;
    let report = gate(&d.m, &fleet_of(&d), &healthy(), AFTER);
    assert_fails_alone(
        &report,
        CheckId::Backfill,
        "the backfill is not started",
        "finish the backfill and record backfill-complete",
    );
}

#[test]
fn every_failing_check_is_listed_with_its_remedy() {
    let mut d = Driver::completed();
    d.m.backfill.status = BackfillStatus::Running;
    let traffic = with(
        with(healthy(), SOAK_START + HOUR, old_ops(1, 0)),
        LIVE_START,
        shadow(1, 1),
    );
    let report = gate(&d.m, &Fleet::default(), &traffic, SOAK_START + 2 * HOUR);
    assert_failing(
        &report,
        &[
            CheckId::Soak,
            CheckId::ClientsApplied,
            CheckId::NoOldShapeTraffic,
            CheckId::NoShadowMismatch,
            CheckId::Backfill,
        ],
    );
    let failures = report.failures();
    let parts: Vec<&str> = failures.split("; ").collect();
    assert!(
        parts[0].starts_with("soak: soak ends 2023-11-16T00:13Z, in 22h"),
        "{failures}"
    );
    for id in [
        "clients_applied: ",
        "no_old_shape_traffic: ",
        "no_shadow_mismatch: ",
        "backfill: ",
    ] {
        assert!(failures.contains(id), "{failures}");
    }
}

// ---------------------------------------------------------------------------------------------
// The soak's clock
// ---------------------------------------------------------------------------------------------

#[test]
fn a_step_back_restarts_the_soak() {
    let mut d = Driver::completed();
    let first_version = d.complete_version();
    // Re-ramping complete to 100% without stepping back changes nothing, the soak included.
    assert!(matches!(
        d.try_at(SOAK_START + 10 * HOUR, ramp(10_000)),
        Err(switchyard_domain::rules::DomainError::Unchanged(_))
    ));
    assert_eq!(d.m.soak_started_at_ms, Some(SOAK_START));
    assert_eq!(d.complete_version(), first_version);

    // A step back (complete to 50%) stops it; the way back to 100% starts it anew.
    let back = SOAK_START + 20 * HOUR;
    d.at(back, ramp(5_000));
    assert_eq!(d.m.soak_started_at_ms, None);
    let restart = SOAK_START + 21 * HOUR; // 2023-11-15T21:13Z
    d.at(restart, ramp(10_000));
    assert_eq!(d.m.soak_started_at_ms, Some(restart));
    let second_version = d.complete_version();
    assert!(second_version > first_version);

    // Old writes while entities were back at rampdown fall before the new soak window.
    let traffic = with(healthy(), back + 30 * MIN, old_ops(0, 80));
    let fleet = Fleet {
        live: vec![instance("api", "api-1", second_version)],
    };
    // At AFTER the first soak would have passed; the second runs until 2023-11-16T21:13Z.
    let report = gate(&d.m, &fleet, &traffic, AFTER);
    assert_fails_alone(
        &report,
        CheckId::Soak,
        "complete at 100% since 2023-11-15T21:13Z (4h of a 1d soak)",
        "soak ends 2023-11-16T21:13Z, in 20h",
    );
    assert_eq!(report.soak_ends_at_ms, Some(restart + SOAK_MS));
    // Instances must apply the new complete state too.
    let stale = Fleet {
        live: vec![instance("api", "api-1", first_version)],
    };
    assert_failing(
        &gate(&d.m, &stale, &traffic, AFTER),
        &[CheckId::Soak, CheckId::ClientsApplied],
    );
    // From the new start, a soak later, it passes.
    let report = gate(&d.m, &fleet, &traffic, restart + SOAK_MS);
    assert_failing(&report, &[]);

    // Stepping back a whole stage (complete to 0%, retreat to rampdown) restarts it as well.
    let mut d = Driver::completed();
    d.at(SOAK_START + HOUR, ramp(0));
    d.at(SOAK_START + HOUR, Operation::Retreat);
    assert_eq!((d.m.stage, d.m.soak_started_at_ms), (Stage::Rampdown, None));
    d.at(SOAK_START + 2 * HOUR, ramp_stage(Stage::Complete, 10_000));
    assert_eq!(d.m.soak_started_at_ms, Some(SOAK_START + 2 * HOUR));
    let fleet = fleet_of(&d);
    assert_failing(&gate(&d.m, &fleet, &healthy(), AFTER), &[CheckId::Soak]);
    assert_failing(
        &gate(&d.m, &fleet, &healthy(), SOAK_START + 2 * HOUR + SOAK_MS),
        &[],
    );
}

#[test]
fn the_policy_floor_raises_a_short_soak() {
    // The migration asks for a one-hour soak.
    let d = Driver::standard(3600, true, &["api"]);
    let fleet = fleet_of(&d);
    let now = SOAK_START + 2 * HOUR;
    let report = gate(&d.m, &fleet, &healthy(), now);
    assert_failing(&report, &[]);
    assert_eq!(report.soak_ends_at_ms, Some(SOAK_START + HOUR));

    // The server's floor is a day.
    let floor = GatePolicy {
        min_soak_seconds: 24 * 3600,
        ..GatePolicy::default()
    };
    let report = evaluate(
        &d.m,
        &fleet,
        &healthy(),
        &reports(&fleet, &healthy(), now),
        &Observation::NotDeclared,
        now,
        &floor,
    );
    assert_fails_alone(
        &report,
        CheckId::Soak,
        "complete at 100% since 2023-11-15T00:13Z (2h of a 1d soak)",
        "soak ends 2023-11-16T00:13Z, in 22h",
    );
    assert_eq!(report.soak_ends_at_ms, Some(SOAK_END));
    assert_failing(
        &evaluate(
            &d.m,
            &fleet,
            &healthy(),
            &reports(&fleet, &healthy(), SOAK_END),
            &Observation::NotDeclared,
            SOAK_END,
            &floor,
        ),
        &[],
    );

    // The floor also widens the window old-shape traffic is looked for in: old reads half an
    // hour into the soak age out of a one-hour soak but not of a one-day one.
    let traffic = with(healthy(), SOAK_START + 30 * MIN, old_ops(1, 0));
    assert_failing(&gate(&d.m, &fleet, &traffic, now), &[]);
    assert_failing(
        &evaluate(
            &d.m,
            &fleet,
            &traffic,
            &reports(&fleet, &traffic, SOAK_END),
            &Observation::NotDeclared,
            SOAK_END,
            &floor,
        ),
        &[CheckId::NoOldShapeTraffic],
    );

    // A floor below the migration's own soak changes nothing.
    let low = GatePolicy {
        min_soak_seconds: 60,
        ..GatePolicy::default()
    };
    let d = Driver::completed();
    assert_eq!(
        evaluate(
            &d.m,
            &fleet_of(&d),
            &healthy(),
            &reports(&fleet_of(&d), &healthy(), AFTER),
            &Observation::NotDeclared,
            AFTER,
            &low
        )
        .soak_ends_at_ms,
        Some(SOAK_END)
    );
}

/// Suspected inconsistency. Telemetry may name the minute after the server's current one
/// (clients' clocks run a little ahead; the server accepts up to `minute_of(now) + 60 s`).
/// Old-shape traffic in that minute fails the check (`last_old` looks at every minute from the
/// window's start), but the counts in its evidence stop at `now`, so the failing check says
/// "0 old-shape read(s) and 0 write(s)". The evidence should count what the verdict counts.
#[test]
fn old_shape_evidence_counts_what_the_verdict_counts() {
    let d = Driver::completed();
    let now = AFTER + 30_000;
    let traffic = with(healthy(), minute_of(now) + MIN, old_ops(5, 0));
    let report = gate(&d.m, &fleet_of(&d), &traffic, now);
    let old = check(&report, CheckId::NoOldShapeTraffic);
    if !old.passed {
        assert!(
            !old.evidence
                .starts_with("0 old-shape read(s) and 0 write(s)"),
            "the check fails on traffic its evidence does not count: {old:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Rule 7: rules::contract
// ---------------------------------------------------------------------------------------------

fn contract_now(d: &Driver, report: &GateReport, now: i64) -> Result<Migration, DomainError> {
    contract(
        &d.m,
        d.m.version,
        "drop the old username column",
        report,
        Version(d.m.version.0 + 1),
        now,
    )
    .map(|(m, reason)| {
        assert_eq!(reason.as_str(), "drop the old username column");
        m
    })
}

fn refused_by_rule_7(result: Result<Migration, DomainError>) -> String {
    match result {
        Err(
            e @ DomainError::Refused {
                rule: Rule::ContractGate,
                ..
            },
        ) => {
            let shown = e.to_string();
            assert!(shown.starts_with("rule 7: "), "{shown}");
            shown
        }
        other => panic!("expected a refusal by rule 7, got {other:?}"),
    }
}

#[test]
fn contract_refuses_while_the_gate_fails_and_names_the_failures() {
    let d = Driver::completed();
    let now = SOAK_END - 90 * MIN;
    let report = gate(&d.m, &fleet_of(&d), &healthy(), now);
    assert!(!report.passed);
    let message = refused_by_rule_7(contract_now(&d, &report, now));
    assert_eq!(
        message,
        "rule 7: the contract gate fails, so the old shape may not be dropped yet: soak: soak \
         ends 2023-11-16T00:13Z, in 1h 30m"
    );

    // Several failures, all named.
    let traffic = with(healthy(), SOAK_START + 3 * HOUR, old_ops(1, 1));
    let report = gate(&d.m, &Fleet::default(), &traffic, now);
    let message = refused_by_rule_7(contract_now(&d, &report, now));
    assert!(
        message.ends_with(&report.failures())
            && message.contains("soak: soak ends 2023-11-16T00:13Z, in 1h 30m; clients_applied: ")
            && message.contains("; no_old_shape_traffic: find what still uses the old shape"),
        "{message}"
    );
}

#[test]
fn contract_records_contracted_when_the_gate_passes_and_is_final() {
    let d = Driver::completed();
    let report = gate(&d.m, &fleet_of(&d), &healthy(), AFTER);
    assert!(report.passed, "{report:#?}");
    let before = d.m.clone();

    // The usual preconditions of a mutation come first.
    assert!(matches!(
        contract(
            &d.m,
            Version(d.m.version.0 - 1),
            "drop",
            &report,
            Version(99),
            AFTER
        ),
        Err(DomainError::Stale { .. })
    ));
    assert!(matches!(
        contract(&d.m, d.m.version, "  ", &report, Version(99), AFTER),
        Err(DomainError::Refused {
            rule: Rule::Reason,
            ..
        })
    ));
    // Recording contracted any other way is refused by rule 7.
    for op in [
        Operation::Record(Event::Contracted),
        Operation::Advance,
        ramp_stage(Stage::Contracted, 10_000),
    ] {
        let message = refused_by_rule_7(d.try_at(AFTER, op));
        assert!(message.contains("contract"), "{message}");
    }

    let contracted = contract_now(&d, &report, AFTER).expect("the gate passes");
    let next_version = Version(before.version.0 + 1);
    assert_eq!(contracted.stage, Stage::Contracted);
    assert_eq!(contracted.rollout_bp, BasisPoints::FULL);
    assert_eq!(contracted.version, next_version);
    assert_eq!(contracted.updated_at_ms, AFTER);
    assert_eq!(
        contracted.full_since.get(&Stage::Contracted),
        Some(&next_version)
    );
    assert_eq!(
        contracted.full_since.get(&Stage::Complete),
        Some(&d.complete_version())
    );
    assert_eq!(contracted.soak_started_at_ms, before.soak_started_at_ms);
    assert_eq!(contracted.live_window, before.live_window);
    assert_eq!(contracted.backfill, before.backfill);
    assert_eq!(contracted.salt, before.salt);

    // Final: contract again, and every operation, are refused by rule 7.
    let done = Driver { m: contracted };
    let message = refused_by_rule_7(contract_now(&done, &report, AFTER + MIN));
    assert_eq!(
        message,
        "rule 7: the migration is contracted, which is final: nothing can change it"
    );
    let ops = [
        ramp(10_000),
        ramp(0),
        ramp_stage(Stage::Complete, 5_000),
        Operation::Advance,
        Operation::Retreat,
        Operation::Record(Event::ExpandApplied),
        Operation::Record(Event::BackfillStarted),
        Operation::Record(Event::BackfillProgress {
            rows_done: 1,
            rows_total_estimate: 2,
        }),
        Operation::Record(Event::BackfillComplete),
        Operation::Record(Event::OldShapeRepaired),
        Operation::Record(Event::Contracted),
    ];
    for op in ops {
        let message = refused_by_rule_7(done.try_at(AFTER + MIN, op));
        assert_eq!(
            message, "rule 7: the migration is contracted, which is final: nothing can change it",
            "{op:?}"
        );
    }
}
