//! Migration plans: the rollout steps a migration takes by itself, stage by stage, each held
//! for a minimum time, and what follows a stage's last step (advance, or stop there).
//!
//! A plan holds no position of its own: [`next`] reads where the migration's front is and
//! returns the one step that follows (or why there is none yet). A step taken twice is
//! therefore impossible (the second time the front is already there, so the step after it is
//! next), and a step lost with a crashed driver is simply taken by the next driver to look.
//! Every step is an ordinary mutation: the server applies it through [`crate::rules::apply`],
//! which may refuse it; the plan then waits and says why.

use crate::Migration;
use crate::rules::Operation;
use crate::stage::Stage;
use crate::time::{format_minute, format_span};
use crate::types::{BasisPoints, InvalidInput};

/// The longest hold a step may ask for: a plan that waits longer is a calendar, not a rollout.
pub const MAX_HOLD_MS: u64 = 30 * 86_400_000;
/// The most steps one stage may have.
pub const MAX_STEPS_PER_STAGE: usize = 20;

/// What a migration does by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutPlan {
    /// In stage order; each names a stage between `dual_write` and `complete`.
    pub stages: Vec<StagePlan>,
    /// Nothing is done before this (a scheduled change: "ramp live to 50% at 09:00Z").
    pub not_before_ms: Option<i64>,
    /// Steps are taken only within these hours (holds count outside them too).
    pub window: Option<Window>,
}

/// Calendar hours in a named time zone: on `days`, from `from_minute` to `to_minute` after
/// local midnight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Monday first.
    pub days: [bool; 7],
    pub from_minute: u16,
    pub to_minute: u16,
    /// An IANA time zone name (`Europe/Berlin`); the server resolves it.
    pub zone: String,
}

pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Window {
    /// Whether local time (weekday, Monday 0, and minute of the day) is inside.
    pub fn contains(&self, weekday: usize, minute: u16) -> bool {
        self.days.get(weekday).copied().unwrap_or(false)
            && (self.from_minute..self.to_minute).contains(&minute)
    }

    /// `mon-fri 09:00-16:00 Europe/Berlin`, the way the CLI takes it: runs of three or more
    /// days as a range, others listed (`mon,wed,fri`, `mon-fri,sun`).
    pub fn describe(&self) -> String {
        let mut days: Vec<String> = Vec::new();
        let mut i = 0;
        while i < 7 {
            if !self.days[i] {
                i += 1;
                continue;
            }
            let start = i;
            while i + 1 < 7 && self.days[i + 1] {
                i += 1;
            }
            match i - start {
                0 => days.push(WEEKDAYS[start].to_owned()),
                1 => days.extend([WEEKDAYS[start].to_owned(), WEEKDAYS[i].to_owned()]),
                _ => days.push(format!("{}-{}", WEEKDAYS[start], WEEKDAYS[i])),
            }
            i += 1;
        }
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        format!(
            "{} {}-{} {}",
            days.join(","),
            hm(self.from_minute),
            hm(self.to_minute),
            self.zone
        )
    }

    /// Parses `mon-fri 09:00-16:00 Europe/Berlin` (days as a range or a comma list).
    pub fn parse(raw: &str) -> Result<Window, InvalidInput> {
        let bad = |why: &str| {
            InvalidInput(format!(
                "window {raw:?}: {why}; write DAYS HH:MM-HH:MM ZONE, e.g. \
                 mon-fri 09:00-16:00 Europe/Berlin"
            ))
        };
        let parts: Vec<&str> = raw.split_whitespace().collect();
        let [days, hours, zone] = parts[..] else {
            return Err(bad("three parts expected"));
        };
        let day = |d: &str| {
            WEEKDAYS
                .iter()
                .position(|w| w.eq_ignore_ascii_case(d))
                .ok_or_else(|| bad(&format!("unknown day {d:?}")))
        };
        let mut on = [false; 7];
        for item in days.split(',') {
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    if a > b {
                        return Err(bad("a day range runs from Monday to Sunday"));
                    }
                    on[a..=b].iter_mut().for_each(|d| *d = true);
                }
                None => on[day(item)?] = true,
            }
        }
        let minute = |t: &str| -> Result<u16, InvalidInput> {
            let (h, m) = t.split_once(':').ok_or_else(|| bad("hours as HH:MM"))?;
            match (h.parse::<u16>(), m.parse::<u16>()) {
                (Ok(h), Ok(m)) if (h < 24 && m < 60) || (h == 24 && m == 0) => Ok(h * 60 + m),
                _ => Err(bad(&format!("{t:?} is not a time of day"))),
            }
        };
        let (from, to) = hours
            .split_once('-')
            .ok_or_else(|| bad("hours as HH:MM-HH:MM"))?;
        let window = Window {
            days: on,
            from_minute: minute(from)?,
            to_minute: minute(to)?,
            zone: zone.to_owned(),
        };
        window.check()?;
        Ok(window)
    }

    fn check(&self) -> Result<(), InvalidInput> {
        if !self.days.contains(&true) {
            return Err(InvalidInput("a window needs at least one day".to_owned()));
        }
        if self.from_minute >= self.to_minute || self.to_minute > 1440 {
            return Err(InvalidInput(format!(
                "a window's hours run forward within a day: {} is not before {}",
                self.from_minute, self.to_minute
            )));
        }
        Ok(())
    }
}

/// Local time for a plan's window: the weekday (Monday 0) and minute of the day at a moment,
/// in the window's zone. The domain has no time zone database; the server gives it one.
pub trait LocalTime {
    fn local(&self, at_ms: i64) -> (usize, u16);
}

/// No window: any local time will do.
impl LocalTime for () {
    fn local(&self, _at_ms: i64) -> (usize, u16) {
        (0, 0)
    }
}

/// When `window` next opens after `now_ms` (to the minute), within the coming eight days.
fn next_opening(window: &Window, local: &dyn LocalTime, now_ms: i64) -> Option<i64> {
    let start = now_ms - now_ms.rem_euclid(60_000) + 60_000;
    (0..8 * 1440).map(|i| start + i * 60_000).find(|&at| {
        let (day, minute) = local.local(at);
        window.contains(day, minute)
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePlan {
    pub stage: Stage,
    /// Rollouts in increasing order, each held at least `hold_ms` before the next step.
    pub steps: Vec<PlanStep>,
    /// What follows the last step once it has been held.
    pub then: Then,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanStep {
    pub rollout: BasisPoints,
    /// The minimum time at this rollout before the plan takes its next step, counted from the
    /// migration's last change (so any change, the plan's own or a recorded event, restarts it:
    /// a hold is never shorter than asked).
    pub hold_ms: u64,
}

/// After a stage's last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Advance to the next stage (needs the last step at 100%); the next stage's plan goes on.
    Advance,
    /// Advance as above, once a second person approves it: the driver requests the approval
    /// and waits for it.
    Approve,
    /// The plan is done here: a person takes it on.
    Stop,
}

impl Then {
    pub const ALL: [Then; 3] = [Then::Advance, Then::Approve, Then::Stop];

    pub fn as_str(self) -> &'static str {
        match self {
            Then::Advance => "advance",
            Then::Approve => "approve",
            Then::Stop => "stop",
        }
    }

    /// Whether the plan goes on to the next stage (at once or once approved).
    pub fn advances(self) -> bool {
        self != Then::Stop
    }

    pub fn parse(raw: &str) -> Result<Then, InvalidInput> {
        Then::ALL
            .into_iter()
            .find(|t| t.as_str() == raw)
            .ok_or_else(|| {
                InvalidInput(format!(
                    "unknown `then` {raw:?}: allowed {}",
                    Then::ALL.map(Then::as_str).join(", ")
                ))
            })
    }
}

/// A template's name, as URLs and commands carry it: 1 to 64 of lowercase letters, digits,
/// `.`, `_` and `-`, starting with a letter or digit (`standard-column-rename`).
pub fn parse_template_name(raw: &str) -> Result<String, InvalidInput> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(InvalidInput(format!(
            "invalid template name {:?}: allowed 1 to 64 of a-z, 0-9, '.', '_' and '-', starting \
             with a letter or digit",
            raw.chars().take(80).collect::<String>()
        )))
    }
}

/// `base` with `overrides`' stages put in place of its stages of the same name (and added
/// where it has none, in stage order), and `overrides`' window and schedule where given: a
/// migration that starts from a template and changes part of it.
pub fn merge(base: &RolloutPlan, overrides: &RolloutPlan) -> RolloutPlan {
    let mut stages = base.stages.clone();
    for stage in &overrides.stages {
        match stages.iter_mut().find(|s| s.stage == stage.stage) {
            Some(s) => *s = stage.clone(),
            None => stages.push(stage.clone()),
        }
    }
    stages.sort_by_key(|s| s.stage);
    RolloutPlan {
        stages,
        not_before_ms: overrides.not_before_ms.or(base.not_before_ms),
        window: overrides.window.clone().or_else(|| base.window.clone()),
    }
}

/// What the plan does next for a migration, now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing yet: `why` says what it waits for, `until_ms` when that ends if it is time.
    Wait { until_ms: Option<i64>, why: String },
    /// Apply `op`; `step` says what it is, for the audit reason ("live 5% → 25%").
    Step { op: Operation, step: String },
    /// Every step is taken.
    Done { why: String },
}

/// A plan's stages must run forward from dual_write to complete: the stages that can be
/// ramped, each once, in order, each with increasing steps in (0%, 100%], a stage that
/// advances ending at 100% (rule 1), and `complete`, the last stage, never advancing (what
/// follows it is the contract, through the gate).
pub fn validate(plan: &RolloutPlan) -> Result<(), InvalidInput> {
    if plan.stages.is_empty() {
        return Err(InvalidInput(
            "a plan needs at least one stage with its steps".to_owned(),
        ));
    }
    let mut previous: Option<Stage> = None;
    for (i, sp) in plan.stages.iter().enumerate() {
        let name = sp.stage.as_str();
        if !(Stage::DualWrite..=Stage::Complete).contains(&sp.stage) {
            return Err(InvalidInput(format!(
                "stage {name} cannot be planned: a plan ramps the stages from dual_write to \
                 complete"
            )));
        }
        if let Some(p) = previous {
            if sp.stage <= p {
                return Err(InvalidInput(format!(
                    "stage {name} comes after {}: list each stage once, in stage order",
                    p.as_str()
                )));
            }
            if Some(sp.stage) != p.next() {
                return Err(InvalidInput(format!(
                    "the plan skips from {} to {name}: list every stage in between (a stage \
                     cannot be advanced past without ramping it)",
                    p.as_str()
                )));
            }
            if !plan.stages[i - 1].then.advances() {
                return Err(InvalidInput(format!(
                    "stage {} stops the plan, so stage {name} after it would never run",
                    p.as_str()
                )));
            }
        }
        if sp.steps.is_empty() || sp.steps.len() > MAX_STEPS_PER_STAGE {
            return Err(InvalidInput(format!(
                "stage {name} has {} steps: allowed 1 to {MAX_STEPS_PER_STAGE}",
                sp.steps.len()
            )));
        }
        let mut last = BasisPoints::ZERO;
        for step in &sp.steps {
            if step.rollout <= last {
                return Err(InvalidInput(format!(
                    "stage {name}: step {} does not go past {}: steps increase, above 0%",
                    step.rollout, last
                )));
            }
            if step.hold_ms > MAX_HOLD_MS {
                return Err(InvalidInput(format!(
                    "stage {name}: a hold of {} is too long: at most {}",
                    format_span(step.hold_ms as i64),
                    format_span(MAX_HOLD_MS as i64)
                )));
            }
            last = step.rollout;
        }
        if sp.then.advances() && sp.stage == Stage::Complete {
            return Err(InvalidInput(
                "stage complete cannot advance: after it comes the contract, through the gate \
                 (`then` must be stop)"
                    .to_owned(),
            ));
        }
        if sp.then.advances() && !last.is_full() {
            return Err(InvalidInput(format!(
                "stage {name} advances after its last step, so that step must be 100% (rule 1), \
                 not {last}"
            )));
        }
        previous = Some(sp.stage);
    }
    if let Some(window) = &plan.window {
        window.check()?;
    }
    Ok(())
}

/// The plan's next move for `m` at `now_ms`: derived from where the front is, never from a
/// remembered position. `local` gives the window's local time (any, without a window).
pub fn next(plan: &RolloutPlan, m: &Migration, now_ms: i64, local: &dyn LocalTime) -> Next {
    if let Some(at) = plan.not_before_ms.filter(|at| now_ms < *at) {
        return Next::Wait {
            until_ms: Some(at),
            why: format!("scheduled to start at {}", format_minute(at)),
        };
    }
    let step = step_now(plan, m, now_ms);
    let Some(window) = &plan.window else {
        return step;
    };
    let (day, minute) = local.local(now_ms);
    match step {
        Next::Step { step, .. } if !window.contains(day, minute) => {
            let opens = next_opening(window, local, now_ms);
            Next::Wait {
                until_ms: opens,
                why: format!(
                    "outside the plan's window ({}){}; then {step}",
                    window.describe(),
                    opens.map_or(String::new(), |at| format!(
                        ", which opens at {}",
                        format_minute(at)
                    ))
                ),
            }
        }
        other => other,
    }
}

/// Whether the plan has a second person approve advancing `m` out of its current stage
/// (`then: approve`).
pub fn advance_needs_approval(plan: &RolloutPlan, m: &Migration) -> bool {
    plan.stages
        .iter()
        .any(|sp| sp.stage == m.stage && sp.then == Then::Approve)
}

/// The step that follows the front, ignoring the schedule and the window.
fn step_now(plan: &RolloutPlan, m: &Migration, now_ms: i64) -> Next {
    let (first, last) = match (plan.stages.first(), plan.stages.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => {
            return Next::Done {
                why: "the plan has no stages".to_owned(),
            };
        }
    };
    if m.stage > last.stage || m.stage == Stage::Contracted {
        return Next::Done {
            why: format!(
                "the migration is past the plan's last stage ({})",
                last.stage
            ),
        };
    }
    if m.stage < first.stage {
        // One stage short, at 100%: advancing into the plan's first stage is its first step.
        if m.stage.next() == Some(first.stage) && m.rollout_bp.is_full() {
            return Next::Step {
                op: Operation::Advance,
                step: format!("advance to {}", first.stage),
            };
        }
        return Next::Wait {
            until_ms: None,
            why: format!(
                "the plan starts at {}; the migration is at {} {}: bring it there",
                first.stage, m.stage, m.rollout_bp
            ),
        };
    }
    let Some(sp) = plan.stages.iter().find(|sp| sp.stage == m.stage) else {
        return Next::Done {
            why: format!("the plan has no steps for {}", m.stage),
        };
    };
    // The hold of the step the front sits at; a front between steps (moved by a person) holds
    // nothing before the next one.
    let hold = sp
        .steps
        .iter()
        .find(|s| s.rollout == m.rollout_bp)
        .map_or(0, |s| s.hold_ms);
    let held_until = m.updated_at_ms.saturating_add(hold as i64);
    let ahead = sp.steps.iter().find(|s| s.rollout > m.rollout_bp);
    let step = match ahead {
        Some(s) => Next::Step {
            op: Operation::SetRollout {
                stage: None,
                rollout: s.rollout,
            },
            step: format!("{} {} → {}", m.stage, m.rollout_bp, s.rollout),
        },
        None => match (sp.then, m.stage.next()) {
            (Then::Advance | Then::Approve, Some(next)) if m.rollout_bp.is_full() => Next::Step {
                op: Operation::Advance,
                step: format!("advance to {next}"),
            },
            _ => {
                return Next::Done {
                    why: format!("every step of {} is taken", m.stage),
                };
            }
        },
    };
    if now_ms < held_until {
        let what = match &step {
            Next::Step { step, .. } => step.clone(),
            _ => String::new(),
        };
        return Next::Wait {
            until_ms: Some(held_until),
            why: format!(
                "holding {} at {} until {} ({} left), then {what}",
                m.stage,
                m.rollout_bp,
                format_minute(held_until),
                format_span(held_until - now_ms)
            ),
        };
    }
    step
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::NewMigration;
    use crate::types::{MigrationKey, Version};

    const H: u64 = 3_600_000;

    fn steps(stage: Stage, pcts: &[u32], hold_ms: u64, then: Then) -> StagePlan {
        StagePlan {
            stage,
            steps: pcts
                .iter()
                .map(|p| PlanStep {
                    rollout: BasisPoints::new(p * 100).unwrap(),
                    hold_ms,
                })
                .collect(),
            then,
        }
    }

    fn migration(stage: Stage, pct: u32, updated_at_ms: i64) -> Migration {
        let mut m = Migration::create(
            NewMigration {
                key: MigrationKey::parse("users.handle").unwrap(),
                description: String::new(),
                owner: String::new(),
                entity_kind: String::new(),
                soak_seconds: 3600,
                expected_services: Vec::new(),
                has_backfill: false,
                shadow_sample: BasisPoints::FULL,
                database: Default::default(),
                retire_probation_seconds: None,
            },
            7,
            Version(1),
            0,
        );
        m.stage = stage;
        m.rollout_bp = BasisPoints::new(pct * 100).unwrap();
        m.updated_at_ms = updated_at_ms;
        m
    }

    fn standard() -> RolloutPlan {
        RolloutPlan {
            stages: vec![
                steps(Stage::DualWrite, &[1, 25, 100], H, Then::Advance),
                steps(Stage::Shadow, &[100], H, Then::Advance),
                steps(Stage::Live, &[5, 50, 100], H, Then::Stop),
            ],
            not_before_ms: None,
            window: None,
        }
    }

    #[test]
    fn the_next_step_follows_the_front_after_its_hold() {
        let plan = standard();
        // At dual_write 1% since t=0: held until 1h, then 25%.
        let m = migration(Stage::DualWrite, 1, 0);
        assert!(
            matches!(next(&plan, &m, 10, &()), Next::Wait { until_ms: Some(u), .. } if u == H as i64)
        );
        assert_eq!(
            next(&plan, &m, H as i64, &()),
            Next::Step {
                op: Operation::SetRollout {
                    stage: None,
                    rollout: BasisPoints::new(2500).unwrap()
                },
                step: "dual_write 1% → 25%".to_owned()
            }
        );
        // The last step held: advance.
        let m = migration(Stage::DualWrite, 100, 0);
        assert!(matches!(
            next(&plan, &m, H as i64, &()),
            Next::Step {
                op: Operation::Advance,
                ..
            }
        ));
        // A new stage starts at 0%: its first step at once (0% is no step, so no hold).
        let m = migration(Stage::Shadow, 0, 5);
        assert!(matches!(
            next(&plan, &m, 5, &()),
            Next::Step {
                op: Operation::SetRollout { .. },
                ..
            }
        ));
        // Live's last step stops the plan.
        let m = migration(Stage::Live, 100, 0);
        assert!(matches!(
            next(&plan, &m, 10 * H as i64, &()),
            Next::Done { .. }
        ));
    }

    #[test]
    fn a_front_moved_by_hand_between_steps_goes_on_to_the_next_step() {
        let plan = standard();
        let m = migration(Stage::DualWrite, 10, 0);
        assert_eq!(
            next(&plan, &m, 0, &()),
            Next::Step {
                op: Operation::SetRollout {
                    stage: None,
                    rollout: BasisPoints::new(2500).unwrap()
                },
                step: "dual_write 10% → 25%".to_owned()
            }
        );
    }

    #[test]
    fn a_scheduled_plan_waits_for_its_time_and_a_plan_ahead_of_the_migration_says_so() {
        let mut plan = standard();
        plan.not_before_ms = Some(1_796_119_200_000);
        let m = migration(Stage::DualWrite, 0, 0);
        match next(&plan, &m, 1_796_119_100_000, &()) {
            Next::Wait { until_ms, why } => {
                assert_eq!(until_ms, Some(1_796_119_200_000));
                assert_eq!(why, "scheduled to start at 2026-12-01T10:00Z");
            }
            other => panic!("{other:?}"),
        }
        let plan = RolloutPlan {
            stages: vec![steps(Stage::Live, &[50], 0, Then::Stop)],
            not_before_ms: None,
            window: None,
        };
        assert!(matches!(
            next(&plan, &migration(Stage::DualWrite, 30, 0), 0, &()),
            Next::Wait { until_ms: None, .. }
        ));
        // Shadow at 100%, one short of the plan: advancing into it is the first step.
        assert!(matches!(
            next(&plan, &migration(Stage::Shadow, 100, 0), 0, &()),
            Next::Step {
                op: Operation::Advance,
                ..
            }
        ));
    }

    #[test]
    fn plans_that_cannot_run_are_refused_with_why() {
        let refused = |plan: RolloutPlan, says: &str| {
            let e = validate(&plan).unwrap_err();
            assert!(e.0.contains(says), "{}", e.0);
        };
        assert!(validate(&standard()).is_ok());
        refused(
            RolloutPlan {
                stages: vec![],
                not_before_ms: None,
                window: None,
            },
            "at least one stage",
        );
        refused(
            RolloutPlan {
                stages: vec![steps(Stage::Off, &[100], 0, Then::Advance)],
                not_before_ms: None,
                window: None,
            },
            "cannot be planned",
        );
        refused(
            RolloutPlan {
                stages: vec![
                    steps(Stage::DualWrite, &[100], 0, Then::Advance),
                    steps(Stage::Live, &[100], 0, Then::Stop),
                ],
                not_before_ms: None,
                window: None,
            },
            "skips from dual_write to live",
        );
        refused(
            RolloutPlan {
                stages: vec![steps(Stage::Live, &[50, 25], 0, Then::Stop)],
                not_before_ms: None,
                window: None,
            },
            "steps increase",
        );
        refused(
            RolloutPlan {
                stages: vec![steps(Stage::Live, &[50], 0, Then::Advance)],
                not_before_ms: None,
                window: None,
            },
            "must be 100%",
        );
        refused(
            RolloutPlan {
                stages: vec![steps(Stage::Complete, &[100], 0, Then::Advance)],
                not_before_ms: None,
                window: None,
            },
            "stage complete cannot advance",
        );
        refused(
            RolloutPlan {
                stages: vec![
                    steps(Stage::Shadow, &[100], 0, Then::Stop),
                    steps(Stage::Live, &[100], 0, Then::Stop),
                ],
                not_before_ms: None,
                window: None,
            },
            "stops the plan",
        );
        refused(
            RolloutPlan {
                stages: vec![steps(Stage::Live, &[10], MAX_HOLD_MS + 1, Then::Stop)],
                not_before_ms: None,
                window: None,
            },
            "too long",
        );
    }

    /// Local time in UTC, for the tests: day 0 of the epoch was a Thursday.
    struct Utc;

    impl LocalTime for Utc {
        fn local(&self, at_ms: i64) -> (usize, u16) {
            let minutes = at_ms.div_euclid(60_000);
            let day = minutes.div_euclid(1440);
            (
                ((day + 3).rem_euclid(7)) as usize,
                minutes.rem_euclid(1440) as u16,
            )
        }
    }

    #[test]
    fn a_window_holds_steps_until_it_opens_and_parses_as_written() {
        let window = Window::parse("mon-fri 09:00-16:00 UTC").unwrap();
        assert_eq!(window.describe(), "mon-fri 09:00-16:00 UTC");
        for days in ["mon,wed,fri", "mon-sun", "mon-wed,sat,sun", "tue"] {
            let w = Window::parse(&format!("{days} 00:00-24:00 UTC")).unwrap();
            assert_eq!(w.describe(), format!("{days} 00:00-24:00 UTC"));
            assert_eq!(Window::parse(&w.describe()).unwrap(), w, "it parses back");
        }
        let mut plan = standard();
        plan.window = Some(window);
        // 2026-12-01T10:00Z is a Tuesday, inside: the step is taken.
        let tuesday_10 = 1_796_119_200_000;
        let m = migration(Stage::DualWrite, 10, 0);
        assert!(matches!(
            next(&plan, &m, tuesday_10, &Utc),
            Next::Step { .. }
        ));
        // 17:00 the same day, outside: it waits for Wednesday 09:00.
        match next(&plan, &m, tuesday_10 + 7 * H as i64, &Utc) {
            Next::Wait { until_ms, why } => {
                assert_eq!(until_ms, Some(tuesday_10 + 23 * H as i64));
                assert!(why.starts_with("outside the plan's window"), "{why}");
                assert!(why.contains("opens at 2026-12-02T09:00Z"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Saturday waits for Monday.
        let saturday_10 = tuesday_10 + 4 * 24 * H as i64;
        assert!(matches!(
            next(&plan, &m, saturday_10, &Utc),
            Next::Wait { until_ms: Some(u), .. } if u == saturday_10 + (47 * H) as i64
        ));
        for (raw, says) in [
            ("mon-fri 09:00 UTC", "HH:MM-HH:MM"),
            ("fri-mon 09:00-16:00 UTC", "Monday to Sunday"),
            ("mon 16:00-09:00 UTC", "run forward"),
            ("mon 25:00-26:00 UTC", "not a time of day"),
            ("someday 09:00-10:00 UTC", "unknown day"),
            ("mon 09:00-10:00", "three parts"),
        ] {
            let e = Window::parse(raw).unwrap_err();
            assert!(e.0.contains(says), "{raw}: {}", e.0);
        }
    }
}
