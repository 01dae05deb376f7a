//! Four eyes on the wire: a change filed for a second operator's approval, and the decision.

use serde::{Deserialize, Serialize};

/// A change waiting for (or past) a second operator's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: u64,
    pub key: String,
    /// The change in words, from the front it was asked at: `advance shadow 100% → live 0%`.
    pub change: String,
    /// `set_rollout`, `advance`, `retreat`, or the event recorded (`contracted`).
    pub action: String,
    /// For `set_rollout`: the stage and rollout asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_bp: Option<u32>,
    /// The policy's kind (`enter-live`, `ramp-complete`, `contract`,
    /// `step-back-from-complete`), or `plan` when the plan's `then: approve` asked for it.
    pub gated: String,
    /// Applied at this version or not at all (a change since makes it stale).
    pub expected_version: u64,
    pub reason: String,
    pub requested_by: String,
    pub requested_at_ms: i64,
    /// `person` or `plan`.
    pub origin: String,
    /// `pending`, `applied`, `rejected`, `withdrawn` or `stale`.
    pub status: String,
    #[serde(default)]
    pub decided_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at_ms: Option<i64>,
    #[serde(default)]
    pub decision_reason: String,
    /// On approval: the migration's state after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<super::Migration>,
}

/// `GET /v1/approvals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approvals {
    pub approvals: Vec<Approval>,
}

/// `POST /v1/approvals/{id}/approve` and `…/reject`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalDecision {
    #[serde(default)]
    pub reason: String,
}
