//! Four eyes: which changes a second person must approve before they are applied.
//!
//! A server is configured with the set of [`Gated`] actions (none unless asked for; `default`
//! names the four below). A change that falls in the set is not applied when asked: it is
//! requested, another operator approves it, and only then does it go through the safety rules,
//! at the version it was requested at.

use crate::rules::{DomainError, Operation};
use crate::types::InvalidInput;
use crate::{Event, Migration, Stage};
use std::collections::BTreeSet;

/// A kind of change that can require approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Gated {
    /// Leaving `shadow` for `live`: reads start to come from the new shape.
    EnterLive,
    /// Ramping `complete` above 0%: entities stop writing the old shape.
    RampComplete,
    /// Recording `contracted`: the old shape is dropped, which cannot be undone.
    Contract,
    /// Any step back once the front is at `complete` (a ramp down or a retreat): entities go
    /// back to an old shape that has not been written meanwhile.
    StepBackFromComplete,
}

impl Gated {
    pub const ALL: [Gated; 4] = [
        Gated::EnterLive,
        Gated::RampComplete,
        Gated::Contract,
        Gated::StepBackFromComplete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Gated::EnterLive => "enter-live",
            Gated::RampComplete => "ramp-complete",
            Gated::Contract => "contract",
            Gated::StepBackFromComplete => "step-back-from-complete",
        }
    }

    /// What the change is, in a sentence's words.
    pub fn describe(self) -> &'static str {
        match self {
            Gated::EnterLive => "leaving shadow for live",
            Gated::RampComplete => "ramping complete above 0%",
            Gated::Contract => "recording contracted",
            Gated::StepBackFromComplete => "a step back from complete",
        }
    }

    pub fn parse(raw: &str) -> Result<Gated, InvalidInput> {
        Gated::ALL
            .into_iter()
            .find(|g| g.as_str() == raw)
            .ok_or_else(|| {
                InvalidInput(format!(
                    "unknown action {raw:?} for approval: allowed {}, or `default` (all of \
                     them) or `none`",
                    Gated::ALL.map(Gated::as_str).join(", ")
                ))
            })
    }

    /// Which of the gated kinds `op` is, applied to `current` (`None`: none of them). Judged
    /// on the operation and the front before it, so a request and its later application are
    /// judged alike.
    pub fn of(current: &Migration, op: &Operation) -> Option<Gated> {
        let (stage, rollout) = (current.stage, current.rollout_bp);
        match op {
            Operation::Advance if stage == Stage::Shadow => Some(Gated::EnterLive),
            Operation::Retreat if stage == Stage::Complete => Some(Gated::StepBackFromComplete),
            Operation::SetRollout {
                stage: target,
                rollout: to,
            } => {
                let target = target.unwrap_or(stage);
                if stage == Stage::Shadow && target == Stage::Live {
                    Some(Gated::EnterLive)
                } else if stage == Stage::Complete && (target < Stage::Complete || *to < rollout) {
                    Some(Gated::StepBackFromComplete)
                } else if target == Stage::Complete
                    && !to.is_zero()
                    && (stage < Stage::Complete || rollout.is_zero())
                {
                    Some(Gated::RampComplete)
                } else {
                    None
                }
            }
            Operation::Record(Event::Contracted) => Some(Gated::Contract),
            _ => None,
        }
    }
}

/// The refusal of a change that must be approved first, saying how to ask for it: `gated` is
/// the policy's kind, `None` for a plan's own `then: approve`.
pub fn needs_approval(gated: Option<Gated>, current: &Migration) -> DomainError {
    let what = match gated {
        Some(g) => format!(
            "{} needs a second operator's approval on this server (--require-approval {})",
            g.describe(),
            g.as_str()
        ),
        None => format!(
            "advancing out of {} needs a second operator's approval (the plan's then: approve)",
            current.stage
        ),
    };
    DomainError::NeedsApproval {
        gated,
        message: format!(
            "{what}: ask for it with --request-approval (HTTP \"request_approval\": true, gRPC \
             RequestApproval), then another operator approves it with `switchyard approvals \
             approve ID`; an admin may instead pass --bypass-approval with a reason"
        ),
    }
}

/// The set of changes this server has a second person approve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApprovalPolicy(BTreeSet<Gated>);

impl ApprovalPolicy {
    /// `none`, `default` (every kind), or a comma-separated list of kinds.
    pub fn parse(raw: &str) -> Result<ApprovalPolicy, InvalidInput> {
        match raw.trim() {
            "" | "none" => Ok(ApprovalPolicy::default()),
            "default" => Ok(ApprovalPolicy(Gated::ALL.into_iter().collect())),
            list => list
                .split(',')
                .map(|item| Gated::parse(item.trim()))
                .collect::<Result<_, _>>()
                .map(ApprovalPolicy),
        }
    }

    /// The gated kind `op` is, if this policy gates it.
    pub fn gates(&self, current: &Migration, op: &Operation) -> Option<Gated> {
        Gated::of(current, op).filter(|g| self.0.contains(g))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The kinds, as configured (`none` when empty).
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            return "none".to_owned();
        }
        self.0
            .iter()
            .map(|g| g.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Where an approval request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalStatus {
    /// Waiting for a second person.
    Pending,
    /// Approved and applied through the rules.
    Applied,
    Rejected,
    /// Taken back by the person (or the plan's owner) who asked.
    Withdrawn,
    /// The migration changed after the request: it was refused as stale (rule 8) and can never
    /// apply.
    Stale,
}

impl ApprovalStatus {
    pub const ALL: [ApprovalStatus; 5] = [
        ApprovalStatus::Pending,
        ApprovalStatus::Applied,
        ApprovalStatus::Rejected,
        ApprovalStatus::Withdrawn,
        ApprovalStatus::Stale,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Applied => "applied",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Withdrawn => "withdrawn",
            ApprovalStatus::Stale => "stale",
        }
    }

    pub fn parse(raw: &str) -> Result<ApprovalStatus, InvalidInput> {
        ApprovalStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| {
                InvalidInput(format!(
                    "unknown approval status {raw:?}: allowed {}",
                    ApprovalStatus::ALL.map(ApprovalStatus::as_str).join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BasisPoints, MigrationKey, NewMigration, Version};

    fn at(stage: Stage, percent: u32) -> Migration {
        let new = NewMigration::with_key(MigrationKey::parse("users.email").unwrap());
        let mut m = Migration::create(new, 0, Version(1), 0);
        m.stage = stage;
        m.rollout_bp = BasisPoints::new(percent * 100).unwrap();
        m
    }

    fn ramp(stage: Option<Stage>, percent: u32) -> Operation {
        Operation::SetRollout {
            stage,
            rollout: BasisPoints::new(percent * 100).unwrap(),
        }
    }

    #[test]
    fn the_default_kinds_and_nothing_else() {
        let of = |m: Migration, op: Operation| Gated::of(&m, &op);
        assert_eq!(
            of(at(Stage::Shadow, 100), Operation::Advance),
            Some(Gated::EnterLive)
        );
        assert_eq!(
            of(at(Stage::Shadow, 100), ramp(Some(Stage::Live), 5)),
            Some(Gated::EnterLive)
        );
        assert_eq!(
            of(at(Stage::Complete, 0), ramp(None, 5)),
            Some(Gated::RampComplete)
        );
        assert_eq!(
            of(at(Stage::Rampdown, 100), ramp(Some(Stage::Complete), 1)),
            Some(Gated::RampComplete)
        );
        assert_eq!(
            of(at(Stage::Complete, 50), ramp(None, 25)),
            Some(Gated::StepBackFromComplete)
        );
        assert_eq!(
            of(at(Stage::Complete, 0), Operation::Retreat),
            Some(Gated::StepBackFromComplete)
        );
        assert_eq!(
            of(
                at(Stage::Complete, 100),
                Operation::Record(Event::Contracted)
            ),
            Some(Gated::Contract)
        );
        // Everything else goes straight through.
        assert_eq!(of(at(Stage::Complete, 25), ramp(None, 50)), None);
        assert_eq!(of(at(Stage::Rampdown, 100), Operation::Advance), None);
        assert_eq!(of(at(Stage::Live, 100), Operation::Advance), None);
        assert_eq!(of(at(Stage::Live, 0), Operation::Retreat), None);
        assert_eq!(of(at(Stage::Shadow, 10), ramp(None, 100)), None);
        assert_eq!(
            of(
                at(Stage::DualWrite, 100),
                Operation::Record(Event::BackfillStarted)
            ),
            None
        );
    }

    #[test]
    fn a_policy_gates_only_what_it_names() {
        let policy = ApprovalPolicy::parse("enter-live, contract").unwrap();
        assert_eq!(policy.describe(), "enter-live,contract");
        assert_eq!(
            policy.gates(&at(Stage::Shadow, 100), &Operation::Advance),
            Some(Gated::EnterLive)
        );
        assert_eq!(policy.gates(&at(Stage::Complete, 0), &ramp(None, 5)), None);
        assert!(ApprovalPolicy::parse("none").unwrap().is_empty());
        assert_eq!(
            ApprovalPolicy::parse("default").unwrap().describe(),
            "enter-live,ramp-complete,contract,step-back-from-complete"
        );
        let e = ApprovalPolicy::parse("enter-live,drop").unwrap_err();
        assert!(e.0.contains("unknown action \"drop\""), "{}", e.0);
    }
}
