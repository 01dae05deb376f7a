//! Migrations and their audit log: create, read, the mutation path and the changes feed.

use super::checkpoints::forget_checkpoint;
use super::clients::{load_fleet, traffic_minutes};
use super::rows::{AuditRecord, AuditRow, MigrationRow};
use super::state::parse_state;
use super::{Store, StoreError, Tx, next_version, read_snapshot_version};
use std::time::Duration;
use switchyard_domain::approval::ApprovalStatus;
use switchyard_domain::rules::DomainError;
use switchyard_domain::traffic::TrafficCounts;
use switchyard_domain::{Fleet, Migration, NewMigration, Reason, Version};

/// The outcome of a successful mutation.
pub struct Mutated {
    pub migration: Migration,
}

/// What a mutation does besides deciding and recording the next state, in the same
/// transaction.
#[derive(Debug, Clone, Default)]
pub struct Alongside {
    /// Read the migration's traffic per minute from this minute on, for the decision (the
    /// contract gate, or the record of a closing live window), so deciding on it and recording
    /// the decision are one atomic step.
    pub traffic_since_ms: Option<i64>,
    /// Forget the backfill's checkpoint if the change commits (a cancel: a new start begins at
    /// the start), so the cancel and the forgetting cannot be seen apart.
    pub forget_checkpoint: bool,
    /// Pause the migration's running plan, with this reason, if the change commits: a person
    /// changed it by hand, and the plan must not carry on from a state it did not choose.
    pub pause_plan: Option<String>,
    /// The second person's approval the change is made under: marked applied if the change
    /// commits (refused if it is no longer pending, so one approval applies once), and named
    /// in the audit record.
    pub approval: Option<ApprovalUse>,
    /// The webhook event type the change is sent as (`change`, `plan_step`, `backfill`),
    /// enqueued for the subscriptions that want it in the change's transaction.
    pub notify: Option<&'static str>,
}

/// An approval a change is applied under (see [`Alongside::approval`]).
#[derive(Debug, Clone, Default)]
pub struct ApprovalUse {
    /// The request approved; `None` for an admin's bypass.
    pub id: Option<u64>,
    /// For the audit record: `bob (token 3)`, or the bypass.
    pub approved_by: String,
    pub decision_reason: String,
}

impl Store {
    pub async fn create_migration(
        &self,
        new: NewMigration,
        salt: u64,
        actor: &str,
        reason: &Reason,
        now_ms: i64,
    ) -> Result<Migration, StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                // Taking the version first queues concurrent creates on its row lock (Postgres), so
                // the existence check below sees a create that committed meanwhile.
                let version = next_version(tx).await?;
                let key = new.key.clone();
                let already = move || StoreError::AlreadyExists(format!("migration {key}"));
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT key FROM migrations WHERE key = $1")
                        .bind(new.key.as_str())
                        .fetch_optional(&mut **tx)
                        .await?;
                if exists.is_some() {
                    return Err(already());
                }
                let migration = Migration::create(new, salt, version, now_ms);
                let row = MigrationRow::from_domain(&migration)?;
                sqlx::query(
                    "INSERT INTO migrations (key, version, stage, rollout_bp, created_at_ms, \
                     updated_at_ms, state) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&row.key)
                .bind(row.version)
                .bind(&row.stage)
                .bind(row.rollout_bp)
                .bind(row.created_at_ms)
                .bind(row.updated_at_ms)
                .bind(&row.state)
                .execute(&mut **tx)
                .await
                .map_err(|e| match e {
                    // Backstop: a create that raced past the check above.
                    sqlx::Error::Database(db) if db.is_unique_violation() => already(),
                    other => other.into(),
                })?;
                insert_audit(
                    tx,
                    &migration,
                    (actor, ""),
                    now_ms,
                    "create",
                    reason,
                    "",
                    &row.state,
                )
                .await?;
                let event = super::webhooks::ChangeEvent {
                    event_type: "change",
                    before: &migration,
                    after: &migration,
                    actor,
                    approved_by: "",
                    action: "create",
                    reason: reason.as_str(),
                    at_ms: now_ms,
                };
                super::webhooks::enqueue_in(
                    tx,
                    migration.key.as_str(),
                    "change",
                    &event.payload(),
                    now_ms,
                    None,
                )
                .await?;
                self.notify(tx, version).await?;
                Ok(migration)
            })
        })
        .await
    }

    pub async fn get(&self, key: &str) -> Result<Option<Migration>, StoreError> {
        let row: Option<MigrationRow> = sqlx::query_as(&format!(
            "SELECT {} FROM migrations WHERE key = $1",
            MigrationRow::COLUMNS
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(MigrationRow::into_domain).transpose()
    }

    /// The current state of every migration changed after `version` (each once, oldest
    /// first), and the snapshot version they bring the caller to.
    pub async fn changed_since(
        &self,
        version: Version,
    ) -> Result<(Vec<Migration>, Version), StoreError> {
        let mut tx = self.begin_consistent_read().await?;
        let current = read_snapshot_version(&mut tx).await?;
        let rows: Vec<MigrationRow> = sqlx::query_as(&format!(
            "SELECT {} FROM migrations WHERE version > $1 AND version <= $2 ORDER BY version",
            MigrationRow::COLUMNS
        ))
        .bind(version.0 as i64)
        .bind(current.0 as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let migrations = rows
            .into_iter()
            .map(MigrationRow::into_domain)
            .collect::<Result<_, _>>()?;
        Ok((migrations, current))
    }

    /// Every change committed after `version`, one state per version in version order (read
    /// from the audit log, which holds the state after each change), and the snapshot version
    /// they bring the caller to. Unlike [`Store::changed_since`], two changes to one migration
    /// come back as two states.
    pub async fn changes_since(
        &self,
        version: Version,
    ) -> Result<(Vec<Migration>, Version), StoreError> {
        let mut tx = self.begin_consistent_read().await?;
        let current = read_snapshot_version(&mut tx).await?;
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT migration_key, version, after_json FROM audit_log \
             WHERE version > $1 AND version <= $2 ORDER BY version",
        )
        .bind(version.0 as i64)
        .bind(current.0 as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let changes = rows
            .into_iter()
            .map(|(key, v, state)| parse_state(&state, || format!("audit of {key} at {v}")))
            .collect::<Result<_, _>>()?;
        Ok((changes, current))
    }

    /// Applies a domain decision to one migration in one transaction (see the module docs).
    /// `decide` gets the current state, the live fleet and the version the change will take.
    pub async fn mutate<F>(
        &self,
        key: &str,
        actor: &str,
        now_ms: i64,
        client_ttl: Duration,
        decide: F,
    ) -> Result<Mutated, StoreError>
    where
        F: FnOnce(&Migration, &Fleet, Version) -> Result<(Migration, Reason, String), DomainError>
            + Send,
    {
        self.mutate_with(
            key,
            actor,
            now_ms,
            client_ttl,
            Alongside::default(),
            |m, fleet, _, v| decide(m, fleet, v),
        )
        .await
    }

    /// Like [`Store::mutate`], also doing what `alongside` asks in the same transaction;
    /// `decide` also gets the traffic read for it (empty if none was asked for).
    pub async fn mutate_with<F>(
        &self,
        key: &str,
        actor: &str,
        now_ms: i64,
        client_ttl: Duration,
        alongside: Alongside,
        decide: F,
    ) -> Result<Mutated, StoreError>
    where
        F: FnOnce(
                &Migration,
                &Fleet,
                &[(i64, TrafficCounts)],
                Version,
            ) -> Result<(Migration, Reason, String), DomainError>
            + Send,
    {
        self.write(|tx| {
            Box::pin(async move {
                let current = self.lock_migration(tx, key).await?;
                let fleet = load_fleet(tx, key, now_ms, client_ttl).await?;
                let traffic = match alongside.traffic_since_ms {
                    Some(since) => traffic_minutes(&mut **tx, key, since).await?,
                    None => Vec::new(),
                };
                let version = next_version(tx).await?;
                let (next, reason, action) = match decide(&current, &fleet, &traffic, version) {
                    Ok(decided) => decided,
                    Err(error) => {
                        return Err(StoreError::Refused {
                            error,
                            current: Box::new(current),
                        });
                    }
                };
                if alongside.forget_checkpoint {
                    forget_checkpoint(tx, key).await?;
                }
                if let Some(ApprovalUse {
                    id: Some(id),
                    approved_by,
                    decision_reason,
                }) = &alongside.approval
                {
                    let closed = super::approvals::close_in(
                        tx,
                        *id,
                        ApprovalStatus::Applied,
                        approved_by,
                        decision_reason,
                        now_ms,
                    )
                    .await?;
                    if !closed {
                        return Err(StoreError::Refused {
                            error: DomainError::NotApplicable(format!(
                                "approval {id} is no longer pending: another decision came first"
                            )),
                            current: Box::new(current),
                        });
                    }
                }
                if let Some(reason) = &alongside.pause_plan {
                    super::plans::plan_status_in(
                        tx,
                        key,
                        &[super::PlanStatus::Running],
                        super::PlanStatus::Paused,
                        reason,
                        now_ms,
                    )
                    .await?;
                }
                let before = MigrationRow::from_domain(&current)?;
                let row = MigrationRow::from_domain(&next)?;
                let updated = sqlx::query(
                    "UPDATE migrations SET version = $1, stage = $2, rollout_bp = $3, \
                     updated_at_ms = $4, state = $5 WHERE key = $6 AND version = $7",
                )
                .bind(row.version)
                .bind(&row.stage)
                .bind(row.rollout_bp)
                .bind(row.updated_at_ms)
                .bind(&row.state)
                .bind(&row.key)
                .bind(before.version)
                .execute(&mut **tx)
                .await?;
                if updated.rows_affected() != 1 {
                    // Unreachable while the row lock / write mutex is held; refuse rather than
                    // guess.
                    return Err(StoreError::Refused {
                        error: DomainError::Stale {
                            expected: current.version,
                            current: Version(0),
                        },
                        current: Box::new(current),
                    });
                }
                let approved_by = alongside
                    .approval
                    .as_ref()
                    .map_or("", |a| a.approved_by.as_str());
                insert_audit(
                    tx,
                    &next,
                    (actor, approved_by),
                    now_ms,
                    &action,
                    &reason,
                    &before.state,
                    &row.state,
                )
                .await?;
                if let Some(event_type) = alongside.notify {
                    let event = super::webhooks::ChangeEvent {
                        event_type,
                        before: &current,
                        after: &next,
                        actor,
                        approved_by,
                        action: &action,
                        reason: reason.as_str(),
                        at_ms: now_ms,
                    };
                    super::webhooks::enqueue_in(
                        tx,
                        key,
                        event_type,
                        &event.payload(),
                        now_ms,
                        None,
                    )
                    .await?;
                }
                self.notify(tx, version).await?;
                Ok(Mutated { migration: next })
            })
        })
        .await
    }

    /// Reads a migration inside a write, locked until the write ends (Postgres `FOR UPDATE`;
    /// SQLite's writes are already serialized by the write mutex), so what is decided on it
    /// holds when the write commits.
    pub(super) async fn lock_migration(
        &self,
        tx: &mut Tx<'_>,
        key: &str,
    ) -> Result<Migration, StoreError> {
        let row: Option<MigrationRow> = sqlx::query_as(&format!(
            "SELECT {} FROM migrations WHERE key = $1{}",
            MigrationRow::COLUMNS,
            self.backend.for_update()
        ))
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
        row.ok_or_else(|| StoreError::NotFound(key.to_owned()))?
            .into_domain()
    }

    /// One page of a migration's audit log, newest first.
    pub async fn audit(
        &self,
        key: &str,
        limit: u32,
        before_id: Option<u64>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, migration_key, version, actor, at_ms, action, reason, before_json, \
             after_json, approved_by FROM audit_log WHERE migration_key = $1 AND id < $2 \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(key)
        .bind(before_id.map_or(i64::MAX, |id| id.min(i64::MAX as u64) as i64))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(AuditRow::into_record).collect())
    }
}

#[allow(clippy::too_many_arguments)]
async fn insert_audit(
    tx: &mut Tx<'_>,
    after: &Migration,
    (actor, approved_by): (&str, &str),
    now_ms: i64,
    action: &str,
    reason: &Reason,
    before_json: &str,
    after_json: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (migration_key, version, actor, at_ms, action, reason, \
         before_json, after_json, approved_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(after.key.as_str())
    .bind(after.version.0 as i64)
    .bind(actor)
    .bind(now_ms)
    .bind(action)
    .bind(reason.as_str())
    .bind(before_json)
    .bind(after_json)
    .bind(approved_by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
