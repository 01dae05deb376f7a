//! The stages an entity moves through, and what each stage means for a read or a write.

use std::fmt;

/// Ordered: a migration's stage moves one step at a time along this list (rule 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Off,
    DualWrite,
    Shadow,
    Live,
    Rampdown,
    Complete,
    /// Terminal: the old shape was dropped. Recorded only through the contract gate (rule 7).
    Contracted,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Off,
        Stage::DualWrite,
        Stage::Shadow,
        Stage::Live,
        Stage::Rampdown,
        Stage::Complete,
        Stage::Contracted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Off => "off",
            Stage::DualWrite => "dual_write",
            Stage::Shadow => "shadow",
            Stage::Live => "live",
            Stage::Rampdown => "rampdown",
            Stage::Complete => "complete",
            Stage::Contracted => "contracted",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, crate::InvalidInput> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| {
                crate::InvalidInput(format!(
                    "unknown stage {:?}: allowed off, dual_write, shadow, live, rampdown, \
                     complete, contracted",
                    crate::types::truncate_for_message(raw)
                ))
            })
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn next(self) -> Option<Stage> {
        Self::ALL.get(self.index() + 1).copied()
    }

    pub fn prev(self) -> Option<Stage> {
        self.index().checked_sub(1).map(|i| Self::ALL[i])
    }

    /// What an operation does at this stage (the table in the README's "Concepts").
    pub fn plan(self) -> Plan {
        use Side::{Both, New, Old};
        let (write, authoritative_write, read, return_value, shadow_compare) = match self {
            Stage::Off => (Old, Old, Old, Old, false),
            Stage::DualWrite => (Both, Old, Old, Old, false),
            Stage::Shadow => (Both, Old, Both, Old, true),
            Stage::Live => (Both, New, Both, New, true),
            Stage::Rampdown => (Both, New, New, New, false),
            Stage::Complete | Stage::Contracted => (New, New, New, New, false),
        };
        Plan {
            stage: self,
            write,
            authoritative_write,
            read,
            return_value,
            shadow_compare,
        }
    }

    /// Whether an entity at this stage can be handed an old-shape value.
    pub fn returns_old(self) -> bool {
        self.plan().return_value == Side::Old
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which shape an operation touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Old,
    New,
    Both,
}

impl Side {
    pub fn includes_old(self) -> bool {
        matches!(self, Side::Old | Side::Both)
    }

    pub fn includes_new(self) -> bool {
        matches!(self, Side::New | Side::Both)
    }
}

/// The read/write plan for one operation on one entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub stage: Stage,
    /// Where writes go.
    pub write: Side,
    /// The side whose write must succeed (and runs first); never `Both`.
    pub authoritative_write: Side,
    /// Where reads go.
    pub read: Side,
    /// Whose value is returned to the caller; never `Both`.
    pub return_value: Side,
    /// Whether the two reads are compared (on a sample).
    pub shadow_compare: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_step_in_order_and_round_trip_by_name() {
        let mut walked = vec![Stage::Off];
        while let Some(next) = walked.last().unwrap().next() {
            assert_eq!(next.prev(), walked.last().copied());
            walked.push(next);
        }
        assert_eq!(walked, Stage::ALL);
        for stage in Stage::ALL {
            assert_eq!(Stage::parse(stage.as_str()), Ok(stage));
            assert_eq!(stage.to_string(), stage.as_str());
        }
        assert!(Stage::parse("Live").unwrap_err().0.contains("allowed off"));
    }

    #[test]
    fn only_shadow_and_live_compare_and_old_values_end_at_live() {
        let comparing: Vec<Stage> = Stage::ALL
            .into_iter()
            .filter(|s| s.plan().shadow_compare)
            .collect();
        assert_eq!(comparing, [Stage::Shadow, Stage::Live]);
        let old: Vec<Stage> = Stage::ALL.into_iter().filter(|s| s.returns_old()).collect();
        assert_eq!(old, [Stage::Off, Stage::DualWrite, Stage::Shadow]);
        for stage in Stage::ALL {
            let plan = stage.plan();
            assert_ne!(plan.authoritative_write, Side::Both);
            assert_ne!(plan.return_value, Side::Both);
            assert!(plan.write.includes_old() || plan.write.includes_new());
        }
    }
}
