//! Migration plans and the lease of the replica that drives them.
//!
//! The stored plan is JSON in its own storage shape (field names kept as they are, like the
//! migration state's), apart from the domain's types and the API's.

use super::{Store, StoreError, Tx};
use serde::{Deserialize, Serialize};
use switchyard_domain::guardrail::{Guardrails, OnBreach};
use switchyard_domain::plan::{PlanStep, RolloutPlan, StagePlan, Then, Window};
use switchyard_domain::{BasisPoints, Stage};

/// Whether a plan takes its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanStatus {
    Running,
    /// Stopped by a person (or by a manual change of the migration) until someone resumes it.
    Paused,
    /// Stopped by a guardrail until someone resumes it.
    Halted,
    /// Every step taken.
    Done,
}

impl PlanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanStatus::Running => "running",
            PlanStatus::Paused => "paused",
            PlanStatus::Halted => "halted",
            PlanStatus::Done => "done",
        }
    }

    fn parse(raw: &str) -> Result<Self, StoreError> {
        match raw {
            "running" => Ok(PlanStatus::Running),
            "paused" => Ok(PlanStatus::Paused),
            "halted" => Ok(PlanStatus::Halted),
            "done" => Ok(PlanStatus::Done),
            other => Err(StoreError::Corrupt(format!(
                "unknown plan status {other:?}"
            ))),
        }
    }
}

/// A migration's plan with who set it and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPlan {
    pub key: String,
    pub plan: RolloutPlan,
    /// The token that set it: its steps are made in that token's name and scope.
    pub set_by_token: u64,
    pub set_by_name: String,
    pub set_at_ms: i64,
    pub status: PlanStatus,
    /// Why it is paused or done (who paused it, the manual change, the last step).
    pub status_reason: String,
    pub status_at_ms: i64,
    /// Why the next step is not taken yet, as the driver last found (a hold, a refusal with
    /// its rule); empty when nothing holds it.
    pub waiting: String,
    /// The template it started from, if any.
    pub template: Option<String>,
    pub guardrails: Guardrails,
}

#[derive(Serialize, Deserialize)]
struct PlanJson {
    stages: Vec<StageJson>,
    #[serde(default)]
    not_before_ms: Option<i64>,
    /// As written: `mon-fri 09:00-16:00 Europe/Berlin`.
    #[serde(default)]
    window: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    template: Option<String>,
    /// Thresholds as set (absent in plans stored before guardrails: the defaults).
    #[serde(default)]
    guardrails: Option<GuardrailsJson>,
}

#[derive(Serialize, Deserialize)]
struct GuardrailsJson {
    max_mismatch_ratio: f64,
    max_new_error_ratio: f64,
    max_error_ratio_vs_old: f64,
    max_p99_ratio_vs_old: f64,
    max_behind_ms: u64,
    /// Absent in plans stored before this guardrail: the default.
    #[serde(default = "default_backfill_stall_ms")]
    max_backfill_stall_ms: u64,
    #[serde(default = "default_unobserved_ms")]
    max_unobserved_ms: u64,
    min_operations: u64,
    min_comparisons: u64,
    on_breach: String,
}

fn default_backfill_stall_ms() -> u64 {
    Guardrails::default().max_backfill_stall_ms
}

fn default_unobserved_ms() -> u64 {
    Guardrails::default().max_unobserved_ms
}

#[derive(Serialize, Deserialize)]
struct StageJson {
    stage: String,
    steps: Vec<StepJson>,
    then: String,
}

#[derive(Serialize, Deserialize)]
struct StepJson {
    rollout_bp: u32,
    hold_ms: u64,
}

fn plan_json(
    plan: &RolloutPlan,
    template: Option<&str>,
    guardrails: &Guardrails,
) -> Result<String, StoreError> {
    serde_json::to_string(&PlanJson {
        stages: plan
            .stages
            .iter()
            .map(|s| StageJson {
                stage: s.stage.as_str().to_owned(),
                steps: s
                    .steps
                    .iter()
                    .map(|st| StepJson {
                        rollout_bp: st.rollout.get(),
                        hold_ms: st.hold_ms,
                    })
                    .collect(),
                then: s.then.as_str().to_owned(),
            })
            .collect(),
        not_before_ms: plan.not_before_ms,
        window: plan.window.as_ref().map(Window::describe),
        template: template.map(str::to_owned),
        guardrails: Some(GuardrailsJson {
            max_mismatch_ratio: guardrails.max_mismatch_ratio,
            max_new_error_ratio: guardrails.max_new_error_ratio,
            max_error_ratio_vs_old: guardrails.max_error_ratio_vs_old,
            max_p99_ratio_vs_old: guardrails.max_p99_ratio_vs_old,
            max_behind_ms: guardrails.max_behind_ms,
            max_backfill_stall_ms: guardrails.max_backfill_stall_ms,
            max_unobserved_ms: guardrails.max_unobserved_ms,
            min_operations: guardrails.min_operations,
            min_comparisons: guardrails.min_comparisons,
            on_breach: guardrails.on_breach.as_str().to_owned(),
        }),
    })
    .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse_plan(
    json: &str,
    key: &str,
) -> Result<(RolloutPlan, Option<String>, Guardrails), StoreError> {
    let corrupt = |e: String| StoreError::Corrupt(format!("plan of {key}: {e}"));
    let stored: PlanJson = serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
    let guardrails = match &stored.guardrails {
        None => Guardrails::default(),
        Some(g) => Guardrails {
            max_mismatch_ratio: g.max_mismatch_ratio,
            max_new_error_ratio: g.max_new_error_ratio,
            max_error_ratio_vs_old: g.max_error_ratio_vs_old,
            max_p99_ratio_vs_old: g.max_p99_ratio_vs_old,
            max_behind_ms: g.max_behind_ms,
            max_backfill_stall_ms: g.max_backfill_stall_ms,
            max_unobserved_ms: g.max_unobserved_ms,
            min_operations: g.min_operations,
            min_comparisons: g.min_comparisons,
            on_breach: OnBreach::parse(&g.on_breach).map_err(|e| corrupt(e.0))?,
        },
    };
    let stages = stored
        .stages
        .into_iter()
        .map(|s| {
            Ok(StagePlan {
                stage: Stage::parse(&s.stage).map_err(|e| corrupt(e.0))?,
                steps: s
                    .steps
                    .into_iter()
                    .map(|st| {
                        Ok(PlanStep {
                            rollout: BasisPoints::new(st.rollout_bp).map_err(|e| corrupt(e.0))?,
                            hold_ms: st.hold_ms,
                        })
                    })
                    .collect::<Result<_, StoreError>>()?,
                then: Then::parse(&s.then).map_err(|e| corrupt(e.0))?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok((
        RolloutPlan {
            stages,
            not_before_ms: stored.not_before_ms,
            window: stored
                .window
                .as_deref()
                .map(Window::parse)
                .transpose()
                .map_err(|e| corrupt(e.0))?,
        },
        stored.template,
        guardrails,
    ))
}

type PlanRow = (
    String,
    String,
    i64,
    String,
    i64,
    String,
    String,
    i64,
    String,
);

const PLAN_COLUMNS: &str = "migration_key, plan, set_by_token, set_by_name, set_at_ms, status, \
                            status_reason, status_at_ms, waiting";

fn from_row(row: PlanRow) -> Result<StoredPlan, StoreError> {
    let (key, plan, token, name, set_at, status, reason, status_at, waiting) = row;
    let (plan, template, guardrails) = parse_plan(&plan, &key)?;
    Ok(StoredPlan {
        plan,
        template,
        guardrails,
        key,
        set_by_token: token as u64,
        set_by_name: name,
        set_at_ms: set_at,
        status: PlanStatus::parse(&status)?,
        status_reason: reason,
        status_at_ms: status_at,
        waiting,
    })
}

/// A named plan to start migrations from.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTemplate {
    pub name: String,
    pub plan: RolloutPlan,
    pub description: String,
    pub updated_by: String,
    pub updated_at_ms: i64,
}

impl Store {
    /// Sets (or replaces) `key`'s plan, running, from `now_ms`.
    pub async fn set_plan(&self, stored: &StoredPlan) -> Result<(), StoreError> {
        let json = plan_json(&stored.plan, stored.template.as_deref(), &stored.guardrails)?;
        self.write(|tx| {
            Box::pin(async move {
                sqlx::query("DELETE FROM plans WHERE migration_key = $1")
                    .bind(&stored.key)
                    .execute(&mut **tx)
                    .await?;
                sqlx::query(&format!(
                    "INSERT INTO plans ({PLAN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ))
                .bind(&stored.key)
                .bind(&json)
                .bind(stored.set_by_token as i64)
                .bind(&stored.set_by_name)
                .bind(stored.set_at_ms)
                .bind(stored.status.as_str())
                .bind(&stored.status_reason)
                .bind(stored.status_at_ms)
                .bind(&stored.waiting)
                .execute(&mut **tx)
                .await?;
                Ok(())
            })
        })
        .await
    }

    pub async fn plan(&self, key: &str) -> Result<Option<StoredPlan>, StoreError> {
        let row: Option<PlanRow> = sqlx::query_as(&format!(
            "SELECT {PLAN_COLUMNS} FROM plans WHERE migration_key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(from_row).transpose()
    }

    /// Every plan, by migration key.
    pub async fn all_plans(&self) -> Result<Vec<StoredPlan>, StoreError> {
        self.plans_in(None).await
    }

    /// Every plan that takes steps.
    pub async fn running_plans(&self) -> Result<Vec<StoredPlan>, StoreError> {
        self.plans_in(Some(PlanStatus::Running)).await
    }

    /// The plans with `status` (every one without), by migration key.
    async fn plans_in(&self, status: Option<PlanStatus>) -> Result<Vec<StoredPlan>, StoreError> {
        let rows: Vec<PlanRow> = sqlx::query_as(&format!(
            "SELECT {PLAN_COLUMNS} FROM plans WHERE $1 = '' OR status = $1 ORDER BY migration_key"
        ))
        .bind(status.map_or("", PlanStatus::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(from_row).collect()
    }

    /// Sets a plan's status (and why), if it has a plan; `from` limits it to plans in one of
    /// those statuses. Whether a plan changed.
    pub async fn set_plan_status(
        &self,
        key: &str,
        from: &[PlanStatus],
        status: PlanStatus,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.write(|tx| Box::pin(plan_status_in(tx, key, from, status, reason, now_ms)))
            .await
    }

    /// Records why the next step waits, if that changed (the driver looks often; most looks
    /// find the same reason).
    pub async fn set_plan_waiting(&self, key: &str, waiting: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE plans SET waiting = $2 WHERE migration_key = $1 AND waiting <> $2",
                )
                .bind(key)
                .bind(waiting)
                .execute(&mut **tx)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Sets (or replaces) a template.
    pub async fn set_template(&self, t: &StoredTemplate) -> Result<(), StoreError> {
        let json = plan_json(&t.plan, None, &Guardrails::default())?;
        self.write(|tx| {
            Box::pin(async move {
                sqlx::query("DELETE FROM plan_templates WHERE name = $1")
                    .bind(&t.name)
                    .execute(&mut **tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO plan_templates (name, plan, description, updated_by, \
                     updated_at_ms) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&t.name)
                .bind(&json)
                .bind(&t.description)
                .bind(&t.updated_by)
                .bind(t.updated_at_ms)
                .execute(&mut **tx)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Every template, by name.
    pub async fn templates(&self) -> Result<Vec<StoredTemplate>, StoreError> {
        self.templates_named(None).await
    }

    /// The template called `name`, if there is one.
    pub async fn template(&self, name: &str) -> Result<Option<StoredTemplate>, StoreError> {
        Ok(self.templates_named(Some(name)).await?.pop())
    }

    async fn templates_named(&self, name: Option<&str>) -> Result<Vec<StoredTemplate>, StoreError> {
        let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT name, plan, description, updated_by, updated_at_ms FROM plan_templates \
             WHERE $1 = '' OR name = $1 ORDER BY name",
        )
        .bind(name.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(name, plan, description, updated_by, updated_at_ms)| {
                Ok(StoredTemplate {
                    plan: parse_plan(&plan, &format!("template {name}"))?.0,
                    name,
                    description,
                    updated_by,
                    updated_at_ms,
                })
            })
            .collect()
    }

    /// Removes a template; whether there was one.
    pub async fn remove_template(&self, name: &str) -> Result<bool, StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                let done = sqlx::query("DELETE FROM plan_templates WHERE name = $1")
                    .bind(name)
                    .execute(&mut **tx)
                    .await?;
                Ok(done.rows_affected() > 0)
            })
        })
        .await
    }

    /// Takes or renews the lease to drive every plan until `until_ms`; `false` while another
    /// replica holds it. One driver at a time: no step is taken twice at once.
    pub async fn plan_driver_lease(
        &self,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        self.lease(super::Lease::PlanDriver, "plans", holder, now_ms, until_ms)
            .await
    }
}

/// [`Store::set_plan_status`] inside a transaction (a manual change pauses the plan in the
/// change's own transaction).
pub(super) async fn plan_status_in(
    tx: &mut Tx<'_>,
    key: &str,
    from: &[PlanStatus],
    status: PlanStatus,
    reason: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let mut changed = false;
    for current in from {
        let done = sqlx::query(
            "UPDATE plans SET status = $2, status_reason = $3, status_at_ms = $4, waiting = '' \
             WHERE migration_key = $1 AND status = $5",
        )
        .bind(key)
        .bind(status.as_str())
        .bind(reason)
        .bind(now_ms)
        .bind(current.as_str())
        .execute(&mut **tx)
        .await?;
        changed |= done.rows_affected() > 0;
    }
    Ok(changed)
}
