//! The bodies of the requests the CLI sends (and any HTTP client may).

use serde::{Deserialize, Serialize};

/// `POST /v1/migrations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMigration {
    pub key: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub entity_kind: String,
    pub soak_seconds: Option<u64>,
    #[serde(default)]
    pub expected_services: Vec<String>,
    #[serde(default)]
    pub has_backfill: bool,
    pub shadow_sample_bp: Option<u32>,
    #[serde(default)]
    pub reason: String,
    /// A name the server is configured with (`--target-database NAME=URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_database: Option<String>,
    /// The objects the contract drops: `column:[schema.]table.column`, `table:…`, `index:…`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub old_shape: Vec<String>,
    /// Retire before drop: the probation after `retired`, in seconds (absent: drop directly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_probation_seconds: Option<u64>,
}

/// `POST /v1/migrations/{key}/rollout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub stage: Option<String>,
    pub rollout_bp: u32,
    pub expected_version: u64,
    #[serde(default)]
    pub reason: String,
    /// File the change as a request for a second operator's approval instead of applying
    /// it (answered 202 with the request).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub request_approval: bool,
    /// Apply a change the server has approved by a second operator without that approval
    /// (admins only; the audit record says so).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bypass_approval: bool,
}

/// `POST /v1/migrations/{key}/advance` and `…/retreat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub expected_version: u64,
    #[serde(default)]
    pub reason: String,
    /// File the change as a request for a second operator's approval instead of applying
    /// it (answered 202 with the request).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub request_approval: bool,
    /// Apply a change the server has approved by a second operator without that approval
    /// (admins only; the audit record says so).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bypass_approval: bool,
}

/// `POST /v1/migrations/{key}/events`; the rows only for `backfill_progress`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordEvent {
    pub event: String,
    pub expected_version: u64,
    #[serde(default)]
    pub reason: String,
    pub rows_done: Option<u64>,
    pub rows_total_estimate: Option<u64>,
    /// File the change as a request for a second operator's approval instead of applying
    /// it (answered 202 with the request).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub request_approval: bool,
    /// Apply a change the server has approved by a second operator without that approval
    /// (admins only; the audit record says so).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bypass_approval: bool,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    pub role: String,
    /// Migration keys or key prefixes ending in `*` (`orders.*`); absent or empty: every
    /// migration.
    #[serde(default)]
    pub scope: Vec<String>,
}
