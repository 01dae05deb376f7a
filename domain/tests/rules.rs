//! Integration tests of `switchyard_domain::rules::apply`, through the public API only.
//!
//! The first half walks each safety rule by hand: the refusal (rule and "what would allow it"),
//! then the same operation once the precondition holds. The second half is a proptest that runs
//! random operation sequences against an independent model of the README's safety rules and checks the
//! invariants after every step.

use std::collections::BTreeMap;

use proptest::prelude::*;
use switchyard_domain::rules::apply;
use switchyard_domain::{
    BackfillStatus, BasisPoints, DomainError, Event, Fleet, Front, LiveInstance, Migration,
    MigrationKey, NewMigration, Operation, Rule, Stage, Version,
};

const NOW: i64 = 1_700_000_000_000;

fn bp(v: u32) -> BasisPoints {
    BasisPoints::new(v).unwrap()
}

fn new_migration(has_backfill: bool, expected_services: &[&str]) -> Migration {
    Migration::create(
        NewMigration {
            key: MigrationKey::parse("users.username-to-handle").unwrap(),
            description: "move usernames to handles".to_owned(),
            owner: "identity-team".to_owned(),
            entity_kind: "user_id".to_owned(),
            soak_seconds: 7 * 24 * 3600,
            expected_services: expected_services.iter().map(|s| (*s).to_owned()).collect(),
            has_backfill,
            shadow_sample: BasisPoints::FULL,
            database: Default::default(),
            retire_probation_seconds: None,
        },
        0x5eed_cafe,
        Version(1),
        0,
    )
}

fn instance(service: &str, id: &str, applied: u64) -> LiveInstance {
    LiveInstance {
        service: service.to_owned(),
        instance_id: id.to_owned(),
        applied_version: Version(applied),
    }
}

fn fleet(instances: &[(&str, &str, u64)]) -> Fleet {
    Fleet {
        live: instances
            .iter()
            .map(|(s, id, v)| instance(s, id, *v))
            .collect(),
    }
}

fn set(stage: Option<Stage>, rollout: u32) -> Operation {
    Operation::SetRollout {
        stage,
        rollout: bp(rollout),
    }
}

fn ramp(rollout: u32) -> Operation {
    set(None, rollout)
}

/// Holds one migration and applies operations to it with the current version as expected.
struct Driver {
    m: Migration,
}

impl Driver {
    fn new(has_backfill: bool, expected_services: &[&str]) -> Self {
        Self {
            m: new_migration(has_backfill, expected_services),
        }
    }

    fn next_version(&self) -> Version {
        Version(self.m.version.0 + 1)
    }

    fn try_op(&self, op: Operation, fleet: &Fleet) -> Result<Migration, DomainError> {
        apply(
            &self.m,
            self.m.version,
            "hand-written test",
            &op,
            fleet,
            self.next_version(),
            NOW,
        )
        .map(|(m, _)| m)
    }

    /// A fleet in which every expected service has one instance that applied the current
    /// version: it satisfies every "applied by every live instance" precondition.
    fn caught_up_fleet(&self) -> Fleet {
        Fleet {
            live: self
                .m
                .expected_services
                .iter()
                .map(|s| instance(s, &format!("{s}-1"), self.m.version.0))
                .collect(),
        }
    }

    fn ok_with(&mut self, op: Operation, fleet: &Fleet) -> &Migration {
        let expected_version = self.next_version();
        match self.try_op(op, fleet) {
            Ok(m) => {
                assert_eq!(m.version, expected_version);
                self.m = m;
                &self.m
            }
            Err(e) => panic!(
                "{op:?} at {:?} {} was refused: {e}",
                self.m.stage, self.m.rollout_bp
            ),
        }
    }

    fn ok(&mut self, op: Operation) -> &Migration {
        let fleet = self.caught_up_fleet();
        self.ok_with(op, &fleet)
    }

    /// Asserts `op` is refused by `rule` and returns the message.
    fn refused_with(&self, op: Operation, fleet: &Fleet, rule: Rule) -> String {
        match self.try_op(op, fleet) {
            Err(DomainError::Refused { rule: r, message }) if r == rule => {
                let shown = DomainError::Refused {
                    rule,
                    message: message.clone(),
                }
                .to_string();
                assert!(
                    shown.starts_with(&format!("rule {}: ", rule.number())),
                    "{shown}"
                );
                message
            }
            other => panic!(
                "{op:?} at {:?} {}: expected a refusal by {rule}, got {other:?}",
                self.m.stage, self.m.rollout_bp
            ),
        }
    }

    fn refused(&self, op: Operation, rule: Rule) -> String {
        self.refused_with(op, &self.caught_up_fleet(), rule)
    }

    fn not_applicable(&self, op: Operation) -> String {
        match self.try_op(op, &self.caught_up_fleet()) {
            Err(DomainError::NotApplicable(message)) => message,
            other => panic!(
                "{op:?} at {:?} {}: expected NotApplicable, got {other:?}",
                self.m.stage, self.m.rollout_bp
            ),
        }
    }

    fn front(&self) -> (Stage, u32) {
        (self.m.stage, self.m.rollout_bp.get())
    }

    /// Walks the migration forward, with a caught-up fleet, until its front is `(stage, 100%)`.
    fn drive_to_full(&mut self, stage: Stage) {
        if !self.m.expand_applied {
            self.ok(Operation::Record(Event::ExpandApplied));
        }
        while self.front() != (stage, 10_000) {
            assert!(self.m.stage <= stage, "driven past {stage}");
            if self.m.rollout_bp.is_full() {
                if self.m.stage == Stage::DualWrite
                    && self.m.backfill.status == BackfillStatus::NotStarted
                {
                    self.ok(Operation::Record(Event::BackfillStarted));
                    self.ok(Operation::Record(Event::BackfillComplete));
                }
                self.ok(Operation::Advance);
            } else {
                self.ok(ramp(10_000));
            }
        }
    }
}

fn contains(message: &str, phrase: &str) {
    assert!(
        message.contains(phrase),
        "message {message:?} does not contain {phrase:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 1: one step at a time.

#[test]
fn rule1_advance_needs_the_current_stage_at_100_percent() {
    let mut d = Driver::new(false, &[]);
    d.ok(Operation::Record(Event::ExpandApplied));
    d.ok(Operation::Advance);
    assert_eq!(d.front(), (Stage::DualWrite, 0));
    d.ok(ramp(5_000));

    let msg = d.refused(Operation::Advance, Rule::OneStep);
    contains(&msg, "dual_write at 50%");
    contains(&msg, "ramp dual_write to 100% first");

    d.ok(ramp(10_000));
    d.ok(Operation::Advance);
    assert_eq!(d.front(), (Stage::Shadow, 0));
}

#[test]
fn rule1_retreat_needs_the_current_stage_at_0_percent() {
    let mut d = Driver::new(false, &[]);
    d.drive_to_full(Stage::Shadow);
    d.ok(ramp(1));

    let msg = d.refused(Operation::Retreat, Rule::OneStep);
    contains(&msg, "ramp shadow down to 0% first");

    d.ok(ramp(0));
    d.ok(Operation::Retreat);
    assert_eq!(d.front(), (Stage::DualWrite, 10_000));
    d.ok(ramp(0));
    d.ok(Operation::Retreat);
    assert_eq!(d.front(), (Stage::Off, 10_000));
}

#[test]
fn rule1_set_rollout_cannot_skip_a_stage() {
    let mut d = Driver::new(false, &[]);
    d.drive_to_full(Stage::DualWrite);

    // Two stages ahead: refused even at 100%.
    let msg = d.refused(set(Some(Stage::Live), 10), Rule::OneStep);
    contains(&msg, "stages move one step at a time");
    contains(&msg, "advance to shadow once dual_write is at 100%");

    // The next stage, but the current one is not at 100%.
    d.ok(ramp(9_999));
    let msg = d.refused(set(Some(Stage::Shadow), 10), Rule::OneStep);
    contains(&msg, "advance to shadow once dual_write is at 100%");

    d.ok(ramp(10_000));
    d.ok(set(Some(Stage::Shadow), 10));
    assert_eq!(d.front(), (Stage::Shadow, 10));

    // The previous stage, but the current one is not at 0%.
    let msg = d.refused(set(Some(Stage::DualWrite), 3_000), Rule::OneStep);
    contains(&msg, "step back to dual_write once shadow is at 0%");
    // Two stages back.
    let msg = d.refused(set(Some(Stage::Off), 0), Rule::OneStep);
    contains(&msg, "step back to dual_write once shadow is at 0%");

    d.ok(ramp(0));
    d.ok(set(Some(Stage::DualWrite), 3_000));
    assert_eq!(d.front(), (Stage::DualWrite, 3_000));
}

// ---------------------------------------------------------------------------------------------
// Rule 2: leaving `off` needs the expand DDL.

#[test]
fn rule2_leaving_off_needs_expand_applied() {
    let mut d = Driver::new(false, &[]);

    let msg = d.refused(set(Some(Stage::DualWrite), 5_000), Rule::ExpandFirst);
    contains(&msg, "expand DDL recorded as applied");
    contains(&msg, "record users.username-to-handle expand-applied");

    // Even `(dual_write, 0%)`, which routes like `off`, shows a stage past off: refused too.
    let msg = d.refused(Operation::Advance, Rule::ExpandFirst);
    contains(&msg, "expand-applied");
    assert_eq!(d.front(), (Stage::Off, 10_000));

    d.ok(Operation::Record(Event::ExpandApplied));
    assert!(d.m.expand_applied);
    d.ok(Operation::Advance);
    assert_eq!(d.front(), (Stage::DualWrite, 0));
    d.ok(ramp(1));
    assert_eq!(d.front(), (Stage::DualWrite, 1));

    // Recording it twice is not a rule matter.
    d.not_applicable(Operation::Record(Event::ExpandApplied));
}

// ---------------------------------------------------------------------------------------------
// Rule 3: a backfill starts only once every live client dual-writes.

#[test]
fn rule3_backfill_needs_dual_write_at_100_percent() {
    let mut d = Driver::new(true, &[]);
    let started = Operation::Record(Event::BackfillStarted);

    let msg = d.refused(started, Rule::BackfillAfterDualWrite);
    contains(&msg, "ramp dual_write to 100% first");

    d.ok(Operation::Record(Event::ExpandApplied));
    d.ok(Operation::Advance);
    d.ok(ramp(9_999));
    let msg = d.refused(started, Rule::BackfillAfterDualWrite);
    contains(&msg, "dual_write at 99.99%");
    contains(&msg, "ramp dual_write to 100% first");

    d.ok(ramp(10_000));
    let m = d.ok(started).clone();
    assert_eq!(m.backfill.status, BackfillStatus::Running);
    assert_eq!(m.backfill.started_version, Some(m.version));
}

#[test]
fn rule3_backfill_needs_every_live_instance_and_expected_service() {
    let mut d = Driver::new(true, &["api", "worker"]);
    let started = Operation::Record(Event::BackfillStarted);
    d.ok(Operation::Record(Event::ExpandApplied));
    d.ok(Operation::Advance);
    d.ok(ramp(10_000));
    let since = d.m.version.0;
    assert_eq!(d.m.full_since.get(&Stage::DualWrite), Some(&Version(since)));
    // A ramp to where the front is changes nothing, the bar included.
    assert!(matches!(
        d.try_op(ramp(10_000), &d.caught_up_fleet()),
        Err(DomainError::Unchanged(_))
    ));
    let v = d.m.version.0;
    assert_eq!(v, since);

    // An api instance lags behind and worker has no live instance.
    let msg = d.refused_with(
        started,
        &fleet(&[("api", "api-1", since - 1)]),
        Rule::BackfillAfterDualWrite,
    );
    contains(
        &msg,
        &format!("instance api-1 of api has applied version {}", since - 1),
    );
    contains(&msg, &format!("needs {since} or later"));
    contains(&msg, "expected service worker has no live instance");

    // Every expected service is live but one worker instance lags.
    let msg = d.refused_with(
        started,
        &fleet(&[
            ("api", "api-1", since),
            ("worker", "w-1", v),
            ("worker", "w-2", since - 1),
        ]),
        Rule::BackfillAfterDualWrite,
    );
    contains(&msg, "instance w-2 of worker");
    assert!(!msg.contains("api-1"), "{msg}");

    // An instance of a service nobody listed still counts as a live writer.
    let msg = d.refused_with(
        started,
        &fleet(&[
            ("api", "api-1", since),
            ("worker", "w-1", since),
            ("cron", "c-1", 0),
        ]),
        Rule::BackfillAfterDualWrite,
    );
    contains(&msg, "instance c-1 of cron");

    // Everyone applied the version at which dual_write reached 100% (or later).
    let m = d
        .ok_with(
            started,
            &fleet(&[
                ("api", "api-1", since),
                ("worker", "w-1", v),
                ("cron", "c-1", since),
            ]),
        )
        .clone();
    assert_eq!(m.backfill.status, BackfillStatus::Running);
}

#[test]
fn a_large_waiting_fleet_is_named_in_part_and_counted() {
    // 20,000 lagging instances, listed out of order: the first five by service and instance id
    // are named, the rest counted; expected services without a live instance still follow.
    let live: Vec<LiveInstance> = (0..20_000)
        .rev()
        .map(|i| instance("api", &format!("api-{i:05}"), 1))
        .chain([instance("worker", "w-1", 9)])
        .collect();
    let waiting = Fleet { live: live.clone() }.not_applied(Version(9), &["cron".to_owned()]);
    assert_eq!(
        waiting,
        vec![
            "instance api-00000 of api has applied version 1, needs 9 or later",
            "instance api-00001 of api has applied version 1, needs 9 or later",
            "instance api-00002 of api has applied version 1, needs 9 or later",
            "instance api-00003 of api has applied version 1, needs 9 or later",
            "instance api-00004 of api has applied version 1, needs 9 or later",
            "and 19995 more instances",
            "expected service cron has no live instance",
        ]
    );
    // Exactly five: all named, nothing counted; six: one more.
    let five = fleet(&[
        ("a", "1", 0),
        ("a", "2", 0),
        ("a", "3", 0),
        ("a", "4", 0),
        ("a", "5", 0),
    ]);
    let named = five.not_applied(Version(1), &[]);
    assert_eq!(named.len(), 5);
    assert!(
        named.iter().all(|w| w.starts_with("instance ")),
        "{named:?}"
    );
    let mut six = five.clone();
    six.live.push(instance("a", "0", 0));
    let named = six.not_applied(Version(1), &[]);
    assert_eq!(
        named.first().map(String::as_str),
        Some("instance 0 of a has applied version 0, needs 1 or later")
    );
    assert_eq!(
        named.last().map(String::as_str),
        Some("and 1 more instance")
    );

    // Rule 3's refusal stays short.
    let mut d = Driver::new(true, &[]);
    d.ok(Operation::Record(Event::ExpandApplied));
    d.ok(Operation::Advance);
    d.ok(ramp(10_000));
    let since = d.m.version.0;
    let lagging: Vec<LiveInstance> = live
        .into_iter()
        .map(|i| LiveInstance {
            applied_version: Version(since - 1),
            ..i
        })
        .collect();
    let msg = d.refused_with(
        Operation::Record(Event::BackfillStarted),
        &Fleet { live: lagging },
        Rule::BackfillAfterDualWrite,
    );
    contains(&msg, "instance api-00004 of api");
    contains(&msg, "and 19996 more instances");
    assert!(!msg.contains("api-00005"), "{msg}");
    assert!(msg.len() < 1_000, "{} bytes", msg.len());
}

#[test]
fn rule3_stepping_back_from_100_percent_resets_the_applied_bar() {
    let mut d = Driver::new(true, &["api"]);
    let started = Operation::Record(Event::BackfillStarted);
    d.ok(Operation::Record(Event::ExpandApplied));
    d.ok(Operation::Advance);
    d.ok(ramp(10_000));
    let first = d.m.version.0;
    d.ok(ramp(9_000));
    assert_eq!(d.m.full_since.get(&Stage::DualWrite), None);
    d.ok(ramp(10_000));
    let second = d.m.version.0;
    assert_eq!(
        d.m.full_since.get(&Stage::DualWrite),
        Some(&Version(second))
    );

    let msg = d.refused_with(
        started,
        &fleet(&[("api", "a", first)]),
        Rule::BackfillAfterDualWrite,
    );
    contains(&msg, &format!("needs {second} or later"));
    d.ok_with(started, &fleet(&[("api", "a", second)]));
}

#[test]
fn backfill_events_follow_the_backfill_lifecycle() {
    let d = Driver::new(false, &[]);
    for event in [
        Event::BackfillStarted,
        Event::BackfillComplete,
        Event::BackfillProgress {
            rows_done: 1,
            rows_total_estimate: 2,
        },
    ] {
        contains(
            &d.not_applicable(Operation::Record(event)),
            "without a backfill",
        );
    }

    let mut d = Driver::new(true, &[]);
    d.not_applicable(Operation::Record(Event::BackfillComplete));
    d.drive_to_full(Stage::DualWrite);
    d.ok(Operation::Record(Event::BackfillStarted));
    d.ok(Operation::Record(Event::BackfillProgress {
        rows_done: 10,
        rows_total_estimate: 100,
    }));
    assert_eq!(
        (d.m.backfill.rows_done, d.m.backfill.rows_total_estimate),
        (10, 100)
    );
    d.not_applicable(Operation::Record(Event::BackfillStarted));
    let m = d.ok(Operation::Record(Event::BackfillComplete)).clone();
    assert_eq!(m.backfill.status, BackfillStatus::Complete);
    assert_eq!(m.backfill.completed_version, Some(m.version));
    d.not_applicable(Operation::Record(Event::BackfillComplete));
    d.not_applicable(Operation::Record(Event::BackfillStarted));
}

// ---------------------------------------------------------------------------------------------
// Rule 4: shadow needs the backfill complete.

#[test]
fn rule4_shadow_needs_the_backfill_complete() {
    let mut d = Driver::new(true, &[]);
    d.ok(Operation::Record(Event::ExpandApplied));
    d.ok(Operation::Advance);
    d.ok(ramp(10_000));

    let msg = d.refused(set(Some(Stage::Shadow), 1), Rule::ShadowAfterBackfill);
    contains(&msg, "backfill recorded complete (it is not started)");
    contains(&msg, "record backfill-complete");

    // Even `(shadow, 0%)`, the same traffic as `(dual_write, 100%)`, shows a shadow stage.
    d.refused(Operation::Advance, Rule::ShadowAfterBackfill);
    assert_eq!(d.front(), (Stage::DualWrite, 10_000));

    d.ok(Operation::Record(Event::BackfillStarted));
    let msg = d.refused(Operation::Advance, Rule::ShadowAfterBackfill);
    contains(&msg, "(it is running)");
    contains(&msg, "record backfill-complete");

    d.ok(Operation::Record(Event::BackfillComplete));
    d.ok(Operation::Advance);
    assert_eq!(d.front(), (Stage::Shadow, 0));
    d.ok(ramp(1));
    assert_eq!(d.front(), (Stage::Shadow, 1));
}

#[test]
fn rule3_a_running_backfill_keeps_every_entity_dual_writing() {
    let mut d = Driver::new(true, &[]);
    d.drive_to_full(Stage::DualWrite);
    d.ok(Operation::Record(Event::BackfillStarted));
    let msg = d.refused(ramp(9_999), Rule::BackfillAfterDualWrite);
    contains(&msg, "while the backfill runs");
    assert_eq!(d.front(), (Stage::DualWrite, 10_000));

    d.ok(Operation::Record(Event::BackfillComplete));
    d.ok(ramp(9_999));
    assert_eq!(d.front(), (Stage::DualWrite, 9_999));
}

#[test]
fn backfills_pause_resume_and_cancel_while_running() {
    let mut d = Driver::new(true, &[]);
    d.drive_to_full(Stage::DualWrite);
    contains(
        &d.not_applicable(Operation::Record(Event::BackfillPaused)),
        "not running",
    );
    d.ok(Operation::Record(Event::BackfillStarted));
    d.ok(Operation::Record(Event::BackfillProgress {
        rows_done: 10,
        rows_total_estimate: 100,
    }));
    assert!(
        d.ok(Operation::Record(Event::BackfillPaused))
            .backfill
            .paused
    );
    contains(
        &d.not_applicable(Operation::Record(Event::BackfillPaused)),
        "already paused",
    );
    assert!(
        !d.ok(Operation::Record(Event::BackfillResumed))
            .backfill
            .paused
    );
    contains(
        &d.not_applicable(Operation::Record(Event::BackfillResumed)),
        "not paused",
    );
    let cancelled = d
        .ok(Operation::Record(Event::BackfillCancelled))
        .backfill
        .clone();
    assert_eq!(cancelled.status, BackfillStatus::NotStarted);
    assert_eq!((cancelled.rows_done, cancelled.started_version), (0, None));
    // Cancelled, it no longer holds dual_write at 100% (rule 3's run-time part), and can start again.
    d.ok(ramp(9_999));
    d.ok(ramp(10_000));
    d.ok(Operation::Record(Event::BackfillStarted));
}

#[test]
fn rule4_does_not_apply_without_a_backfill() {
    let mut d = Driver::new(false, &[]);
    d.drive_to_full(Stage::DualWrite);
    d.ok(set(Some(Stage::Shadow), 10_000));
    assert_eq!(d.m.backfill.status, BackfillStatus::None);
}

// ---------------------------------------------------------------------------------------------
// Rule 5: complete above 0% needs rampdown at 100% applied by every live client.

#[test]
fn rule5_complete_needs_rampdown_at_100_percent() {
    let mut d = Driver::new(true, &["api"]);
    d.drive_to_full(Stage::Live);
    d.ok(Operation::Advance);
    d.ok(ramp(9_999));
    let msg = d.refused(set(Some(Stage::Complete), 1), Rule::OneStep);
    contains(&msg, "advance to complete once rampdown is at 100%");
    d.ok(ramp(10_000));
    d.ok(set(Some(Stage::Complete), 1));
    assert_eq!(d.front(), (Stage::Complete, 1));
}

#[test]
fn rule5_complete_needs_rampdown_applied_by_every_live_client() {
    let mut d = Driver::new(false, &["api", "worker"]);
    d.drive_to_full(Stage::Rampdown);
    let since = d.m.version.0;
    d.ok(Operation::Advance);
    assert_eq!(d.front(), (Stage::Complete, 0));
    assert!(!d.m.old_shape_stale, "nobody is at complete yet");

    let msg = d.refused_with(
        ramp(100),
        &fleet(&[("api", "a", since)]),
        Rule::CompleteAfterRampdown,
    );
    contains(&msg, "needs rampdown at 100% applied by every live client");
    contains(&msg, "expected service worker has no live instance");

    let msg = d.refused_with(
        ramp(100),
        &fleet(&[("api", "a", since), ("worker", "w", since - 1)]),
        Rule::CompleteAfterRampdown,
    );
    contains(
        &msg,
        &format!(
            "instance w of worker has applied version {}, needs {since} or later",
            since - 1
        ),
    );

    // The bar is the version at which rampdown reached 100%, not the advance after it.
    let ready = fleet(&[("api", "a", since), ("worker", "w", since)]);
    d.ok_with(ramp(100), &ready);
    assert_eq!(d.front(), (Stage::Complete, 100));
    assert!(d.m.old_shape_stale);

    // Ramping further stops more old writes: checked again.
    d.refused_with(
        ramp(10_000),
        &fleet(&[("api", "a", since)]),
        Rule::CompleteAfterRampdown,
    );
    d.ok_with(ramp(10_000), &ready);
    // Ramping down is always allowed.
    d.ok_with(ramp(50), &Fleet::default());
}

#[test]
fn rule5_direct_jump_from_rampdown_to_complete_is_checked() {
    let mut d = Driver::new(false, &["api"]);
    d.drive_to_full(Stage::Rampdown);
    let since = d.m.version.0;
    d.refused_with(
        set(Some(Stage::Complete), 10_000),
        &fleet(&[("api", "a", since - 1)]),
        Rule::CompleteAfterRampdown,
    );
    d.ok_with(
        set(Some(Stage::Complete), 10_000),
        &fleet(&[("api", "a", since)]),
    );
    assert_eq!(d.front(), (Stage::Complete, 10_000));
}

// ---------------------------------------------------------------------------------------------
// Rule 6: no stale reads once entities have been at complete.

/// A migration whose front went to complete at 10% and came back to live at 100%.
fn stale_at_live_full() -> Driver {
    let mut d = Driver::new(false, &[]);
    d.drive_to_full(Stage::Rampdown);
    d.ok(set(Some(Stage::Complete), 1_000));
    assert!(d.m.old_shape_stale);
    d.ok(ramp(0));
    d.ok(Operation::Retreat);
    d.ok(ramp(0));
    assert_eq!(d.front(), (Stage::Rampdown, 0));
    d.ok(Operation::Retreat);
    assert_eq!(d.front(), (Stage::Live, 10_000));
    assert!(d.m.old_shape_stale);
    d
}

#[test]
fn rule6_no_old_values_after_complete_until_repaired() {
    let mut d = stale_at_live_full();

    let msg = d.refused(ramp(9_999), Rule::NoStaleReads);
    contains(&msg, "old shape is stale");
    contains(&msg, "live at 100% or later");
    contains(&msg, "record old-shape-repaired");
    d.refused(ramp(0), Rule::NoStaleReads);

    d.ok(Operation::Record(Event::OldShapeRepaired));
    assert!(
        !d.m.old_shape_stale,
        "recording old_shape_repaired was accepted but the old shape is still marked stale"
    );
    d.ok(ramp(9_999));
    assert_eq!(d.front(), (Stage::Live, 9_999));
}

#[test]
fn rule6_repair_needs_complete_at_0_percent() {
    let mut d = Driver::new(false, &[]);
    d.drive_to_full(Stage::Rampdown);
    d.ok(set(Some(Stage::Complete), 1_000));

    let msg = d.not_applicable(Operation::Record(Event::OldShapeRepaired));
    contains(&msg, "ramp complete down to 0% first");

    d.ok(ramp(0));
    d.ok(Operation::Record(Event::OldShapeRepaired));
    assert!(!d.m.old_shape_stale);
    // Retreating all the way back is now allowed.
    d.ok(Operation::Retreat);
    d.ok(ramp(0));
    d.ok(Operation::Retreat);
    d.ok(ramp(0));
    assert_eq!(d.front(), (Stage::Live, 0));
}

#[test]
fn rule6_repair_waits_for_clients_writing_the_old_shape_again() {
    let mut d = Driver::new(false, &["api"]);
    d.drive_to_full(Stage::Rampdown);
    d.ok(set(Some(Stage::Complete), 1_000));
    let resumed = d.ok(ramp(0)).version;
    assert_eq!(d.m.old_writes_resumed_since, Some(resumed));
    let lagging = Fleet {
        live: vec![LiveInstance {
            service: "api".into(),
            instance_id: "api-1".into(),
            applied_version: Version(resumed.0 - 1),
        }],
    };
    let msg = d.refused_with(
        Operation::Record(Event::OldShapeRepaired),
        &lagging,
        Rule::NoStaleReads,
    );
    contains(&msg, "writes the old shape again");
    contains(&msg, "api-1");
    d.ok(Operation::Record(Event::OldShapeRepaired));
    assert!(!d.m.old_shape_stale);
}

#[test]
fn rule6_repair_needs_a_stale_old_shape() {
    let mut d = Driver::new(false, &[]);
    contains(
        &d.not_applicable(Operation::Record(Event::OldShapeRepaired)),
        "not stale",
    );
    // complete at 0% is everyone at rampdown: nobody was at complete, nothing is stale.
    d.drive_to_full(Stage::Rampdown);
    d.ok(Operation::Advance);
    assert!(!d.m.old_shape_stale);
    d.not_applicable(Operation::Record(Event::OldShapeRepaired));
    d.ok(Operation::Retreat);
    d.ok(ramp(0));
    d.ok(Operation::Retreat);
    d.ok(ramp(0));
    assert_eq!(d.front(), (Stage::Live, 0));
}

#[test]
fn rule6_staleness_comes_back_with_complete() {
    let mut d = stale_at_live_full();
    d.ok(Operation::Record(Event::OldShapeRepaired));
    d.ok(Operation::Advance);
    d.ok(ramp(10_000));
    d.ok(Operation::Advance);
    d.ok(ramp(1));
    assert!(d.m.old_shape_stale);
    d.ok(ramp(0));
    d.ok(Operation::Retreat);
    d.ok(ramp(0));
    d.ok(Operation::Retreat);
    d.refused(ramp(5_000), Rule::NoStaleReads);
}

// ---------------------------------------------------------------------------------------------
// Rule 7: `contracted` only through the gate.

#[test]
fn rule7_contracted_is_not_reachable_without_the_gate() {
    let mut d = Driver::new(false, &[]);
    let msg = d.refused(Operation::Record(Event::Contracted), Rule::ContractGate);
    contains(&msg, "contract gate");

    d.drive_to_full(Stage::Complete);
    assert_eq!(d.front(), (Stage::Complete, 10_000));
    let msg = d.refused(Operation::Advance, Rule::ContractGate);
    contains(&msg, "record contracted");
    contains(&msg, "contract gate passes");
    let msg = d.refused(set(Some(Stage::Contracted), 10_000), Rule::ContractGate);
    contains(&msg, "record contracted");
    let msg = d.refused(Operation::Record(Event::Contracted), Rule::ContractGate);
    contains(&msg, "contract gate");
    // Not at 100% either.
    d.ok(ramp(5_000));
    d.refused(Operation::Advance, Rule::ContractGate);
}

#[test]
fn rule7_contracted_is_final() {
    let mut m = new_migration(false, &[]);
    m.stage = Stage::Contracted;
    let d = Driver { m };
    for op in [
        Operation::Retreat,
        Operation::Advance,
        ramp(0),
        set(Some(Stage::Complete), 0),
        Operation::Record(Event::OldShapeRepaired),
        Operation::Record(Event::ExpandApplied),
    ] {
        contains(&d.refused(op, Rule::ContractGate), "final");
    }
}

// ---------------------------------------------------------------------------------------------
// Rule 8: expected version.

#[test]
fn rule8_stale_expected_version_is_refused_with_the_current_version() {
    let mut d = Driver::new(false, &[]);
    d.ok(Operation::Record(Event::ExpandApplied));
    let current = d.m.version;
    let before = d.m.clone();
    for expected in [Version(current.0 - 1), Version(current.0 + 1), Version(0)] {
        let err = apply(
            &d.m,
            expected,
            "ramp",
            &Operation::Advance,
            &Fleet::default(),
            d.next_version(),
            NOW,
        )
        .unwrap_err();
        assert_eq!(err, DomainError::Stale { expected, current });
        contains(
            &err.to_string(),
            "re-read it and retry with the current version",
        );
    }
    assert_eq!(d.m, before);
    let (m, _) = apply(
        &d.m,
        current,
        "ramp",
        &Operation::Advance,
        &Fleet::default(),
        d.next_version(),
        NOW,
    )
    .unwrap();
    assert_eq!(m.stage, Stage::DualWrite);
    assert_eq!(m.version, d.next_version());
    assert_eq!(m.updated_at_ms, NOW);
}

// ---------------------------------------------------------------------------------------------
// Rule 9: reason.

#[test]
fn rule9_every_change_needs_a_reason() {
    let m = new_migration(false, &[]);
    let too_long = "x".repeat(2_001);
    for reason in ["", " ", "\t\n  ", too_long.as_str()] {
        let err = apply(
            &m,
            m.version,
            reason,
            &Operation::Record(Event::ExpandApplied),
            &Fleet::default(),
            Version(2),
            NOW,
        )
        .unwrap_err();
        match err {
            DomainError::Refused {
                rule: Rule::Reason,
                message,
            } => contains(&message, "every change needs a reason"),
            other => panic!("reason {reason:?}: expected rule 9, got {other:?}"),
        }
    }
    let (next, reason) = apply(
        &m,
        m.version,
        "  expand ran in CHG-42 \n",
        &Operation::Record(Event::ExpandApplied),
        &Fleet::default(),
        Version(2),
        NOW,
    )
    .unwrap();
    assert!(next.expand_applied);
    assert_eq!(reason.as_str(), "expand ran in CHG-42");
}

// ---------------------------------------------------------------------------------------------
// Property test: random operation sequences against a model of the README's safety rules.

const SERVICES: [&str; 2] = ["api", "worker"];

/// An operation, or an intent resolved against the state at the time of the step so that
/// sequences get deep into the stages (an all-random sequence rarely leaves `dual_write`).
#[derive(Debug, Clone)]
enum Action {
    Op(Operation),
    /// The natural next step forward: record expand, run the backfill, ramp to 100%, advance.
    Forward,
    /// Ramp down to 0%, or step back when already there.
    Backward,
}

impl Action {
    fn resolve(&self, m: &Migration) -> Operation {
        let status = m.backfill.status;
        match self {
            Action::Op(op) => *op,
            Action::Forward if !m.expand_applied => Operation::Record(Event::ExpandApplied),
            Action::Forward
                if m.stage == Stage::DualWrite
                    && m.rollout_bp.is_full()
                    && status == BackfillStatus::NotStarted =>
            {
                Operation::Record(Event::BackfillStarted)
            }
            Action::Forward if status == BackfillStatus::Running => {
                Operation::Record(Event::BackfillComplete)
            }
            Action::Forward if !m.rollout_bp.is_full() || m.stage == Stage::Complete => {
                ramp(10_000)
            }
            Action::Forward => Operation::Advance,
            Action::Backward if !m.rollout_bp.is_zero() => ramp(0),
            Action::Backward => Operation::Retreat,
        }
    }
}

#[derive(Debug, Clone)]
struct Step {
    action: Action,
    /// (service index, applied version relative to the current version).
    fleet: Vec<(usize, i64)>,
    /// `None`: the current version; `Some(d)`: the current version plus `d` (never 0).
    stale_by: Option<i64>,
    blank_reason: bool,
    version_gap: u64,
}

fn rollout_strategy() -> impl Strategy<Value = BasisPoints> {
    prop_oneof![
        3 => Just(0u32),
        5 => Just(10_000u32),
        2 => 1u32..10_000,
    ]
    .prop_map(bp)
}

fn op_strategy() -> impl Strategy<Value = Operation> {
    let stage = prop_oneof![
        3 => Just(None),
        2 => prop::sample::select(Stage::ALL.to_vec()).prop_map(Some),
    ];
    let event = prop_oneof![
        Just(Event::ExpandApplied),
        Just(Event::BackfillStarted),
        (0u64..1_000, 0u64..1_000).prop_map(|(rows_done, rows_total_estimate)| {
            Event::BackfillProgress {
                rows_done,
                rows_total_estimate,
            }
        }),
        Just(Event::BackfillComplete),
        Just(Event::BackfillPaused),
        Just(Event::BackfillResumed),
        Just(Event::BackfillCancelled),
        Just(Event::OldShapeRepaired),
        Just(Event::Contracted),
    ];
    prop_oneof![
        5 => (stage, rollout_strategy())
            .prop_map(|(stage, rollout)| Operation::SetRollout { stage, rollout }),
        4 => Just(Operation::Advance),
        1 => Just(Operation::Retreat),
        3 => event.prop_map(Operation::Record),
    ]
}

fn step_strategy(forward: u32, backward: u32) -> impl Strategy<Value = Step> {
    let instance = (
        0..SERVICES.len(),
        prop_oneof![6 => Just(0i64), 2 => -3i64..0, 1 => Just(1i64)],
    );
    let action = prop_oneof![
        6 => op_strategy().prop_map(Action::Op),
        forward => Just(Action::Forward),
        backward => Just(Action::Backward),
    ];
    (
        action,
        prop::collection::vec(instance, 0..=3),
        prop_oneof![
            12 => Just(None),
            1 => prop_oneof![-3i64..0, 1i64..3].prop_map(Some),
        ],
        prop::bool::weighted(0.04),
        1u64..=3,
    )
        .prop_map(
            |(action, fleet, stale_by, blank_reason, version_gap)| Step {
                action,
                fleet,
                stale_by,
                blank_reason,
                version_gap,
            },
        )
}

/// Up to 60 steps in runs that lean forward or backward, so sequences both reach `complete`
/// and walk back from it.
fn steps_strategy() -> impl Strategy<Value = Vec<Step>> {
    let run = prop_oneof![
        3 => prop::collection::vec(step_strategy(6, 1), 1..=20),
        1 => prop::collection::vec(step_strategy(1, 6), 1..=12),
    ];
    prop::collection::vec(run, 0..=6).prop_map(|runs| {
        let mut steps: Vec<Step> = runs.into_iter().flatten().collect();
        steps.truncate(60);
        steps
    })
}

/// What the model expects of an operation.
#[derive(Debug)]
enum Want {
    /// Accepted, giving this record (version and updated time still to be set).
    Accept(Box<Migration>),
    /// Refused by one of these rules (several may be broken at once).
    Refuse(Vec<Rule>),
    NotApplicable,
}

/// Applied by every live instance, with every expected service live (README, "Safety rules").
fn fleet_applied(fleet: &Fleet, needed: Version, expected_services: &[String]) -> bool {
    fleet.live.iter().all(|i| i.applied_version >= needed)
        && expected_services
            .iter()
            .all(|s| fleet.live.iter().any(|i| &i.service == s))
}

/// Share of entities at `complete` (old writes stopped), in basis points.
fn share_complete(front: Front) -> u32 {
    if front.stage == Stage::Complete {
        front.rollout.get()
    } else {
        0
    }
}

/// The model of a migration's derived facts, kept independently of the record.
#[derive(Debug, Clone)]
struct Model {
    /// Some entity was at complete and no repair was recorded since.
    stale: bool,
    /// For each stage, the version since which every entity is at it or beyond.
    full_since: BTreeMap<Stage, Version>,
    /// When every entity last reached complete (the gate's soak start), if they still are.
    soak_started: Option<i64>,
    /// The version at which complete went back to 0% (old writes resumed for everyone).
    old_writes_resumed: Option<Version>,
    /// The last period the stage was live: (start, end).
    live_window: Option<(i64, Option<i64>)>,
    /// The share of entities at complete in the current state.
    share_complete_before: u32,
}

impl Model {
    fn after_front(&self, from: Front, front: Front, version: Version, now: i64) -> Model {
        let trailing = front.trailing();
        let mut full_since = self.full_since.clone();
        full_since.retain(|s, _| *s <= trailing);
        for s in Stage::ALL.into_iter().filter(|s| *s <= trailing) {
            full_since.entry(s).or_insert(version);
        }
        let all_complete = front.stage == Stage::Complete && front.rollout.is_full();
        // Some entity is at live from (live, >0%) until (rampdown, 100%).
        let any_live = |f: Front| match f.stage {
            Stage::Live => !f.rollout.is_zero(),
            Stage::Rampdown => !f.rollout.is_full(),
            _ => false,
        };
        let live_window = match (any_live(from), any_live(front)) {
            (false, true) => Some((now, None)),
            (true, false) => self.live_window.map(|(start, _)| (start, Some(now))),
            _ => self.live_window,
        };
        let resumed = if share_complete(front) > 0 {
            None
        } else if self.share_complete_before > 0 {
            Some(version)
        } else {
            self.old_writes_resumed
        };
        Model {
            stale: self.stale || share_complete(front) > 0,
            full_since,
            soak_started: all_complete.then(|| self.soak_started.unwrap_or(now)),
            old_writes_resumed: resumed,
            share_complete_before: share_complete(front),
            live_window,
        }
    }
}

fn expect(
    m: &Migration,
    model: &Model,
    op: &Operation,
    fleet: &Fleet,
    next_version: Version,
    now: i64,
) -> (Want, Model) {
    let refuse = |rules: Vec<Rule>| (Want::Refuse(rules), model.clone());
    let na = || (Want::NotApplicable, model.clone());
    let full = m.rollout_bp.is_full();
    let zero = m.rollout_bp.is_zero();
    let new_front = match *op {
        Operation::SetRollout { stage, rollout } => {
            let target = stage.unwrap_or(m.stage);
            if target == Stage::Contracted {
                return refuse(vec![Rule::ContractGate]);
            }
            if target == Stage::Off && m.stage == Stage::Off {
                return na();
            }
            let one_step = target == m.stage
                || (m.stage.next() == Some(target) && full)
                || (m.stage.prev() == Some(target) && zero);
            if !one_step {
                return refuse(vec![Rule::OneStep]);
            }
            let rollout = if target == Stage::Off {
                BasisPoints::FULL
            } else {
                rollout
            };
            Front::new(target, rollout)
        }
        Operation::Advance => {
            if m.stage == Stage::Complete {
                return refuse(vec![Rule::ContractGate]);
            }
            if !full {
                return refuse(vec![Rule::OneStep]);
            }
            Front::new(m.stage.next().unwrap(), BasisPoints::ZERO)
        }
        Operation::Retreat => {
            let Some(prev) = m.stage.prev() else {
                return na();
            };
            if !zero {
                return refuse(vec![Rule::OneStep]);
            }
            Front::new(prev, BasisPoints::FULL)
        }
        Operation::Record(event) => {
            let mut next = m.clone();
            let mut next_model = model.clone();
            let status = m.backfill.status;
            match event {
                Event::ExpandApplied if m.expand_applied => return na(),
                Event::ExpandApplied => next.expand_applied = true,
                Event::BackfillStarted => match status {
                    BackfillStatus::NotStarted => match model.full_since.get(&Stage::DualWrite) {
                        Some(&since) if fleet_applied(fleet, since, &m.expected_services) => {
                            next.backfill.status = BackfillStatus::Running;
                            next.backfill.started_version = Some(next_version);
                        }
                        _ => return refuse(vec![Rule::BackfillAfterDualWrite]),
                    },
                    _ => return na(),
                },
                Event::BackfillProgress {
                    rows_done,
                    rows_total_estimate,
                } => {
                    if status != BackfillStatus::Running {
                        return na();
                    }
                    next.backfill.rows_done = rows_done;
                    next.backfill.rows_total_estimate = rows_total_estimate;
                }
                Event::BackfillComplete => {
                    if status != BackfillStatus::Running {
                        return na();
                    }
                    next.backfill.status = BackfillStatus::Complete;
                    next.backfill.completed_version = Some(next_version);
                }
                Event::BackfillPaused => {
                    if status != BackfillStatus::Running || m.backfill.paused {
                        return na();
                    }
                    next.backfill.paused = true;
                }
                Event::BackfillResumed => {
                    if status != BackfillStatus::Running || !m.backfill.paused {
                        return na();
                    }
                    next.backfill.paused = false;
                }
                Event::BackfillCancelled => {
                    if status != BackfillStatus::Running {
                        return na();
                    }
                    next.backfill = switchyard_domain::Backfill::initial(true);
                }
                Event::OldShapeRepaired => {
                    if !model.stale || share_complete(m.front()) > 0 {
                        return na();
                    }
                    if let Some(v) = model.old_writes_resumed {
                        if !fleet_applied(fleet, v, &m.expected_services) {
                            return refuse(vec![Rule::NoStaleReads]);
                        }
                    }
                    next_model.stale = false;
                }
                // The model's migrations never retire (no probation chosen): retiring needs
                // the gate, and there is nothing to restore.
                Event::Contracted | Event::Retired => return refuse(vec![Rule::ContractGate]),
                Event::Restored => return na(),
            }
            next.old_shape_stale = next_model.stale;
            return (Want::Accept(Box::new(next)), next_model);
        }
    };

    // Rules 2, 4, 5, 6 on the state the change would produce.
    let mut broken = Vec::new();
    if new_front.stage > Stage::Off && !m.expand_applied {
        broken.push(Rule::ExpandFirst);
    }
    if new_front.stage >= Stage::Shadow
        && m.has_backfill
        && m.backfill.status != BackfillStatus::Complete
    {
        broken.push(Rule::ShadowAfterBackfill);
    }
    if m.backfill.status == BackfillStatus::Running && new_front.trailing() < Stage::DualWrite {
        broken.push(Rule::BackfillAfterDualWrite);
    }
    if share_complete(new_front) > share_complete(m.front()) {
        let ready = model
            .full_since
            .get(&Stage::Rampdown)
            .is_some_and(|&since| fleet_applied(fleet, since, &m.expected_services));
        if !ready {
            broken.push(Rule::CompleteAfterRampdown);
        }
    }
    let next_model = model.after_front(m.front(), new_front, next_version, now);
    if next_model.stale && new_front.trailing().returns_old() {
        broken.push(Rule::NoStaleReads);
    }
    if !broken.is_empty() {
        return refuse(broken);
    }
    let mut next = m.clone();
    next.stage = new_front.stage;
    next.rollout_bp = new_front.rollout;
    next.old_shape_stale = next_model.stale;
    next.full_since = next_model.full_since.clone();
    next.soak_started_at_ms = next_model.soak_started;
    next.old_writes_resumed_since = next_model.old_writes_resumed;
    next.live_window = next_model.live_window.map(|(started_at_ms, ended_at_ms)| {
        switchyard_domain::migration::Window {
            started_at_ms,
            ended_at_ms,
            recorded: None,
        }
    });
    (Want::Accept(Box::new(next)), next_model)
}

fn check_invariants(m: &Migration, model: &Model) -> Result<(), TestCaseError> {
    let front = m.front();
    prop_assert_ne!(m.stage, Stage::Contracted);
    prop_assert!(
        front.stage == Stage::Off || m.expand_applied,
        "rule 2 broken: {:?}",
        front
    );
    prop_assert!(
        !(front.leading() >= Stage::Shadow
            && m.has_backfill
            && m.backfill.status != BackfillStatus::Complete),
        "rule 4 broken: {:?} with backfill {:?}",
        front,
        m.backfill.status
    );
    prop_assert!(
        !(model.stale && front.trailing().returns_old()),
        "rule 6 broken: {:?} returns old values after complete without a repair",
        front
    );
    let keys: Vec<Stage> = m.full_since.keys().copied().collect();
    let want: Vec<Stage> = Stage::ALL
        .into_iter()
        .filter(|s| *s <= front.trailing())
        .collect();
    prop_assert_eq!(keys, want, "full_since keys at {:?}", front);
    prop_assert_eq!(&m.full_since, &model.full_since);
    prop_assert_eq!(m.old_shape_stale, model.stale, "old_shape_stale");
    Ok(())
}

/// Every entity moves at most one stage per change.
fn check_one_step(before: Front, after: Front) -> Result<(), TestCaseError> {
    let b = before.stage.index() as i64;
    let a = after.stage.index() as i64;
    prop_assert!((a - b).abs() <= 1, "{:?} -> {:?}", before, after);
    let mut buckets = vec![0u32, 1, 4_999, 5_000, 9_998, 9_999];
    for r in [before.rollout.get(), after.rollout.get()] {
        buckets.extend([r.saturating_sub(1), r.min(9_999)]);
    }
    for bucket in buckets {
        let (s0, s1) = (
            before.stage_for(Some(bucket)),
            after.stage_for(Some(bucket)),
        );
        prop_assert!(
            (s1.index() as i64 - s0.index() as i64).abs() <= 1,
            "bucket {} moved {:?} -> {:?} ({:?} -> {:?})",
            bucket,
            s0,
            s1,
            before,
            after
        );
    }
    let (t0, t1) = (before.stage_for(None), after.stage_for(None));
    prop_assert!((t1.index() as i64 - t0.index() as i64).abs() <= 1);
    Ok(())
}

fn run_sequence(
    has_backfill: bool,
    expected_services: Vec<&str>,
    salt: u64,
    steps: Vec<Step>,
) -> Result<(), TestCaseError> {
    let mut m = Migration::create(
        NewMigration {
            key: MigrationKey::parse("orders.split-address").unwrap(),
            description: String::new(),
            owner: "payments".to_owned(),
            entity_kind: "order_id".to_owned(),
            soak_seconds: 60,
            expected_services: expected_services.iter().map(|s| (*s).to_owned()).collect(),
            has_backfill,
            shadow_sample: bp(500),
            database: Default::default(),
            retire_probation_seconds: None,
        },
        salt,
        Version(1),
        0,
    );
    let mut model = Model {
        stale: false,
        full_since: BTreeMap::from([(Stage::Off, Version(1))]),
        soak_started: None,
        old_writes_resumed: None,
        share_complete_before: 0,
        live_window: None,
    };
    check_invariants(&m, &model)?;

    for (i, step) in steps.into_iter().enumerate() {
        let current = m.version;
        let fleet = Fleet {
            live: step
                .fleet
                .iter()
                .enumerate()
                .map(|(n, &(svc, delta))| LiveInstance {
                    service: SERVICES[svc].to_owned(),
                    instance_id: format!("{}-{n}", SERVICES[svc]),
                    applied_version: Version(current.0.saturating_add_signed(delta)),
                })
                .collect(),
        };
        let expected = match step.stale_by {
            None => current,
            Some(d) => Version(current.0.saturating_add_signed(d)),
        };
        let reason = if step.blank_reason { " \t" } else { "step" };
        let next_version = Version(current.0 + step.version_gap);
        let now = NOW + i as i64;
        let before = m.clone();
        let op = step.action.resolve(&m);

        let result = apply(&m, expected, reason, &op, &fleet, next_version, now);
        // `apply` borrows the record: a refusal cannot change it. Check anyway.
        prop_assert_eq!(&m, &before);

        let stale = expected != current;
        if step.blank_reason {
            let kind_ok = matches!(
                result,
                Err(DomainError::Refused {
                    rule: Rule::Reason,
                    ..
                })
            ) || (stale && matches!(result, Err(DomainError::Stale { .. })));
            prop_assert!(kind_ok, "step {}: blank reason gave {:?}", i, result);
            continue;
        }
        if stale {
            prop_assert_eq!(
                result,
                Err(DomainError::Stale { expected, current }),
                "step {}",
                i
            );
            continue;
        }

        // A ramp to the front it is at changes nothing, and says so (after the checks above,
        // and the retire hold: `retired` refuses every front change).
        if let Operation::SetRollout { stage, rollout } = op {
            if stage.unwrap_or(m.stage) == m.stage
                && rollout == m.rollout_bp
                && !matches!(m.stage, Stage::Off | Stage::Contracted)
                && m.retired_at_ms.is_none()
            {
                prop_assert!(
                    matches!(result, Err(DomainError::Unchanged(_))),
                    "step {}: a ramp to the current front gave {:?}",
                    i,
                    result
                );
                continue;
            }
        }
        let (want, next_model) = expect(&m, &model, &op, &fleet, next_version, now);
        match (want, result) {
            (Want::Accept(mut want), Ok((next, got_reason))) => {
                prop_assert_eq!(got_reason.as_str(), reason);
                prop_assert_eq!(next.version, next_version);
                prop_assert_eq!(next.updated_at_ms, now);
                prop_assert_eq!(next.created_at_ms, m.created_at_ms);
                check_one_step(m.front(), next.front())?;
                want.version = next_version;
                want.updated_at_ms = now;
                if want.stage != m.stage {
                    want.stage_since_ms = now;
                }
                prop_assert_eq!(
                    &next,
                    &*want,
                    "step {}: {:?} on {:?} at {} (left: apply, right: the model)",
                    i,
                    op,
                    m.stage,
                    m.rollout_bp
                );
                m = next;
                model = next_model;
            }
            (Want::Refuse(rules), Err(DomainError::Refused { rule, message })) => {
                prop_assert!(
                    rules.contains(&rule),
                    "step {}: {:?} on {:?} at {}: refused by {} ({}), expected one of {:?}",
                    i,
                    op,
                    m.stage,
                    m.rollout_bp,
                    rule,
                    message,
                    rules
                );
                prop_assert!(!message.trim().is_empty());
            }
            (Want::NotApplicable, Err(DomainError::NotApplicable(message))) => {
                prop_assert!(!message.trim().is_empty());
            }
            (want, got) => {
                prop_assert!(
                    false,
                    "step {}: {:?} on {:?} at {} (backfill {:?}, stale {}, fleet {:?}): \
                     expected {:?}, got {:?}",
                    i,
                    op,
                    m.stage,
                    m.rollout_bp,
                    m.backfill.status,
                    m.old_shape_stale,
                    fleet.live,
                    want,
                    got
                );
            }
        }
        check_invariants(&m, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operation_sequences_keep_the_safety_rules(
        has_backfill in any::<bool>(),
        expected_services in prop::sample::subsequence(SERVICES.to_vec(), 0..=2),
        salt in any::<u64>(),
        steps in steps_strategy(),
    ) {
        run_sequence(has_backfill, expected_services, salt, steps)?;
    }
}
