//! Row types and their conversion to and from domain values.

use super::StoreError;
use super::state::{parse_state, state_json};
use switchyard_domain::{Migration, Version};
use switchyard_domain::{Role, Scope};

#[derive(sqlx::FromRow)]
pub(super) struct MigrationRow {
    pub key: String,
    pub version: i64,
    pub stage: String,
    pub rollout_bp: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub state: String,
}

impl MigrationRow {
    pub const COLUMNS: &'static str =
        "key, version, stage, rollout_bp, created_at_ms, updated_at_ms, state";

    pub fn from_domain(m: &Migration) -> Result<Self, StoreError> {
        Ok(Self {
            key: m.key.to_string(),
            version: m.version.0 as i64,
            stage: m.stage.as_str().to_owned(),
            rollout_bp: i64::from(m.rollout_bp.get()),
            created_at_ms: m.created_at_ms,
            updated_at_ms: m.updated_at_ms,
            state: state_json(m)?,
        })
    }

    pub fn into_domain(self) -> Result<Migration, StoreError> {
        let m = parse_state(&self.state, || format!("migration {}", self.key))?;
        if m.version.0 as i64 != self.version || m.key.as_str() != self.key {
            return Err(StoreError::Corrupt(format!(
                "migration {}: columns and state disagree",
                self.key
            )));
        }
        Ok(m)
    }
}

/// One audit log entry: who changed what, when, why, and the state before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: u64,
    pub migration_key: String,
    pub version: Version,
    pub actor: String,
    pub at_ms: i64,
    pub action: String,
    pub reason: String,
    pub before_json: String,
    pub after_json: String,
    /// Who approved the change (four eyes), or that an admin bypassed the approval; empty
    /// when it needed none.
    pub approved_by: String,
}

impl AuditRecord {
    /// The state before the change, read through the stored form (`None` for a creation, whose
    /// `before_json` is empty).
    pub fn before(&self) -> Result<Option<Migration>, StoreError> {
        self.state(&self.before_json, "before")
    }

    /// The state after the change, read through the stored form.
    pub fn after(&self) -> Result<Option<Migration>, StoreError> {
        self.state(&self.after_json, "after")
    }

    fn state(&self, json: &str, which: &str) -> Result<Option<Migration>, StoreError> {
        if json.is_empty() {
            return Ok(None);
        }
        parse_state(json, || format!("audit record {} ({which})", self.id)).map(Some)
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    id: i64,
    migration_key: String,
    version: i64,
    actor: String,
    at_ms: i64,
    action: String,
    reason: String,
    before_json: String,
    after_json: String,
    approved_by: String,
}

impl AuditRow {
    pub fn into_record(self) -> AuditRecord {
        AuditRecord {
            id: self.id as u64,
            migration_key: self.migration_key,
            version: Version(self.version as u64),
            actor: self.actor,
            at_ms: self.at_ms,
            action: self.action,
            reason: self.reason,
            before_json: self.before_json,
            after_json: self.after_json,
            approved_by: self.approved_by,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInstance {
    pub service: String,
    pub instance_id: String,
    pub applied_version: Version,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct InstanceRow {
    service: String,
    instance_id: String,
    applied_version: i64,
    first_seen_ms: i64,
    last_seen_ms: i64,
}

impl InstanceRow {
    pub fn into_record(self) -> ClientInstance {
        ClientInstance {
            service: self.service,
            instance_id: self.instance_id,
            applied_version: Version(self.applied_version as u64),
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: u64,
    pub name: String,
    pub role: Role,
    /// The migrations it may see and act on.
    pub scope: Scope,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(super) struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl TokenRow {
    pub fn into_record(self, scope: Scope) -> Result<TokenRecord, StoreError> {
        Ok(TokenRecord {
            id: self.id as u64,
            scope,
            role: Role::parse(&self.role).map_err(|_| {
                StoreError::Corrupt(format!("token {}: role {}", self.id, self.role))
            })?,
            name: self.name,
            created_at_ms: self.created_at_ms,
            revoked_at_ms: self.revoked_at_ms,
        })
    }
}
