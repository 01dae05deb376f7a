//! The rollout front: one moving boundary per migration.
//!
//! `(stage, rollout)` puts every entity whose bucket is below `rollout` at `stage` and every
//! other entity one stage behind, so `(S, 10000)` and `(next(S), 0)` describe the same traffic.

use crate::{BasisPoints, Stage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Front {
    pub stage: Stage,
    pub rollout: BasisPoints,
}

impl Front {
    pub fn new(stage: Stage, rollout: BasisPoints) -> Self {
        Self { stage, rollout }
    }

    /// The stage of an entity with this bucket; `None` (no entity key) gets the trailing stage.
    #[inline]
    pub fn stage_for(self, bucket: Option<u32>) -> Stage {
        match bucket {
            Some(b) if b < self.rollout.get() => self.stage,
            Some(_) => self.behind(),
            None => self.trailing(),
        }
    }

    /// The stage of the entities the front has not reached.
    #[inline]
    fn behind(self) -> Stage {
        match self.stage {
            // Nothing is behind `off`, and `contracted` is all-or-nothing.
            Stage::Off | Stage::Contracted => self.stage,
            s => s.prev().unwrap_or(s),
        }
    }

    /// The most advanced stage any entity is at.
    pub fn leading(self) -> Stage {
        if self.rollout.is_zero() {
            self.behind()
        } else {
            self.stage
        }
    }

    /// The least advanced stage any entity is at.
    #[inline]
    pub fn trailing(self) -> Stage {
        if self.rollout.is_full() {
            self.stage
        } else {
            self.behind()
        }
    }

    /// Basis points of entities at `complete` or beyond: the share whose old shape gets no
    /// more writes.
    pub fn share_past_old_writes(self) -> u32 {
        match self.stage {
            Stage::Complete => self.rollout.get(),
            Stage::Contracted => 10_000,
            _ => 0,
        }
    }

    /// Whether two fronts route every bucket identically.
    pub fn same_traffic(self, other: Front) -> bool {
        self.normalized() == other.normalized()
    }

    /// `(S, 10000)` rewritten as `(next(S), 0)` where a next stage exists, so equal traffic
    /// compares equal. `off` ignores its rollout.
    fn normalized(self) -> Front {
        match self.stage {
            Stage::Off => Front::new(Stage::DualWrite, BasisPoints::ZERO),
            Stage::Complete if self.rollout.is_full() => {
                Front::new(Stage::Contracted, self.rollout)
            }
            Stage::Contracted => self,
            s if self.rollout.is_full() => Front::new(s.next().unwrap_or(s), BasisPoints::ZERO),
            _ => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bp(v: u32) -> BasisPoints {
        BasisPoints::new(v).unwrap()
    }

    #[test]
    fn entities_below_the_rollout_lead() {
        let front = Front::new(Stage::Shadow, bp(2_500));
        assert_eq!(front.stage_for(Some(0)), Stage::Shadow);
        assert_eq!(front.stage_for(Some(2_499)), Stage::Shadow);
        assert_eq!(front.stage_for(Some(2_500)), Stage::DualWrite);
        assert_eq!(front.stage_for(Some(9_999)), Stage::DualWrite);
        assert_eq!(front.stage_for(None), Stage::DualWrite);
        assert_eq!(
            Front::new(Stage::Shadow, BasisPoints::FULL).stage_for(None),
            Stage::Shadow
        );
    }

    proptest! {
        #[test]
        fn full_rollout_equals_next_stage_at_zero(stage_i in 1usize..5, bucket in 0u32..10_000) {
            let stage = Stage::ALL[stage_i];
            let full = Front::new(stage, BasisPoints::FULL);
            let next = Front::new(stage.next().unwrap(), BasisPoints::ZERO);
            prop_assert_eq!(full.stage_for(Some(bucket)), next.stage_for(Some(bucket)));
            prop_assert_eq!(full.stage_for(None), next.stage_for(None));
            prop_assert!(full.same_traffic(next));
        }

        #[test]
        fn raising_the_rollout_only_moves_entities_forward(
            stage_i in 0usize..7, a in 0u32..=10_000, b in 0u32..=10_000, bucket in 0u32..10_000,
        ) {
            let stage = Stage::ALL[stage_i];
            let (lo, hi) = (a.min(b), a.max(b));
            let before = Front::new(stage, bp(lo)).stage_for(Some(bucket));
            let after = Front::new(stage, bp(hi)).stage_for(Some(bucket));
            prop_assert!(after >= before);
            let f = Front::new(stage, bp(a));
            prop_assert!(f.trailing() <= f.stage_for(Some(bucket)));
            prop_assert!(f.stage_for(Some(bucket)) <= f.leading());
        }
    }
}
