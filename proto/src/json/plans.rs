//! Migration plans on the wire: `PUT /v1/migrations/{key}/plan` takes a [`PlanBody`]; the plan
//! endpoints answer a [`PlanView`].

use serde::{Deserialize, Serialize};
use switchyard_domain::guardrail::{Guardrails, OnBreach};
use switchyard_domain::plan::{Next, PlanStep, RolloutPlan, StagePlan, Then, Window};
use switchyard_domain::{BasisPoints, InvalidInput, Stage};

/// One stage of a plan: its rollout steps, each held at least `hold_seconds`, and what
/// follows the last (`advance` or `stop`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanStage {
    pub stage: String,
    pub steps: Vec<PlanStepBody>,
    pub then: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanStepBody {
    pub rollout_bp: u32,
    /// Minimum time at this rollout before the next step, from the migration's last change.
    #[serde(default)]
    pub hold_seconds: u64,
}

/// A plan's guardrails: each absent one at its default (`GET` answers them all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailsBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mismatch_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_error_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_ratio_vs_old: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ratio_vs_old: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_behind_seconds: Option<u64>,
    /// How long a running backfill may go without a batch, or hold itself back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backfill_stall_seconds: Option<u64>,
    /// How long the migration's target database may go unobserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unobserved_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_operations: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_comparisons: Option<u64>,
    /// `halt` (default) or `rollback` (back to the previous step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_breach: Option<String>,
}

impl GuardrailsBody {
    /// The defaults with what is given here put in their place.
    pub fn guardrails(&self) -> Result<Guardrails, InvalidInput> {
        let d = Guardrails::default();
        let g = Guardrails {
            max_mismatch_ratio: self.max_mismatch_ratio.unwrap_or(d.max_mismatch_ratio),
            max_new_error_ratio: self.max_new_error_ratio.unwrap_or(d.max_new_error_ratio),
            max_error_ratio_vs_old: self
                .max_error_ratio_vs_old
                .unwrap_or(d.max_error_ratio_vs_old),
            max_p99_ratio_vs_old: self.max_p99_ratio_vs_old.unwrap_or(d.max_p99_ratio_vs_old),
            max_behind_ms: self.max_behind_seconds.map_or(Ok(d.max_behind_ms), |s| {
                s.checked_mul(1000)
                    .ok_or_else(|| InvalidInput("max_behind_seconds is too large".to_owned()))
            })?,
            max_backfill_stall_ms: self.max_backfill_stall_seconds.map_or(
                Ok(d.max_backfill_stall_ms),
                |s| {
                    s.checked_mul(1000).ok_or_else(|| {
                        InvalidInput("max_backfill_stall_seconds is too large".to_owned())
                    })
                },
            )?,
            max_unobserved_ms: self.max_unobserved_seconds.map_or(
                Ok(d.max_unobserved_ms),
                |s| {
                    s.checked_mul(1000).ok_or_else(|| {
                        InvalidInput("max_unobserved_seconds is too large".to_owned())
                    })
                },
            )?,
            min_operations: self.min_operations.unwrap_or(d.min_operations),
            min_comparisons: self.min_comparisons.unwrap_or(d.min_comparisons),
            on_breach: self
                .on_breach
                .as_deref()
                .map_or(Ok(d.on_breach), OnBreach::parse)?,
        };
        g.check()?;
        Ok(g)
    }

    /// Every threshold, as in effect.
    pub fn of(g: &Guardrails) -> GuardrailsBody {
        GuardrailsBody {
            max_mismatch_ratio: Some(g.max_mismatch_ratio),
            max_new_error_ratio: Some(g.max_new_error_ratio),
            max_error_ratio_vs_old: Some(g.max_error_ratio_vs_old),
            max_p99_ratio_vs_old: Some(g.max_p99_ratio_vs_old),
            max_behind_seconds: Some(g.max_behind_ms / 1000),
            max_backfill_stall_seconds: Some(g.max_backfill_stall_ms / 1000),
            max_unobserved_seconds: Some(g.max_unobserved_ms / 1000),
            min_operations: Some(g.min_operations),
            min_comparisons: Some(g.min_comparisons),
            on_breach: Some(g.on_breach.as_str().to_owned()),
        }
    }
}

/// `PUT /v1/migrations/{key}/plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// Start from this template: its stages, with `stages` given here put in place of its
    /// stages of the same name, and `window` replacing its window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default)]
    pub stages: Vec<PlanStage>,
    /// Nothing is done before this time (Unix ms): a scheduled change.
    #[serde(default)]
    pub not_before_ms: Option<i64>,
    /// Steps only within these hours: `mon-fri 09:00-16:00 Europe/Berlin`.
    #[serde(default)]
    pub window: Option<String>,
    /// What halts the plan; absent thresholds at their defaults.
    #[serde(default)]
    pub guardrails: GuardrailsBody,
    pub reason: String,
}

/// A plan pause or resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanChange {
    pub reason: String,
}

/// What a plan does next: `wait` (why, and until when if it is time), `step` (due now), or
/// `done`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanNext {
    pub kind: String,
    pub description: String,
    pub at_ms: Option<i64>,
}

/// A migration's plan, who set it, whether it runs, and what it does next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanView {
    pub key: String,
    pub stages: Vec<PlanStage>,
    pub not_before_ms: Option<i64>,
    #[serde(default)]
    pub window: Option<String>,
    /// The template it started from, if any.
    #[serde(default)]
    pub template: Option<String>,
    /// Every guardrail as in effect.
    #[serde(default)]
    pub guardrails: GuardrailsBody,
    pub set_by: String,
    pub set_at_ms: i64,
    /// `running`, `paused` or `done`.
    pub status: String,
    pub status_reason: String,
    pub status_at_ms: i64,
    /// Why the next step was not taken at the driver's last look (a hold, a rule's refusal);
    /// empty when nothing held it.
    pub waiting: String,
    pub next: PlanNext,
}

/// `PUT /v1/plan-templates/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanTemplateBody {
    pub stages: Vec<PlanStage>,
    #[serde(default)]
    pub window: Option<String>,
    #[serde(default)]
    pub description: String,
    pub reason: String,
}

/// A named plan to start migrations from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanTemplate {
    pub name: String,
    pub stages: Vec<PlanStage>,
    pub window: Option<String>,
    pub description: String,
    pub updated_by: String,
    pub updated_at_ms: i64,
}

/// `GET /v1/plan-templates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanTemplates {
    pub templates: Vec<PlanTemplate>,
}

/// `GET /v1/plans`: every plan of the migrations the token sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plans {
    pub plans: Vec<PlanView>,
}

impl PlanTemplateBody {
    /// The template's plan (its shape checked; the plan's own rules by `plan::validate`).
    pub fn plan(&self) -> Result<RolloutPlan, InvalidInput> {
        Ok(RolloutPlan {
            stages: domain_stages(&self.stages)?,
            not_before_ms: None,
            window: self.window.as_deref().map(Window::parse).transpose()?,
        })
    }
}

fn domain_stages(stages: &[PlanStage]) -> Result<Vec<StagePlan>, InvalidInput> {
    stages
        .iter()
        .map(|s| {
            Ok(StagePlan {
                stage: Stage::parse(&s.stage)?,
                steps: s
                    .steps
                    .iter()
                    .map(|st| {
                        Ok(PlanStep {
                            rollout: BasisPoints::new(st.rollout_bp)?,
                            hold_ms: st.hold_seconds.checked_mul(1000).ok_or_else(|| {
                                InvalidInput("hold_seconds is too large".to_owned())
                            })?,
                        })
                    })
                    .collect::<Result<_, InvalidInput>>()?,
                then: Then::parse(&s.then)?,
            })
        })
        .collect()
}

impl PlanBody {
    /// The domain's plan as given here (its shape checked; the plan's own rules by
    /// `plan::validate`, after a template is merged in).
    pub fn plan(&self) -> Result<RolloutPlan, InvalidInput> {
        Ok(RolloutPlan {
            stages: domain_stages(&self.stages)?,
            not_before_ms: self.not_before_ms,
            window: self.window.as_deref().map(Window::parse).transpose()?,
        })
    }
}

/// The wire form of a plan's stages.
pub fn plan_stages(plan: &RolloutPlan) -> Vec<PlanStage> {
    plan.stages
        .iter()
        .map(|s| PlanStage {
            stage: s.stage.as_str().to_owned(),
            steps: s
                .steps
                .iter()
                .map(|st| PlanStepBody {
                    rollout_bp: st.rollout.get(),
                    hold_seconds: st.hold_ms / 1000,
                })
                .collect(),
            then: s.then.as_str().to_owned(),
        })
        .collect()
}

/// The wire form of what a plan does next; a step is due at `now_ms`.
pub fn plan_next(next: &Next, now_ms: i64) -> PlanNext {
    match next {
        Next::Wait { until_ms, why } => PlanNext {
            kind: "wait".to_owned(),
            description: why.clone(),
            at_ms: *until_ms,
        },
        Next::Step { step, .. } => PlanNext {
            kind: "step".to_owned(),
            description: step.clone(),
            at_ms: Some(now_ms),
        },
        Next::Done { why } => PlanNext {
            kind: "done".to_owned(),
            description: why.clone(),
            at_ms: None,
        },
    }
}
