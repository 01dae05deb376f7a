//! Four eyes: changes a second operator approves before they are applied.
//!
//! A change the server's policy gates (`--require-approval`) or a plan's `then: approve`
//! covers is refused when made directly (`approval_required`). The requester files it as a
//! request instead: the operation, the version it was asked at and the reason. Another
//! operator's token approves it, and only then is it applied: as the requester's change,
//! through the safety rules at that version (a change since makes it stale, and it can never
//! apply), marked applied in the same transaction and audited with both names. An admin may
//! bypass the approval with a reason, recorded as such.

use crate::app::App;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::store::{ApprovalUse, NewApproval, PlanStatus, StoredApproval};
use switchyard_domain::approval::{self, ApprovalPolicy, ApprovalStatus, Gated};
use switchyard_domain::rules::{self, DomainError, parse_reason};
use switchyard_domain::{Migration, MigrationKey, Operation, Permission, Version};

/// How a change comes to be made, for the approval policy.
#[derive(Debug, Clone)]
pub(crate) enum Via {
    /// A person, directly: a gated change is refused with how to request it.
    Person,
    /// An admin skipping the approval, with the change's reason.
    Bypass,
    /// The migration's plan taking a step (`approve_advance`: its `then: approve` covers it).
    Plan { approve_advance: bool },
    /// An approved request being applied.
    Approved {
        approval: ApprovalUse,
        by_plan: bool,
    },
}

impl Via {
    /// Whether the change is the plan's own (it leaves the plan running).
    pub(crate) fn by_plan(&self) -> bool {
        matches!(self, Via::Plan { .. } | Via::Approved { by_plan: true, .. })
    }

    /// Refuses a change that needs an approval it does not have. Judged after the rules, so a
    /// change they refuse says so rather than asking for an approval that could not help.
    pub(crate) fn admit(
        &self,
        policy: &ApprovalPolicy,
        current: &Migration,
        op: &Operation,
    ) -> Result<(), DomainError> {
        let needs = match self {
            Via::Person => policy.gates(current, op).map(Some),
            Via::Plan { approve_advance } => policy
                .gates(current, op)
                .map(Some)
                .or((*approve_advance && *op == Operation::Advance).then_some(None)),
            Via::Bypass | Via::Approved { .. } => None,
        };
        match needs {
            Some(gated) => Err(approval::needs_approval(gated, current)),
            None => Ok(()),
        }
    }

    /// What the audit record says of the approval, if any.
    pub(crate) fn approval(&self, who: &Principal) -> Option<ApprovalUse> {
        match self {
            Via::Bypass => Some(ApprovalUse {
                id: None,
                approved_by: format!("approval bypassed by admin {}", who.actor()),
                decision_reason: String::new(),
            }),
            Via::Approved { approval, .. } => Some(approval.clone()),
            Via::Person | Via::Plan { .. } => None,
        }
    }
}

/// The most requests one list answers.
pub const MAX_APPROVALS_LISTED: u32 = 500;

impl App {
    /// Files a request for a change the policy gates; nothing is applied until another
    /// operator approves it.
    pub async fn request_approval(
        &self,
        who: &Principal,
        key: &str,
        expected: Version,
        reason: &str,
        op: Operation,
    ) -> Result<StoredApproval, ApiError> {
        who.require(op.permission())?;
        let key = MigrationKey::parse(key)?;
        who.require_on(op.permission(), key.as_str())?;
        let reason = parse_reason(reason)?;
        let m = self.get_migration(who, key.as_str())?;
        if expected != m.version {
            return Err(ApiError::Stale {
                message: DomainError::Stale {
                    expected,
                    current: m.version,
                }
                .to_string(),
                current: Box::new((*m).clone()),
            });
        }
        let Some(gated) = self.approval_policy.gates(&m, &op) else {
            return Err(ApiError::NotApplicable {
                message: format!(
                    "{} of {key} at {} {} needs no approval on this server (--require-approval \
                     {}): make the change directly",
                    op.action(),
                    m.stage,
                    m.rollout_bp,
                    self.approval_policy.describe()
                ),
                current: Some(Box::new((*m).clone())),
            });
        };
        // A change the rules refuse now is refused now, not after someone approved it (the
        // contract's gate is judged when it is applied).
        if op != Operation::Record(switchyard_domain::Event::Contracted) {
            let now = self.now();
            let fleet = self.store.fleet(key.as_str(), now, self.client_ttl).await?;
            if let Err(e) = rules::apply(
                &m,
                expected,
                reason.as_str(),
                &op,
                &fleet,
                Version(m.version.0 + 1),
                now,
            ) {
                return Err(refusal(e, &m));
            }
        }
        let new = NewApproval {
            key: key.to_string(),
            description: describe(&m, &op),
            operation: op,
            gated: Some(gated),
            expected_version: expected,
            reason: reason.as_str().to_owned(),
            requested_by_token: who.token_id,
            requested_by: who.actor(),
            requested_at_ms: self.now(),
            by_plan: false,
        };
        self.file(new).await
    }

    /// The plan's request for its step `op` (refused as needing approval): filed once; while
    /// it is pending the plan waits on it.
    pub(crate) async fn request_plan_approval(
        &self,
        who: &Principal,
        m: &Migration,
        op: Operation,
        step: &str,
        gated: Option<Gated>,
    ) -> Result<StoredApproval, ApiError> {
        if let Some(pending) = self.store.pending_approval(m.key.as_str()).await? {
            return Ok(pending);
        }
        let new = NewApproval {
            key: m.key.to_string(),
            description: describe(m, &op),
            operation: op,
            gated,
            expected_version: m.version,
            reason: format!("plan step: {step}"),
            requested_by_token: who.token_id,
            requested_by: who.actor(),
            requested_at_ms: self.now(),
            by_plan: true,
        };
        self.file(new).await
    }

    async fn file(&self, new: NewApproval) -> Result<StoredApproval, ApiError> {
        match self.store.request_approval(&new).await? {
            Ok(id) => {
                tracing::info!(
                    key = %new.key, approval = id, actor = %new.requested_by,
                    change = %new.description, "approval requested"
                );
                self.notify(
                    &new.key,
                    "approval_request",
                    serde_json::json!({
                        "approval": id,
                        "change": new.description,
                        "requested_by": new.requested_by,
                        "reason": new.reason,
                        "origin": if new.by_plan { "plan" } else { "person" },
                    }),
                )
                .await;
                self.stored_approval(id).await
            }
            Err(pending) => Err(ApiError::AlreadyExists(format!(
                "approval {pending} is already pending for {}: approve, reject or withdraw it \
                 first (`switchyard approvals list`)",
                new.key
            ))),
        }
    }

    /// Requests newest first (pending only unless `all`), of the migrations `who` sees,
    /// optionally of one migration.
    pub async fn approvals(
        &self,
        who: &Principal,
        all: bool,
        key: Option<&str>,
    ) -> Result<Vec<StoredApproval>, ApiError> {
        who.require(Permission::Read)?;
        let key = key.map(MigrationKey::parse).transpose()?;
        Ok(self
            .store
            .approvals(!all, MAX_APPROVALS_LISTED)
            .await?
            .into_iter()
            .filter(|a| who.sees(&a.request.key))
            .filter(|a| key.as_ref().is_none_or(|k| k.as_str() == a.request.key))
            .collect())
    }

    pub async fn approval(&self, who: &Principal, id: u64) -> Result<StoredApproval, ApiError> {
        who.require(Permission::Read)?;
        let found = self.stored_approval(id).await?;
        who.require_on(Permission::Read, &found.request.key)?;
        Ok(found)
    }

    /// Approves (applies) or rejects a pending request. The requester rejecting their own
    /// request withdraws it; approving needs another token. Answers the request as it ends
    /// up, with the migration's state when it was applied.
    pub async fn decide_approval(
        &self,
        who: &Principal,
        id: u64,
        approve: bool,
        reason: &str,
    ) -> Result<(StoredApproval, Option<Migration>), ApiError> {
        who.require(Permission::Operate)?;
        let found = self.stored_approval(id).await?;
        let req = &found.request;
        who.require_on(Permission::Operate, &req.key)?;
        let reason = parse_reason(reason)?;
        if found.status != ApprovalStatus::Pending {
            return Err(ApiError::NotApplicable {
                message: format!(
                    "approval {id} is {} ({} by {}), no longer pending",
                    found.status.as_str(),
                    found.decision_reason,
                    found.decided_by
                ),
                current: None,
            });
        }
        let own = who.token_id == req.requested_by_token;
        let now = self.now();
        if !approve {
            let status = if own {
                ApprovalStatus::Withdrawn
            } else {
                ApprovalStatus::Rejected
            };
            if !self
                .store
                .close_approval(id, status, &who.actor(), reason.as_str(), now)
                .await?
            {
                return Err(not_pending(id));
            }
            tracing::info!(key = %req.key, approval = id, actor = %who.actor(), "approval {}", status.as_str());
            if req.by_plan {
                // The plan would ask again at once: it waits for a person instead.
                let why = format!(
                    "paused: approval {id} ({}) {} by {}: {}",
                    req.description,
                    status.as_str(),
                    who.actor(),
                    reason.as_str()
                );
                self.store
                    .set_plan_status(
                        &req.key,
                        &[PlanStatus::Running],
                        PlanStatus::Paused,
                        &why,
                        now,
                    )
                    .await?;
            }
            return Ok((self.stored_approval(id).await?, None));
        }
        if own {
            return Err(ApiError::PermissionDenied(format!(
                "approval {id} was requested by {}: a second person must approve it, with \
                 another operator's token",
                req.requested_by
            )));
        }
        // Applied as the requester's change, in their token's current role and scope (a
        // revoked token's request cannot be applied).
        let Some(token) = self.store.live_token(req.requested_by_token).await? else {
            return Err(ApiError::NotApplicable {
                message: format!(
                    "approval {id}: the requester's token (token {}) was revoked; the change \
                     must be requested again",
                    req.requested_by_token
                ),
                current: None,
            });
        };
        let requester = Principal {
            token_id: token.id,
            name: if req.by_plan {
                format!("plan of {}", token.name)
            } else {
                token.name
            },
            role: token.role,
            scope: token.scope,
        };
        let approval = ApprovalUse {
            id: Some(id),
            approved_by: who.actor(),
            decision_reason: reason.as_str().to_owned(),
        };
        let applied = self
            .change(
                &requester,
                &req.key,
                req.expected_version,
                &req.reason,
                req.operation,
                Via::Approved {
                    approval,
                    by_plan: req.by_plan,
                },
            )
            .await;
        match applied {
            Ok(m) => {
                tracing::info!(key = %req.key, approval = id, actor = %who.actor(), "approval applied");
                Ok((self.stored_approval(id).await?, Some(m)))
            }
            Err(e @ ApiError::Stale { .. }) => {
                // It can never apply now: closed, so the inbox does not offer it again.
                self.store
                    .close_approval(
                        id,
                        ApprovalStatus::Stale,
                        &who.actor(),
                        &e.public_message(),
                        now,
                    )
                    .await?;
                Err(e)
            }
            // A rule refusing it now (an instance behind, say) leaves it pending: it may be
            // approved again once the rule allows it.
            Err(e) => Err(e),
        }
    }

    async fn stored_approval(&self, id: u64) -> Result<StoredApproval, ApiError> {
        self.store
            .approval(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("there is no approval {id}")))
    }
}

fn not_pending(id: u64) -> ApiError {
    ApiError::NotApplicable {
        message: format!("approval {id} is no longer pending: another decision came first"),
        current: None,
    }
}

/// A rule's refusal of a request, as a change's refusal would read.
fn refusal(e: DomainError, m: &Migration) -> ApiError {
    crate::store::StoreError::Refused {
        error: e,
        current: Box::new(m.clone()),
    }
    .into()
}

/// The change in words, from where the front is: `advance shadow 100% → live 0%`.
fn describe(m: &Migration, op: &Operation) -> String {
    let from = format!("{} {}", m.stage, m.rollout_bp);
    match op {
        Operation::Advance => match m.stage.next() {
            Some(next) => format!("advance {from} → {next} 0%"),
            None => format!("advance from {from}"),
        },
        Operation::Retreat => match m.stage.prev() {
            Some(prev) => format!("step back {from} → {prev} 100%"),
            None => format!("step back from {from}"),
        },
        Operation::SetRollout { stage, rollout } => {
            format!("ramp {from} → {} {rollout}", stage.unwrap_or(m.stage))
        }
        Operation::Record(event) => format!("record {} at {from}", event.as_str()),
    }
}
