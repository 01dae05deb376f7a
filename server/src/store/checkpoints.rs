//! Backfill checkpoints: each running backfill's saved position, smoothed rate and throttle
//! state; and each backfill's settings (thresholds and pace, changed while it runs).

use super::{Store, StoreError, Tx};
use switchyard_domain::{DomainError, Migration};

/// A backfill runner's saved position.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub cursor: String,
    pub rows_done: u64,
    pub rows_total_estimate: u64,
    pub rate_rows_per_second: f64,
    pub runner: String,
    pub updated_at_ms: i64,
    /// Why the runner holds between batches; empty: it does not.
    pub throttle_reason: String,
    /// When the current hold began (0: not holding).
    pub throttled_since_ms: i64,
    /// Time held over the whole backfill.
    pub throttled_ms: u64,
}

/// A backfill's settings as stored, with who set them last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredSettings {
    pub settings: switchyard_proto::json::BackfillSettings,
    pub updated_by: String,
    pub updated_at_ms: i64,
    pub reason: String,
}

impl Store {
    /// A backfill runner's position after a batch; the rate is smoothed over checkpoints.
    /// `admit` judges the migration as it is when the position is written (locked against a
    /// concurrent cancel or restart), so a position is never saved for a run that has ended.
    pub async fn save_checkpoint<F>(
        &self,
        key: &str,
        checkpoint: &Checkpoint,
        admit: F,
    ) -> Result<Checkpoint, StoreError>
    where
        F: FnOnce(&Migration) -> Result<(), DomainError> + Send,
    {
        self.write(|tx| {
            Box::pin(async move {
                let current = self.lock_migration(tx, key).await?;
                if let Err(error) = admit(&current) {
                    return Err(StoreError::Refused {
                        error,
                        current: Box::new(current),
                    });
                }
                let previous = load_checkpoint(&mut **tx, key, self.backend.for_update()).await?;
                let rate = match &previous {
                    Some(p)
                        if checkpoint.updated_at_ms > p.updated_at_ms
                            && checkpoint.rows_done >= p.rows_done =>
                    {
                        let instant = (checkpoint.rows_done - p.rows_done) as f64 * 1000.0
                            / (checkpoint.updated_at_ms - p.updated_at_ms) as f64;
                        // An exponentially weighted average: steady, yet follows a rate change
                        // within a few batches.
                        if p.rate_rows_per_second > 0.0 {
                            0.7 * p.rate_rows_per_second + 0.3 * instant
                        } else {
                            instant
                        }
                    }
                    Some(p) => p.rate_rows_per_second,
                    None => 0.0,
                };
                let saved = Checkpoint {
                    rate_rows_per_second: rate,
                    ..checkpoint.clone()
                };
                sqlx::query(
                "INSERT INTO backfill_checkpoints (migration_key, cursor, rows_done, rows_total, \
                 rate_milli, runner, updated_at_ms, throttle_reason, throttled_since_ms, \
                 throttled_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (migration_key) DO UPDATE SET cursor = excluded.cursor, \
                 rows_done = excluded.rows_done, rows_total = excluded.rows_total, \
                 rate_milli = excluded.rate_milli, runner = excluded.runner, \
                 updated_at_ms = excluded.updated_at_ms, \
                 throttle_reason = excluded.throttle_reason, \
                 throttled_since_ms = excluded.throttled_since_ms, \
                 throttled_ms = excluded.throttled_ms",
            )
            .bind(key)
            .bind(&saved.cursor)
            .bind(saved.rows_done as i64)
            .bind(saved.rows_total_estimate as i64)
            .bind((saved.rate_rows_per_second * 1000.0) as i64)
            .bind(&saved.runner)
            .bind(saved.updated_at_ms)
            .bind(&saved.throttle_reason)
            .bind(saved.throttled_since_ms)
            .bind(saved.throttled_ms as i64)
            .execute(&mut **tx)
            .await?;
                Ok(saved)
            })
        })
        .await
    }

    pub async fn checkpoint(&self, key: &str) -> Result<Option<Checkpoint>, StoreError> {
        load_checkpoint(&self.pool, key, "").await
    }

    /// A backfill's settings (empty when none were ever set).
    pub async fn backfill_settings(&self, key: &str) -> Result<StoredSettings, StoreError> {
        let row: Option<(String, String, i64, String)> = sqlx::query_as(
            "SELECT settings, updated_by, updated_at_ms, reason FROM backfill_settings \
             WHERE migration_key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => StoredSettings::default(),
            Some((json, updated_by, updated_at_ms, reason)) => StoredSettings {
                // Written by this server from the same type; a row it cannot read (a newer
                // server's settings after a downgrade) reads as none rather than failing every
                // checkpoint.
                settings: serde_json::from_str(&json).unwrap_or_default(),
                updated_by,
                updated_at_ms,
                reason,
            },
        })
    }

    /// Replaces a backfill's settings with `change(current)`, atomically, and returns them.
    pub async fn update_backfill_settings<F>(
        &self,
        key: &str,
        actor: &str,
        reason: &str,
        at_ms: i64,
        change: F,
    ) -> Result<StoredSettings, StoreError>
    where
        F: FnOnce(
                &switchyard_proto::json::BackfillSettings,
            ) -> switchyard_proto::json::BackfillSettings
            + Send,
    {
        self.write(|tx| {
            Box::pin(async move {
                // The migration's row serialises concurrent changes of its settings.
                self.lock_migration(tx, key).await?;
                let current: Option<String> = sqlx::query_scalar(
                    "SELECT settings FROM backfill_settings WHERE migration_key = $1",
                )
                .bind(key)
                .fetch_optional(&mut **tx)
                .await?;
                let current = current
                    .and_then(|j| serde_json::from_str(&j).ok())
                    .unwrap_or_default();
                let settings = change(&current);
                let json = serde_json::to_string(&settings).expect("settings serialise");
                sqlx::query(
                    "INSERT INTO backfill_settings (migration_key, settings, updated_by, \
                     updated_at_ms, reason) VALUES ($1, $2, $3, $4, $5) ON CONFLICT \
                     (migration_key) DO UPDATE SET settings = excluded.settings, \
                     updated_by = excluded.updated_by, updated_at_ms = excluded.updated_at_ms, \
                     reason = excluded.reason",
                )
                .bind(key)
                .bind(&json)
                .bind(actor)
                .bind(at_ms)
                .bind(reason)
                .execute(&mut **tx)
                .await?;
                Ok(StoredSettings {
                    settings,
                    updated_by: actor.to_owned(),
                    updated_at_ms: at_ms,
                    reason: reason.to_owned(),
                })
            })
        })
        .await
    }
}

/// Forgets a backfill's position, inside the mutation that cancelled it (see
/// [`super::Alongside::forget_checkpoint`]).
pub(super) async fn forget_checkpoint(tx: &mut Tx<'_>, key: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM backfill_checkpoints WHERE migration_key = $1")
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn load_checkpoint<'e, E>(
    executor: E,
    key: &str,
    lock: &str,
) -> Result<Option<Checkpoint>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    type Row = (String, i64, i64, i64, String, i64, String, i64, i64);
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT cursor, rows_done, rows_total, rate_milli, runner, updated_at_ms, \
         throttle_reason, throttled_since_ms, throttled_ms \
         FROM backfill_checkpoints WHERE migration_key = $1{lock}"
    ))
    .bind(key)
    .fetch_optional(executor)
    .await?;
    Ok(row.map(
        |(cursor, done, total, rate_milli, runner, at, reason, since, held)| Checkpoint {
            cursor,
            rows_done: done.max(0) as u64,
            rows_total_estimate: total.max(0) as u64,
            rate_rows_per_second: rate_milli as f64 / 1000.0,
            runner,
            updated_at_ms: at,
            throttle_reason: reason,
            throttled_since_ms: since,
            throttled_ms: held.max(0) as u64,
        },
    ))
}
