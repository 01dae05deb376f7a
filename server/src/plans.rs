//! Migration plans: setting, showing, pausing and resuming them, and the driver that takes
//! their steps.
//!
//! One replica drives every plan at a time (a lease in the shared database). Each look, for
//! each running plan, it asks [`plan::next`] what follows the migration's front now and, for a
//! step, makes it as an ordinary change through the safety rules, with the version it looked
//! at, in the name of the token that set the plan. Nothing of the plan's position is stored,
//! so a driver that dies mid-step leaves nothing to repeat or lose: the next driver reads the
//! front and carries on from there.

use crate::app::App;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::store::{PlanStatus, StoredPlan, StoredTemplate};
use std::sync::Arc;
use std::time::Duration;
use switchyard_domain::guardrail;
use switchyard_domain::plan::{self, Next};
use switchyard_domain::rules::parse_reason;
use switchyard_domain::types::{TextKind, check_text};
use switchyard_domain::{MigrationKey, Permission, Stage};
use tokio::sync::watch;

impl App {
    /// The first guardrail what clients reported since the migration's last change, and the
    /// fleet, cross.
    async fn breach(
        &self,
        stored: &StoredPlan,
        m: &switchyard_domain::Migration,
        now: i64,
    ) -> Result<Option<guardrail::Breach>, ApiError> {
        let key = m.key.as_str();
        let since = m.updated_at_ms;
        let mut traffic = switchyard_domain::traffic::TrafficCounts::default();
        for (_, counts) in self
            .store
            .traffic(key, switchyard_domain::traffic::minute_of(since))
            .await?
        {
            traffic.add(&counts);
        }
        let live = self.store.fleet(key, now, self.client_ttl).await?.live;
        let behind: Vec<guardrail::Behind> = live
            .iter()
            .filter(|i| i.applied_version < m.version)
            .map(|i| guardrail::Behind {
                service: i.service.clone(),
                instance_id: i.instance_id.clone(),
            })
            .collect();
        // A running backfill that a person has not paused: its last batch, and whether its
        // runner holds itself back (from the checkpoint every replica reads alike).
        let backfill = if m.backfill.status == switchyard_domain::BackfillStatus::Running
            && !m.backfill.paused
        {
            let checkpoint = self.store.checkpoint(key).await?;
            Some(guardrail::BackfillWatch {
                // Before its first batch: the migration's last change (no earlier than the
                // start).
                last_batch_ms: checkpoint
                    .as_ref()
                    .map_or(m.updated_at_ms, |c| c.updated_at_ms),
                held: checkpoint
                    .filter(|c| c.throttled_since_ms > 0)
                    .map(|c| (c.throttled_since_ms, c.throttle_reason)),
            })
        } else {
            None
        };
        if let Some(breach) =
            stored
                .guardrails
                .breach(&traffic, &behind, backfill.as_ref(), since, now)
        {
            return Ok(Some(breach));
        }
        if m.database.target.is_none() {
            return Ok(None);
        }
        // The database's own evidence: what the observer saw since the last change.
        let observation = self.observation_since(m, since).await?;
        let mut known: Vec<String> = live.into_iter().map(|i| i.service).collect();
        known.extend(m.expected_services.iter().cloned());
        Ok(stored.guardrails.database_breach(
            guardrail::DatabaseWatch {
                observation: &observation,
                old_shape_retiring: matches!(m.stage, Stage::Rampdown | Stage::Complete),
                known_services: &known,
            },
            since,
            now,
        ))
    }

    /// Halts the plan for `breach`; with `on_breach: rollback`, first moves the front back to
    /// the plan's previous step in this stage (through the rules, which may refuse it).
    async fn halt(
        &self,
        stored: &StoredPlan,
        m: &switchyard_domain::Migration,
        breach: guardrail::Breach,
        now: i64,
    ) -> Result<(), ApiError> {
        let key = m.key.as_str();
        let mut why = format!(
            "halted by guardrail {}: {}",
            breach.guardrail, breach.figures
        );
        if stored.guardrails.on_breach == guardrail::OnBreach::Rollback && !m.rollout_bp.is_zero() {
            let back = stored
                .plan
                .stages
                .iter()
                .find(|s| s.stage == m.stage)
                .and_then(|s| s.steps.iter().rev().find(|st| st.rollout < m.rollout_bp))
                .map_or(switchyard_domain::BasisPoints::ZERO, |st| st.rollout);
            let who = match self.plan_principal(stored).await? {
                Some(who) => who,
                None => {
                    why.push_str("; not rolled back: the token that set the plan was revoked");
                    return self.halted(key, &why, now).await;
                }
            };
            let reason = format!(
                "plan rollback: {} {} → {back} ({} breached)",
                m.stage, m.rollout_bp, breach.guardrail
            );
            let op = switchyard_domain::Operation::SetRollout {
                stage: None,
                rollout: back,
            };
            match self
                .mutate_by_plan(&who, key, m.version, &reason, op, false)
                .await
            {
                Ok(_) => why.push_str(&format!("; rolled back to {} {back}", m.stage)),
                Err(e) => why.push_str(&format!("; not rolled back: {}", e.public_message())),
            }
        }
        self.halted(key, &why, now).await
    }

    async fn halted(&self, key: &str, why: &str, now: i64) -> Result<(), ApiError> {
        if self
            .store
            .set_plan_status(key, &[PlanStatus::Running], PlanStatus::Halted, why, now)
            .await?
        {
            tracing::warn!(key, "plan {why}");
            crate::metrics::record_plan_halt();
            self.notify(key, "plan_halt", serde_json::json!({ "why": why }))
                .await;
        }
        Ok(())
    }
}

/// The longest description a template may have.
pub const MAX_TEMPLATE_DESCRIPTION: usize = 500;

/// A plan with what it does next, as of now.
#[derive(Debug, Clone)]
pub struct PlanView {
    pub stored: StoredPlan,
    pub next: Next,
}

impl App {
    /// Sets (or replaces) `key`'s plan; it runs from now, in `who`'s name.
    pub async fn set_plan(
        &self,
        who: &Principal,
        key: &str,
        body: &switchyard_proto::json::PlanBody,
    ) -> Result<PlanView, ApiError> {
        // Who may, before what: a caller without the role learns nothing from validation.
        let key = self.plan_key(who, key)?;
        let reason = parse_reason(&body.reason)?;
        let given = body.plan()?;
        let template = match &body.template {
            Some(name) => Some(self.template(name).await?),
            None => None,
        };
        let plan = match &template {
            Some(t) => plan::merge(&t.plan, &given),
            None => given,
        };
        let guardrails = body.guardrails.guardrails()?;
        plan::validate(&plan)?;
        if let Some(window) = &plan.window {
            Zone::of(window)?;
        }
        let m = self.get_migration(who, key.as_str())?;
        if m.stage == Stage::Contracted {
            return Err(ApiError::invalid(format!(
                "{key} is contracted, which is final: there is nothing left to plan"
            )));
        }
        let now = self.now();
        let stored = StoredPlan {
            key: key.to_string(),
            plan,
            set_by_token: who.token_id,
            set_by_name: who.name.clone(),
            set_at_ms: now,
            status: PlanStatus::Running,
            status_reason: format!("set by {}: {}", who.actor(), reason.as_str()),
            status_at_ms: now,
            waiting: String::new(),
            template: template.map(|t| t.name),
            guardrails,
        };
        self.store.set_plan(&stored).await?;
        tracing::info!(key = %key, actor = %who.actor(), "plan set");
        Ok(self.view(stored, now))
    }

    /// Every plan of the migrations `who` sees (a dashboard's list: one call, never a 404 for
    /// a migration without one).
    pub async fn plans(&self, who: &Principal) -> Result<Vec<PlanView>, ApiError> {
        who.require(Permission::Read)?;
        let now = self.now();
        Ok(self
            .store
            .all_plans()
            .await?
            .into_iter()
            .filter(|p| who.sees(&p.key))
            .map(|p| self.view(p, now))
            .collect())
    }

    pub async fn plan(&self, who: &Principal, key: &str) -> Result<PlanView, ApiError> {
        let m = self.get_migration(who, key)?;
        let stored = self.stored_plan(m.key.as_str()).await?;
        Ok(self.view(stored, self.now()))
    }

    /// Pauses a running plan (`pause`) or resumes a paused one.
    pub async fn pause_plan(
        &self,
        who: &Principal,
        key: &str,
        pause: bool,
        reason: &str,
    ) -> Result<PlanView, ApiError> {
        let key = self.plan_key(who, key)?;
        let reason = parse_reason(reason)?;
        self.get_migration(who, key.as_str())?;
        let stored = self.stored_plan(key.as_str()).await?;
        let (from, to, verb): (&[PlanStatus], _, _) = if pause {
            (&[PlanStatus::Running], PlanStatus::Paused, "paused")
        } else {
            (
                &[PlanStatus::Paused, PlanStatus::Halted],
                PlanStatus::Running,
                "resumed",
            )
        };
        if !from.contains(&stored.status) {
            return Err(ApiError::NotApplicable {
                message: format!(
                    "the plan of {key} is {}, so it cannot be {verb}",
                    stored.status.as_str()
                ),
                current: None,
            });
        }
        let now = self.now();
        let why = format!("{verb} by {}: {}", who.actor(), reason.as_str());
        self.store
            .set_plan_status(key.as_str(), from, to, &why, now)
            .await?;
        tracing::info!(key = %key, actor = %who.actor(), "plan {verb}");
        let stored = self.stored_plan(key.as_str()).await?;
        Ok(self.view(stored, now))
    }

    /// Every template (any role may read them).
    pub async fn templates(&self, who: &Principal) -> Result<Vec<StoredTemplate>, ApiError> {
        who.require(Permission::Read)?;
        Ok(self.store.templates().await?)
    }

    /// Sets (or replaces) a template (operator role). Migrations already started from it keep
    /// their own copy.
    pub async fn set_template(
        &self,
        who: &Principal,
        name: &str,
        body: &switchyard_proto::json::PlanTemplateBody,
    ) -> Result<StoredTemplate, ApiError> {
        who.require(Permission::Operate)?;
        let name = plan::parse_template_name(name)?;
        let reason = parse_reason(&body.reason)?;
        let plan = body.plan()?;
        plan::validate(&plan)?;
        if let Some(window) = &plan.window {
            Zone::of(window)?;
        }
        check_text("template description", &body.description, TextKind::Prose)?;
        let description = body.description.trim().to_owned();
        if description.chars().count() > MAX_TEMPLATE_DESCRIPTION {
            return Err(ApiError::invalid(format!(
                "the template description is too long: at most {MAX_TEMPLATE_DESCRIPTION} characters"
            )));
        }
        let stored = StoredTemplate {
            name,
            plan,
            description,
            updated_by: who.actor(),
            updated_at_ms: self.now(),
        };
        self.store.set_template(&stored).await?;
        tracing::info!(template = %stored.name, actor = %who.actor(), reason = reason.as_str(), "plan template set");
        Ok(stored)
    }

    /// Removes a template (operator role); answers what it was.
    pub async fn remove_template(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<StoredTemplate, ApiError> {
        who.require(Permission::Operate)?;
        let name = plan::parse_template_name(name)?;
        let Some(removed) = self.store.template(&name).await? else {
            return Err(ApiError::NotFound(format!(
                "there is no plan template {name}"
            )));
        };
        if !self.store.remove_template(&name).await? {
            return Err(ApiError::NotFound(format!(
                "there is no plan template {name}"
            )));
        }
        tracing::info!(template = %name, actor = %who.actor(), "plan template removed");
        Ok(removed)
    }

    async fn template(&self, name: &str) -> Result<StoredTemplate, ApiError> {
        let name = plan::parse_template_name(name)?;
        self.store.template(&name).await?.ok_or_else(|| {
            ApiError::invalid(format!(
                "there is no plan template {name}: see `switchyard plan template list`"
            ))
        })
    }

    /// Who a plan's steps are made as: the token that set it, as it is now (its role and
    /// scope), named as the plan's; `None` once that token is revoked.
    async fn plan_principal(&self, stored: &StoredPlan) -> Result<Option<Principal>, ApiError> {
        Ok(self
            .store
            .live_token(stored.set_by_token)
            .await?
            .map(|token| Principal {
                token_id: token.id,
                name: format!("plan of {}", token.name),
                role: token.role,
                scope: token.scope,
            }))
    }

    /// Records why the plan's next step waits, only when that changed: the driver looks every
    /// interval, and an unchanged reason needs no write transaction.
    async fn note_waiting(&self, stored: &StoredPlan, why: &str) -> Result<(), ApiError> {
        if stored.waiting != why {
            self.store.set_plan_waiting(&stored.key, why).await?;
        }
        Ok(())
    }

    fn plan_key(&self, who: &Principal, key: &str) -> Result<MigrationKey, ApiError> {
        who.require(Permission::Operate)?;
        let key = MigrationKey::parse(key)?;
        who.require_on(Permission::Operate, key.as_str())?;
        Ok(key)
    }

    /// The migration's plan; a migration without one is answered as any request that does
    /// not apply to its state (422), the migration itself being there.
    async fn stored_plan(&self, key: &str) -> Result<StoredPlan, ApiError> {
        self.store
            .plan(key)
            .await?
            .ok_or_else(|| ApiError::NotApplicable {
                message: format!(
                    "migration {key} has no plan: set one with `switchyard plan set {key} …`"
                ),
                current: None,
            })
    }

    fn view(&self, stored: StoredPlan, now: i64) -> PlanView {
        let next = match (stored.status, self.hub.get(&stored.key)) {
            (PlanStatus::Running, Some(m)) => next_for(&stored.plan, &m, now),
            (PlanStatus::Paused | PlanStatus::Halted, _) => Next::Wait {
                until_ms: None,
                why: format!(
                    "{}: resume it with `switchyard plan resume {}`",
                    stored.status.as_str(),
                    stored.key
                ),
            },
            _ => Next::Done {
                why: stored.status_reason.clone(),
            },
        };
        PlanView { stored, next }
    }

    /// One look at every running plan: each takes at most one step.
    async fn drive_plans(&self) -> Result<(), ApiError> {
        for stored in self.store.running_plans().await? {
            if let Err(e) = self.drive(&stored).await {
                tracing::warn!(key = %stored.key, error = %e, "driving a plan failed; retrying");
            }
        }
        Ok(())
    }

    async fn drive(&self, stored: &StoredPlan) -> Result<(), ApiError> {
        let key = stored.key.as_str();
        let Some(m) = self.hub.get(key) else {
            return Ok(());
        };
        let now = self.now();
        // The guardrails first: a breach halts the plan before it takes another step.
        if m.stage >= Stage::DualWrite && m.stage <= Stage::Complete {
            if let Some(breach) = self.breach(stored, &m, now).await? {
                return self.halt(stored, &m, breach, now).await;
            }
        }
        match next_for(&stored.plan, &m, now) {
            Next::Wait { why, .. } => self.note_waiting(stored, &why).await?,
            Next::Done { why } => {
                self.store
                    .set_plan_status(key, &[PlanStatus::Running], PlanStatus::Done, &why, now)
                    .await?;
                tracing::info!(key, "plan done: {why}");
            }
            Next::Step { op, step } => {
                // In the name and scope of the token that set the plan, as it is now: a plan
                // set by a token since revoked does not outlive it.
                let Some(who) = self.plan_principal(stored).await? else {
                    let why = format!(
                        "paused: the token that set it ({}, token {}) was revoked; set the plan \
                         again or resume it with another token",
                        stored.set_by_name, stored.set_by_token
                    );
                    self.store
                        .set_plan_status(key, &[PlanStatus::Running], PlanStatus::Paused, &why, now)
                        .await?;
                    return Ok(());
                };
                // A step waiting for its approval is not tried again until it is decided.
                if let Some(pending) = self.store.pending_approval(key).await? {
                    if pending.request.by_plan {
                        return self.note_waiting(stored, &awaiting(&pending)).await;
                    }
                }
                let reason = format!("plan step: {step}");
                let approve_advance = plan::advance_needs_approval(&stored.plan, &m);
                match self
                    .mutate_by_plan(&who, key, m.version, &reason, op, approve_advance)
                    .await
                {
                    Ok(next) => {
                        tracing::info!(key, step, version = %next.version, "plan step taken");
                        self.note_waiting(stored, "").await?;
                    }
                    // Allowed by the rules, but a second person approves it first: the plan
                    // files the request and waits for it.
                    Err(ApiError::ApprovalRequired { .. }) => {
                        let gated = self.approval_policy.gates(&m, &op);
                        let filed = self
                            .request_plan_approval(&who, &m, op, &step, gated)
                            .await?;
                        self.note_waiting(stored, &awaiting(&filed)).await?;
                    }
                    // Refused (a rule, a change since it looked): it waits and says why; the
                    // next look tries again from the state as it then is.
                    Err(
                        e @ (ApiError::Refused { .. }
                        | ApiError::Stale { .. }
                        | ApiError::NotApplicable { .. }
                        | ApiError::PermissionDenied(_)),
                    ) => {
                        let why = format!("{step}: {}", e.public_message());
                        self.note_waiting(stored, &why).await?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// Why a plan waits on its approval request.
fn awaiting(approval: &crate::store::StoredApproval) -> String {
    format!(
        "{}: waiting for approval {} by a second operator (`switchyard approvals approve {}`)",
        approval.request.description, approval.id, approval.id
    )
}

/// A window's zone, resolved from the tz database compiled into the server.
struct Zone(jiff::tz::TimeZone);

impl Zone {
    fn of(window: &plan::Window) -> Result<Zone, ApiError> {
        jiff::tz::TimeZone::get(&window.zone)
            .map(Zone)
            .map_err(|_| {
                ApiError::invalid(format!(
                    "unknown time zone {:?}: use an IANA name such as Europe/Berlin, \
                     America/New_York or UTC",
                    window.zone
                ))
            })
    }
}

impl plan::LocalTime for Zone {
    fn local(&self, at_ms: i64) -> (usize, u16) {
        let Ok(at) = jiff::Timestamp::from_millisecond(at_ms) else {
            return (0, 0);
        };
        let local = at.to_zoned(self.0.clone());
        (
            local.weekday().to_monday_zero_offset() as usize,
            local.hour() as u16 * 60 + local.minute() as u16,
        )
    }
}

/// [`plan::next`] with the plan's window in its own zone. A zone that no longer resolves (a
/// plan stored by a server with a newer tz database) holds the plan and says so.
fn next_for(plan: &plan::RolloutPlan, m: &switchyard_domain::Migration, now: i64) -> Next {
    match &plan.window {
        None => plan::next(plan, m, now, &()),
        Some(window) => match Zone::of(window) {
            Ok(zone) => plan::next(plan, m, now, &zone),
            Err(e) => Next::Wait {
                until_ms: None,
                why: e.public_message(),
            },
        },
    }
}

/// Drives the plans every `interval` while this replica holds the driver's lease (taken for
/// five intervals, so another replica takes over within that of this one dying).
pub fn spawn(
    app: Arc<App>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let replica = format!("replica-{:016x}", rand::random::<u64>());
    let lease_ms = i64::try_from(interval.as_millis() * 5).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        loop {
            let now = app.now();
            match app
                .store
                .plan_driver_lease(&replica, now, now.saturating_add(lease_ms))
                .await
            {
                Ok(true) => {
                    if let Err(e) = app.drive_plans().await {
                        tracing::warn!(error = %e, "reading the plans failed; retrying");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "taking the plan driver's lease failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
        }
    })
}
