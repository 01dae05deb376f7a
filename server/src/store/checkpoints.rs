//! Backfill checkpoints: each running backfill's saved position and smoothed rate.

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
                 rate_milli, runner, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (migration_key) DO UPDATE SET cursor = excluded.cursor, \
                 rows_done = excluded.rows_done, rows_total = excluded.rows_total, \
                 rate_milli = excluded.rate_milli, runner = excluded.runner, \
                 updated_at_ms = excluded.updated_at_ms",
            )
            .bind(key)
            .bind(&saved.cursor)
            .bind(saved.rows_done as i64)
            .bind(saved.rows_total_estimate as i64)
            .bind((saved.rate_rows_per_second * 1000.0) as i64)
            .bind(&saved.runner)
            .bind(saved.updated_at_ms)
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
    let row: Option<(String, i64, i64, i64, String, i64)> = sqlx::query_as(&format!(
        "SELECT cursor, rows_done, rows_total, rate_milli, runner, updated_at_ms \
         FROM backfill_checkpoints WHERE migration_key = $1{lock}"
    ))
    .bind(key)
    .fetch_optional(executor)
    .await?;
    Ok(
        row.map(|(cursor, done, total, rate_milli, runner, at)| Checkpoint {
            cursor,
            rows_done: done.max(0) as u64,
            rows_total_estimate: total.max(0) as u64,
            rate_rows_per_second: rate_milli as f64 / 1000.0,
            runner,
            updated_at_ms: at,
        }),
    )
}
