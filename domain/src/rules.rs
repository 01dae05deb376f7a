//! Safety rules 1–9 as pure functions.
//!
//! [`apply`] is the only way a migration changes state: it takes the current record, the
//! operation, what the server knows of the client fleet, and the version the change will get,
//! and returns either the new record or a typed refusal naming the rule and what would allow it.
//! The store calls it inside the transaction that writes the result, so a refusal changes
//! nothing.

use crate::event::Event;
use crate::migration::BackfillStatus;
use crate::types::new_reason;
use crate::{BasisPoints, Front, InvalidInput, Migration, Reason, Stage, Version};
use std::fmt;

/// The numbered safety rules (README, "Safety rules").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// 1: stages move one step at a time.
    OneStep = 1,
    /// 2: leaving `off` needs the expand DDL recorded.
    ExpandFirst = 2,
    /// 3: a backfill starts only once every live client dual-writes.
    BackfillAfterDualWrite = 3,
    /// 4: entering `shadow` needs the backfill complete.
    ShadowAfterBackfill = 4,
    /// 5: stopping old writes needs every live client off old reads.
    CompleteAfterRampdown = 5,
    /// 6: once old writes stopped, old values are not returned until the old shape is repaired.
    NoStaleReads = 6,
    /// 7: `contracted` needs the contract gate and is final.
    ContractGate = 7,
    /// 8: mutations name the version they expect.
    ExpectedVersion = 8,
    /// 9: mutations carry a reason and are audited.
    Reason = 9,
}

impl Rule {
    pub fn number(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {}", self.number())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A safety rule refused the change. The message says what would allow it.
    #[error("{rule}: {message}")]
    Refused { rule: Rule, message: String },
    /// Rule 8: the caller's view is out of date.
    #[error(
        "rule 8: expected version {expected} but the migration is at version {current}; \
         re-read it and retry with the current version"
    )]
    Stale { expected: Version, current: Version },
    /// The operation does not apply to the migration's current state (no rule is involved).
    #[error("{0}")]
    NotApplicable(String),
    /// The migration already is what the operation asks for: nothing is written (no version,
    /// no audit record), and the caller is told so rather than refused.
    #[error("{0}")]
    Unchanged(String),
    /// The rules allow the change, but a second person must approve it first (four eyes);
    /// `gated` is the server policy's kind, `None` when the migration's plan asks for it.
    #[error("{message}")]
    NeedsApproval {
        gated: Option<crate::approval::Gated>,
        message: String,
    },
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
}

fn refuse(rule: Rule, message: impl Into<String>) -> DomainError {
    DomainError::Refused {
        rule,
        message: message.into(),
    }
}

/// Rule 9: every mutation carries a non-empty reason; it is prose (line breaks and tabs, no
/// other control character: see [`crate::types::check_text`]).
pub fn parse_reason(raw: &str) -> Result<Reason, DomainError> {
    new_reason(raw)?.ok_or_else(|| {
        refuse(
            Rule::Reason,
            format!(
                "every change needs a reason: give 1 to {} characters saying why",
                Reason::MAX_LEN
            ),
        )
    })
}

/// A client instance that has reported within the client TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveInstance {
    pub service: String,
    pub instance_id: String,
    pub applied_version: Version,
}

/// What the server knows of the clients when a change is made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fleet {
    pub live: Vec<LiveInstance>,
}

/// How many waiting instances a refusal names; the rest are counted. A fleet of thousands would
/// otherwise make every refusal (and the audit-free retries that read it) hundreds of KB long.
pub const NAMED_WAITING_INSTANCES: usize = 5;

impl Fleet {
    /// What stands between `needed` and "applied by every live instance, with every expected
    /// service live"; empty when nothing does. Names the first [`NAMED_WAITING_INSTANCES`]
    /// waiting instances by service and instance id (a stable order, so a repeated refusal reads
    /// the same) and counts the rest ("and N more instances"); then every expected service with
    /// no live instance (few: the migration lists them).
    pub fn not_applied(&self, needed: Version, expected_services: &[String]) -> Vec<String> {
        let mut behind: Vec<&LiveInstance> = self
            .live
            .iter()
            .filter(|i| i.applied_version < needed)
            .collect();
        behind.sort_by(|a, b| (&a.service, &a.instance_id).cmp(&(&b.service, &b.instance_id)));
        let mut waiting: Vec<String> = behind
            .iter()
            .take(NAMED_WAITING_INSTANCES)
            .map(|i| {
                format!(
                    "instance {} of {} has applied version {}, needs {} or later",
                    i.instance_id, i.service, i.applied_version, needed
                )
            })
            .collect();
        let more = behind.len().saturating_sub(NAMED_WAITING_INSTANCES);
        if more > 0 {
            waiting.push(format!(
                "and {more} more instance{}",
                if more == 1 { "" } else { "s" }
            ));
        }
        waiting.extend(
            expected_services
                .iter()
                .filter(|s| !self.live.iter().any(|i| &i.service == *s))
                .map(|s| format!("expected service {s} has no live instance")),
        );
        waiting
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Move the front to `rollout` on `stage` (the current stage when `None`). The stage may be
    /// the next one when the current rollout is 100%, or the previous one when it is 0%.
    SetRollout {
        stage: Option<Stage>,
        rollout: BasisPoints,
    },
    /// `(S, 100%)` → `(next(S), 0%)`.
    Advance,
    /// `(S, 0%)` → `(prev(S), 100%)`.
    Retreat,
    Record(Event),
}

impl Operation {
    /// Whether it moves the traffic front (a ramp, an advance, a step back), as opposed to
    /// recording an event.
    pub fn moves_front(&self) -> bool {
        !matches!(self, Operation::Record(_))
    }

    /// The audit log's name for the operation.
    pub fn action(&self) -> &'static str {
        match self {
            Operation::SetRollout { .. } => "set_rollout",
            Operation::Advance => "advance",
            Operation::Retreat => "retreat",
            Operation::Record(event) => event.as_str(),
        }
    }
}

/// What every change must pass first: a reason (rule 9), the expected version (rule 8), and a
/// migration that is not contracted (rule 7: final).
fn admit(current: &Migration, expected: Version, reason: &str) -> Result<Reason, DomainError> {
    let reason = parse_reason(reason)?;
    if expected != current.version {
        return Err(DomainError::Stale {
            expected,
            current: current.version,
        });
    }
    if current.stage == Stage::Contracted {
        return Err(refuse(
            Rule::ContractGate,
            "the migration is contracted, which is final: nothing can change it",
        ));
    }
    Ok(reason)
}

/// Applies `op` to `current` if every safety rule allows it, returning the new record at
/// `next_version`. Refusals leave `current` untouched (it is borrowed).
pub fn apply(
    current: &Migration,
    expected: Version,
    reason: &str,
    op: &Operation,
    fleet: &Fleet,
    next_version: Version,
    now_ms: i64,
) -> Result<(Migration, Reason), DomainError> {
    let reason = admit(current, expected, reason)?;
    if current.retired_at_ms.is_some() && !matches!(op, Operation::Record(_)) {
        // Every front but complete at 100% has some entity read or write the old shape,
        // which the database no longer has under its names.
        return Err(refuse(
            Rule::ContractGate,
            "the old shape is retired (renamed in the database), so the front stays at              complete 100%: apply the restore SQL (`switchyard restore-sql KEY`) and record              `restored` first",
        ));
    }
    if let Operation::SetRollout { stage, rollout } = *op {
        let target = stage.unwrap_or(current.stage);
        // `off` has no front, so "ramping" it stays an error that says so (in `next_front`).
        if target == current.stage && rollout == current.rollout_bp && target != Stage::Off {
            return Err(DomainError::Unchanged(format!(
                "already at {}; nothing changed (still version {})",
                describe(current.front()),
                current.version
            )));
        }
    }
    let mut next = current.clone();
    match *op {
        Operation::SetRollout { stage, rollout } => {
            next_front(current, stage.unwrap_or(current.stage), rollout, &mut next)?
        }
        Operation::Advance => advance(current, &mut next)?,
        Operation::Retreat => retreat(current, &mut next)?,
        Operation::Record(event) => record(current, event, fleet, next_version, &mut next)?,
    }
    check_front(current, &mut next, fleet, next_version, now_ms)?;
    next.version = next_version;
    next.updated_at_ms = now_ms;
    if next.stage != current.stage {
        next.stage_since_ms = now_ms;
    }
    Ok((next, reason))
}

fn describe(front: Front) -> String {
    match front.stage {
        Stage::Off => "off".to_owned(),
        Stage::Contracted => "contracted".to_owned(),
        s => format!("{s} at {}", front.rollout),
    }
}

fn next_front(
    current: &Migration,
    target: Stage,
    rollout: BasisPoints,
    next: &mut Migration,
) -> Result<(), DomainError> {
    let (stage, at) = (current.stage, current.rollout_bp);
    if target == Stage::Contracted {
        return Err(refuse(
            Rule::ContractGate,
            "`contracted` is not a rollout: record it with `record contracted` once the \
             contract gate passes",
        ));
    }
    if target == Stage::Off && stage == Stage::Off {
        return Err(DomainError::NotApplicable(
            "`off` has no front to ramp: advance to dual_write (it starts at 0%) and ramp there"
                .to_owned(),
        ));
    }
    let allowed = if target == stage {
        true
    } else if Some(target) == stage.next() {
        at.is_full()
    } else if Some(target) == stage.prev() {
        at.is_zero()
    } else {
        false
    };
    if !allowed {
        return Err(refuse(
            Rule::OneStep,
            format!(
                "stages move one step at a time and the front is at {}: ramp {stage}, {}",
                describe(current.front()),
                step_hint(current.front())
            ),
        ));
    }
    next.stage = target;
    next.rollout_bp = if target == Stage::Off {
        BasisPoints::FULL
    } else {
        rollout
    };
    Ok(())
}

fn step_hint(front: Front) -> String {
    let forward = match front.stage.next() {
        Some(Stage::Contracted) => "record contracted once the gate passes at 100%".to_owned(),
        Some(n) => format!("advance to {n} once {} is at 100%", front.stage),
        None => "nothing follows".to_owned(),
    };
    let back = match front.stage.prev() {
        Some(p) => format!("step back to {p} once {} is at 0%", front.stage),
        None => "nothing precedes off".to_owned(),
    };
    format!("{forward}, or {back}")
}

fn advance(current: &Migration, next: &mut Migration) -> Result<(), DomainError> {
    let front = current.front();
    match current.stage.next() {
        Some(Stage::Contracted) => Err(refuse(
            Rule::ContractGate,
            "`complete` is followed by `contracted`, which is recorded with `record contracted` \
             once the contract gate passes",
        )),
        Some(_) if !front.rollout.is_full() => Err(refuse(
            Rule::OneStep,
            format!(
                "advancing needs the current stage at 100% and the front is at {}: ramp {} to \
                 100% first",
                describe(front),
                current.stage
            ),
        )),
        Some(target) => {
            next.stage = target;
            next.rollout_bp = BasisPoints::ZERO;
            Ok(())
        }
        None => unreachable!("contracted is rejected before any operation"),
    }
}

fn retreat(current: &Migration, next: &mut Migration) -> Result<(), DomainError> {
    let front = current.front();
    match current.stage.prev() {
        None => Err(DomainError::NotApplicable(
            "the migration is at `off`: there is no earlier stage".to_owned(),
        )),
        Some(_) if !front.rollout.is_zero() => Err(refuse(
            Rule::OneStep,
            format!(
                "stepping back needs the current stage at 0% and the front is at {}: ramp {} \
                 down to 0% first",
                describe(front),
                current.stage
            ),
        )),
        Some(target) => {
            next.stage = target;
            next.rollout_bp = BasisPoints::FULL;
            Ok(())
        }
    }
}

fn record(
    current: &Migration,
    event: Event,
    fleet: &Fleet,
    next_version: Version,
    next: &mut Migration,
) -> Result<(), DomainError> {
    let backfill = &current.backfill;
    let no_backfill = || {
        DomainError::NotApplicable(format!(
            "migration {} was created without a backfill",
            current.key
        ))
    };
    match event {
        Event::ExpandApplied if current.expand_applied => Err(DomainError::NotApplicable(
            "the expand DDL is already recorded as applied".to_owned(),
        )),
        Event::ExpandApplied => {
            next.expand_applied = true;
            Ok(())
        }
        Event::BackfillStarted => match backfill.status {
            BackfillStatus::None => Err(no_backfill()),
            BackfillStatus::NotStarted => {
                let Some(&since) = current.full_since.get(&Stage::DualWrite) else {
                    return Err(refuse(
                        Rule::BackfillAfterDualWrite,
                        format!(
                            "a backfill may start only when every entity dual-writes, and the \
                             front is at {}: ramp dual_write to 100% first",
                            describe(current.front())
                        ),
                    ));
                };
                let waiting = fleet.not_applied(since, &current.expected_services);
                if !waiting.is_empty() {
                    return Err(refuse(
                        Rule::BackfillAfterDualWrite,
                        format!(
                            "a backfill may start only when every live client has applied \
                             dual_write at 100% (version {since}); waiting on: {}",
                            waiting.join("; ")
                        ),
                    ));
                }
                next.backfill.status = BackfillStatus::Running;
                next.backfill.started_version = Some(next_version);
                Ok(())
            }
            BackfillStatus::Running => Err(DomainError::NotApplicable(
                "the backfill is already running".to_owned(),
            )),
            BackfillStatus::Complete => Err(DomainError::NotApplicable(
                "the backfill is already complete".to_owned(),
            )),
        },
        Event::BackfillProgress {
            rows_done,
            rows_total_estimate,
        } => match backfill.status {
            BackfillStatus::None => Err(no_backfill()),
            BackfillStatus::Running => {
                next.backfill.rows_done = rows_done;
                next.backfill.rows_total_estimate = rows_total_estimate;
                Ok(())
            }
            _ => Err(DomainError::NotApplicable(
                "backfill progress can be recorded only while the backfill is running".to_owned(),
            )),
        },
        Event::BackfillComplete => match backfill.status {
            BackfillStatus::None => Err(no_backfill()),
            BackfillStatus::Running => {
                next.backfill.status = BackfillStatus::Complete;
                next.backfill.completed_version = Some(next_version);
                Ok(())
            }
            BackfillStatus::NotStarted => Err(DomainError::NotApplicable(
                "the backfill has not been recorded as started".to_owned(),
            )),
            BackfillStatus::Complete => Err(DomainError::NotApplicable(
                "the backfill is already complete".to_owned(),
            )),
        },
        Event::BackfillPaused | Event::BackfillResumed | Event::BackfillCancelled => {
            let not_running = || {
                DomainError::NotApplicable(format!(
                    "the backfill is not running (it is {})",
                    match backfill.status {
                        BackfillStatus::Complete => "complete",
                        _ => "not started",
                    }
                ))
            };
            match (backfill.status, event, backfill.paused) {
                (BackfillStatus::None, ..) => Err(no_backfill()),
                (BackfillStatus::Running, Event::BackfillPaused, false) => {
                    next.backfill.paused = true;
                    Ok(())
                }
                (BackfillStatus::Running, Event::BackfillPaused, true) => Err(
                    DomainError::NotApplicable("the backfill is already paused".to_owned()),
                ),
                (BackfillStatus::Running, Event::BackfillResumed, true) => {
                    next.backfill.paused = false;
                    Ok(())
                }
                (BackfillStatus::Running, Event::BackfillResumed, false) => Err(
                    DomainError::NotApplicable("the backfill is not paused".to_owned()),
                ),
                (BackfillStatus::Running, _, _) => {
                    next.backfill = crate::migration::Backfill::initial(true);
                    Ok(())
                }
                _ => Err(not_running()),
            }
        }
        Event::OldShapeRepaired => {
            if !current.old_shape_stale {
                Err(DomainError::NotApplicable(
                    "the old shape is not stale: no entity has been at complete since it was \
                     last current"
                        .to_owned(),
                ))
            } else if current.front().share_past_old_writes() > 0 {
                Err(DomainError::NotApplicable(format!(
                    "the old shape cannot be repaired while writes to it are stopped (front at \
                     {}): ramp complete down to 0% first",
                    describe(current.front())
                )))
            } else {
                // A repair (reverse backfill) made while some client still writes only the
                // new shape would be stale again at once.
                if let Some(since) = current.old_writes_resumed_since {
                    let waiting = fleet.not_applied(since, &current.expected_services);
                    if !waiting.is_empty() {
                        return Err(refuse(
                            Rule::NoStaleReads,
                            format!(
                                "the repair counts only once every live client writes the old \
                                 shape again (version {since}); waiting on: {}",
                                waiting.join("; ")
                            ),
                        ));
                    }
                }
                next.old_shape_stale = false;
                Ok(())
            }
        }
        Event::Restored => match current.retired_at_ms {
            Some(_) => {
                next.retired_at_ms = None;
                Ok(())
            }
            None => Err(DomainError::NotApplicable(
                "the old shape is not retired, so there is nothing to restore".to_owned(),
            )),
        },
        Event::Contracted | Event::Retired => Err(refuse(
            Rule::ContractGate,
            "recording `contracted` or `retired` needs the contract gate's verdict: use \
             `rules::contract`",
        )),
    }
}

/// Rules 2, 4, 5 and 6 on the state a change would produce; also keeps the derived facts
/// (`old_shape_stale`, `full_since`) up to date.
fn check_front(
    current: &Migration,
    next: &mut Migration,
    fleet: &Fleet,
    next_version: Version,
    now_ms: i64,
) -> Result<(), DomainError> {
    let (old, new) = (current.front(), next.front());
    // The stage, not only the leading entity: `(dual_write, 0%)` routes like `off`, but showing
    // a dual_write stage before the new shape exists would mislead everyone reading it.
    if new.stage > Stage::Off && !next.expand_applied {
        return Err(refuse(
            Rule::ExpandFirst,
            format!(
                "leaving off needs the expand DDL recorded as applied: run `switchyard record {} \
                 expand-applied` after applying it",
                current.key
            ),
        ));
    }
    // The stage, as for rule 2: `(shadow, 0%)` routes like dual_write at 100% but announces
    // shadow reads the backfill has not made safe.
    if new.stage >= Stage::Shadow
        && next.has_backfill
        && next.backfill.status != BackfillStatus::Complete
    {
        return Err(refuse(
            Rule::ShadowAfterBackfill,
            format!(
                "entering shadow needs the backfill recorded complete (it is {}): finish the \
                 backfill and record backfill-complete",
                match next.backfill.status {
                    BackfillStatus::Running => "running",
                    _ => "not started",
                }
            ),
        ));
    }
    // Rule 3's reason holds for as long as the backfill runs: a writer that stops dual-writing
    // mid-backfill changes rows the backfill has already passed.
    if next.backfill.status == BackfillStatus::Running && new.trailing() < Stage::DualWrite {
        return Err(refuse(
            Rule::BackfillAfterDualWrite,
            format!(
                "while the backfill runs every entity must keep dual-writing, and {} would put \
                 some at off: keep dual_write at 100% until backfill-complete is recorded",
                describe(new)
            ),
        ));
    }
    if new.share_past_old_writes() > old.share_past_old_writes() {
        let waiting = match current.full_since.get(&Stage::Rampdown) {
            None => vec![format!(
                "the front is at {}, not rampdown at 100%",
                describe(old)
            )],
            Some(&since) => fleet.not_applied(since, &current.expected_services),
        };
        if !waiting.is_empty() {
            return Err(refuse(
                Rule::CompleteAfterRampdown,
                format!(
                    "ramping complete above 0% stops old writes, which needs rampdown at 100% \
                     applied by every live client; waiting on: {}",
                    waiting.join("; ")
                ),
            ));
        }
    }
    next.old_shape_stale = next.old_shape_stale || new.share_past_old_writes() > 0;
    next.old_writes_resumed_since = match (old.share_past_old_writes(), new.share_past_old_writes())
    {
        (_, n) if n > 0 => None,
        (o, 0) if o > 0 => Some(next_version),
        _ => current.old_writes_resumed_since,
    };
    if next.old_shape_stale && new.trailing().returns_old() {
        return Err(refuse(
            Rule::NoStaleReads,
            format!(
                "entities have been at complete, so the old shape is stale and {} would return \
                 old values again; keep every entity at live or beyond (live at 100% or later), \
                 or repair the old shape with a reverse backfill and record old-shape-repaired",
                describe(new)
            ),
        ));
    }
    let trailing = new.trailing();
    next.full_since.retain(|stage, _| *stage <= trailing);
    for stage in Stage::ALL.into_iter().filter(|s| *s <= trailing) {
        next.full_since.entry(stage).or_insert(next_version);
    }
    // The gate's clocks: the soak runs while every entity is at complete; a step back stops it.
    next.soak_started_at_ms = match current.soak_started_at_ms {
        _ if trailing < Stage::Complete => None,
        Some(started) => Some(started),
        None => Some(now_ms),
    };
    // The live window lasts while any entity is at live: from (live, >0%) to (rampdown, 100%).
    let any_live = |f: Front| f.leading() >= Stage::Live && f.trailing() <= Stage::Live;
    match (any_live(old), any_live(new)) {
        (false, true) => {
            next.live_window = Some(crate::migration::Window {
                started_at_ms: now_ms,
                ended_at_ms: None,
                recorded: None,
            })
        }
        (true, false) => {
            if let Some(window) = next.live_window.as_mut() {
                window.ended_at_ms = Some(now_ms);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Rule 7: records `contracted` if the gate (evaluated by the caller on the same state, inside
/// the same transaction) passes. `contracted` is final.
pub fn contract(
    current: &Migration,
    expected: Version,
    reason: &str,
    gate: &crate::gate::GateReport,
    next_version: Version,
    now_ms: i64,
) -> Result<(Migration, Reason), DomainError> {
    let reason = admit(current, expected, reason)?;
    if !gate.passed {
        return Err(refuse(
            Rule::ContractGate,
            format!(
                "the contract gate fails, so the old shape may not be dropped yet: {}",
                gate.failures()
            ),
        ));
    }
    let mut next = current.clone();
    next.stage = Stage::Contracted;
    next.rollout_bp = BasisPoints::FULL;
    next.full_since
        .entry(Stage::Contracted)
        .or_insert(next_version);
    next.version = next_version;
    next.updated_at_ms = now_ms;
    if next.stage != current.stage {
        next.stage_since_ms = now_ms;
    }
    Ok((next, reason))
}

/// Records `retired` (rule 7, retire before drop): the migration chose to retire its old shape
/// first, it is not retired already, and every check of the gate but the retire probation
/// passes: the same evidence a direct drop would need.
pub fn retire(
    current: &Migration,
    expected: Version,
    reason: &str,
    gate: &crate::gate::GateReport,
    next_version: Version,
    now_ms: i64,
) -> Result<(Migration, Reason), DomainError> {
    let reason = admit(current, expected, reason)?;
    if current.retire_probation_seconds.is_none() {
        return Err(DomainError::NotApplicable(format!(
            "migration {} drops its old shape without retiring it first (it was created \
             without a retire probation)",
            current.key
        )));
    }
    if current.retired_at_ms.is_some() {
        return Err(DomainError::NotApplicable(
            "the old shape is already retired".to_owned(),
        ));
    }
    let failures = gate.failures_but(crate::gate::CheckId::RetireProbation);
    if !failures.is_empty() {
        return Err(refuse(
            Rule::ContractGate,
            format!("the contract gate fails, so the old shape may not be retired yet: {failures}"),
        ));
    }
    let mut next = current.clone();
    next.retired_at_ms = Some(now_ms);
    next.version = next_version;
    next.updated_at_ms = now_ms;
    if next.stage != current.stage {
        next.stage_since_ms = now_ms;
    }
    Ok((next, reason))
}
