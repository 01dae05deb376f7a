//! Tokens and who the caller is.

use super::names::role_name;
use serde::{Deserialize, Serialize};
use switchyard_domain::Role;

/// An API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: u64,
    pub name: String,
    #[serde(with = "role_name")]
    pub role: Role,
    /// The migrations it may see and act on (keys, or prefixes ending in `*`); empty: every
    /// migration.
    #[serde(default)]
    pub scope: Vec<String>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// `POST /v1/tokens`: the secret is shown only in this answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub info: Token,
    pub token: String,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub tokens: Vec<Token>,
}

/// `GET /v1/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    pub name: String,
    pub permissions: Vec<String>,
    #[serde(with = "role_name")]
    pub role: Role,
    /// The migrations it may see and act on; empty: every migration.
    #[serde(default)]
    pub scope: Vec<String>,
    pub token_id: u64,
}

// Requests. Names (stage, event, role) stay strings here: the server parses them through the
// domain, whose message says what is allowed.
