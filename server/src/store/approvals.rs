//! Approval requests (four eyes): the change a person asked for, kept until a second person
//! approves or rejects it. The change is stored as the operation, the version it was asked at
//! and the reason; applying it is an ordinary change (see `Alongside::approval`).

use super::{Store, StoreError, Tx};
use serde::{Deserialize, Serialize};
use switchyard_domain::approval::{ApprovalStatus, Gated};
use switchyard_domain::{BasisPoints, Operation, Stage, Version};

/// A request as it is asked for.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub key: String,
    pub operation: Operation,
    /// The kind of change that needs the approval; `None` when the migration's plan asks for
    /// it (`then: approve`) rather than the server's policy.
    pub gated: Option<Gated>,
    /// The change in words: `advance shadow 100% → live 0%`.
    pub description: String,
    pub expected_version: Version,
    pub reason: String,
    pub requested_by_token: u64,
    /// The requester as the audit log names them (`alice (token 2)`, `plan of alice (token 2)`).
    pub requested_by: String,
    pub requested_at_ms: i64,
    /// Asked by the migration's plan (applied as the plan's step, which leaves it running).
    pub by_plan: bool,
}

/// A request with its number and where it stands.
#[derive(Debug, Clone)]
pub struct StoredApproval {
    pub id: u64,
    pub request: NewApproval,
    pub status: ApprovalStatus,
    pub decided_by: String,
    pub decided_at_ms: i64,
    pub decision_reason: String,
}

/// The operation as stored: the API's names, so a row reads as what was asked.
#[derive(Serialize, Deserialize)]
struct OperationJson {
    action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollout_bp: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<String>,
}

fn operation_json(op: &Operation) -> Result<String, StoreError> {
    let json = match op {
        Operation::SetRollout { stage, rollout } => OperationJson {
            action: "set_rollout".to_owned(),
            stage: stage.map(|s| s.as_str().to_owned()),
            rollout_bp: Some(rollout.get()),
            event: None,
        },
        Operation::Advance | Operation::Retreat => OperationJson {
            action: op.action().to_owned(),
            stage: None,
            rollout_bp: None,
            event: None,
        },
        Operation::Record(event) => OperationJson {
            action: "record".to_owned(),
            stage: None,
            rollout_bp: None,
            event: Some(event.as_str().to_owned()),
        },
    };
    serde_json::to_string(&json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse_operation(raw: &str) -> Result<Operation, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(format!("approval operation {raw:?}: {what}"));
    let json: OperationJson = serde_json::from_str(raw).map_err(|e| corrupt(e.to_string()))?;
    match json.action.as_str() {
        "set_rollout" => Ok(Operation::SetRollout {
            stage: json
                .stage
                .as_deref()
                .map(Stage::parse)
                .transpose()
                .map_err(|e| corrupt(e.0))?,
            rollout: BasisPoints::new(json.rollout_bp.unwrap_or(0)).map_err(|e| corrupt(e.0))?,
        }),
        "advance" => Ok(Operation::Advance),
        "retreat" => Ok(Operation::Retreat),
        "record" => {
            let name = json.event.unwrap_or_default();
            let kind: switchyard_domain::EventKind = name
                .parse()
                .map_err(|e: switchyard_domain::event::UnknownEvent| corrupt(e.0))?;
            kind.with_rows(None)
                .map(Operation::Record)
                .map_err(|e| corrupt(e.0))
        }
        other => Err(corrupt(format!("unknown action {other:?}"))),
    }
}

#[derive(sqlx::FromRow)]
struct ApprovalRow {
    id: i64,
    migration_key: String,
    operation: String,
    gated: String,
    description: String,
    expected_version: i64,
    reason: String,
    requested_by_token: i64,
    requested_by: String,
    requested_at_ms: i64,
    origin: String,
    status: String,
    decided_by: String,
    decided_at_ms: i64,
    decision_reason: String,
}

const COLUMNS: &str = "id, migration_key, operation, gated, description, expected_version, \
     reason, requested_by_token, requested_by, requested_at_ms, origin, status, decided_by, \
     decided_at_ms, decision_reason";

impl ApprovalRow {
    fn into_stored(self) -> Result<StoredApproval, StoreError> {
        let gated = match self.gated.as_str() {
            "plan" => None,
            other => Some(Gated::parse(other).map_err(|e| StoreError::Corrupt(e.0))?),
        };
        Ok(StoredApproval {
            id: self.id as u64,
            request: NewApproval {
                operation: parse_operation(&self.operation)?,
                key: self.migration_key,
                gated,
                description: self.description,
                expected_version: Version(self.expected_version as u64),
                reason: self.reason,
                requested_by_token: self.requested_by_token as u64,
                requested_by: self.requested_by,
                requested_at_ms: self.requested_at_ms,
                by_plan: self.origin == "plan",
            },
            status: ApprovalStatus::parse(&self.status).map_err(|e| StoreError::Corrupt(e.0))?,
            decided_by: self.decided_by,
            decided_at_ms: self.decided_at_ms,
            decision_reason: self.decision_reason,
        })
    }
}

impl Store {
    /// Files a request; `Err(id)` inside `Ok` when the migration already has one pending (one
    /// at a time: the second would be asked at a version the first makes stale).
    pub async fn request_approval(
        &self,
        new: &NewApproval,
    ) -> Result<Result<u64, u64>, StoreError> {
        let operation = operation_json(&new.operation)?;
        self.write(|tx| {
            Box::pin(async move {
                let pending: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM approvals WHERE migration_key = $1 AND status = 'pending'",
                )
                .bind(&new.key)
                .fetch_optional(&mut **tx)
                .await?;
                if let Some(id) = pending {
                    return Ok(Err(id as u64));
                }
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO approvals (migration_key, operation, gated, description, \
                     expected_version, reason, requested_by_token, requested_by, \
                     requested_at_ms, origin, status, decided_by, decided_at_ms, \
                     decision_reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                     'pending', '', 0, '') RETURNING id",
                )
                .bind(&new.key)
                .bind(&operation)
                .bind(new.gated.map_or("plan", Gated::as_str))
                .bind(&new.description)
                .bind(new.expected_version.0 as i64)
                .bind(&new.reason)
                .bind(new.requested_by_token as i64)
                .bind(&new.requested_by)
                .bind(new.requested_at_ms)
                .bind(if new.by_plan { "plan" } else { "person" })
                .fetch_one(&mut **tx)
                .await?;
                Ok(Ok(id as u64))
            })
        })
        .await
    }

    pub async fn approval(&self, id: u64) -> Result<Option<StoredApproval>, StoreError> {
        let row: Option<ApprovalRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM approvals WHERE id = $1"))
                .bind(id.min(i64::MAX as u64) as i64)
                .fetch_optional(&self.pool)
                .await?;
        row.map(ApprovalRow::into_stored).transpose()
    }

    /// Requests newest first: only pending ones, or every one (at most `limit`).
    pub async fn approvals(
        &self,
        pending_only: bool,
        limit: u32,
    ) -> Result<Vec<StoredApproval>, StoreError> {
        let filter = if pending_only {
            "WHERE status = 'pending' "
        } else {
            ""
        };
        let rows: Vec<ApprovalRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM approvals {filter}ORDER BY id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(ApprovalRow::into_stored).collect()
    }

    /// The migration's pending request, if any.
    pub async fn pending_approval(&self, key: &str) -> Result<Option<StoredApproval>, StoreError> {
        let row: Option<ApprovalRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM approvals WHERE migration_key = $1 AND status = 'pending'"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(ApprovalRow::into_stored).transpose()
    }

    /// Closes a pending request (rejected, withdrawn, stale); false when it was not pending.
    pub async fn close_approval(
        &self,
        id: u64,
        status: ApprovalStatus,
        decided_by: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.write(|tx| Box::pin(close_in(tx, id, status, decided_by, reason, now_ms)))
            .await
    }
}

/// Moves a pending request to `status` inside a write; false when it was not pending.
pub(super) async fn close_in(
    tx: &mut Tx<'_>,
    id: u64,
    status: ApprovalStatus,
    decided_by: &str,
    reason: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE approvals SET status = $2, decided_by = $3, decided_at_ms = $4, \
         decision_reason = $5 WHERE id = $1 AND status = 'pending'",
    )
    .bind(id.min(i64::MAX as u64) as i64)
    .bind(status.as_str())
    .bind(decided_by)
    .bind(now_ms)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}
