//! Mismatch samples: the entities whose shadow reads differed, one row per migration and
//! entity, kept for the newest [`KEPT_PER_MIGRATION`] entities of each migration.

use super::{Store, StoreError};
use switchyard_domain::traffic::MismatchSample;

/// Distinct entities kept per migration: enough to find a pattern and repair a batch, bounded
/// however long a broken comparison keeps reporting.
pub const KEPT_PER_MIGRATION: i64 = 1000;

/// One entity's mismatches, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MismatchEntity {
    pub entity_key: String,
    pub description: String,
    pub seen: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub service: String,
    pub instance_id: String,
}

impl Store {
    /// Adds one instance's samples (already validated). Samples of keys that name no migration
    /// are not stored; returns how many were ignored.
    pub async fn add_mismatch_samples(
        &self,
        service: &str,
        instance_id: &str,
        samples: &[(String, MismatchSample)],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        if samples.is_empty() {
            return Ok(0);
        }
        self.write(|tx| {
            Box::pin(async move {
                let mut unknown = 0;
                let mut touched: Vec<&str> = Vec::new();
                for (key, sample) in samples {
                    let known: i64 =
                        sqlx::query_scalar("SELECT COUNT(*) FROM migrations WHERE key = $1")
                            .bind(key)
                            .fetch_one(&mut **tx)
                            .await?;
                    if known == 0 {
                        unknown += 1;
                        continue;
                    }
                    // The client's time, unless it is unset or ahead of ours (a skewed clock
                    // must not keep a sample at the top of the list).
                    let seen_at = match sample.observed_at_ms {
                        t if t > 0 && t <= now_ms => t,
                        _ => now_ms,
                    };
                    sqlx::query(
                        "INSERT INTO mismatch_samples (migration_key, entity_key, description, \
                         seen, first_seen_ms, last_seen_ms, service, instance_id) \
                         VALUES ($1, $2, $3, 1, $4, $4, $5, $6) \
                         ON CONFLICT (migration_key, entity_key) DO UPDATE SET \
                         description = excluded.description, \
                         seen = mismatch_samples.seen + 1, \
                         last_seen_ms = excluded.last_seen_ms, \
                         service = excluded.service, instance_id = excluded.instance_id",
                    )
                    .bind(key)
                    .bind(&sample.entity_key)
                    .bind(&sample.description)
                    .bind(seen_at)
                    .bind(service)
                    .bind(instance_id)
                    .execute(&mut **tx)
                    .await?;
                    if !touched.contains(&key.as_str()) {
                        touched.push(key);
                    }
                }
                for key in touched {
                    sqlx::query(
                        "DELETE FROM mismatch_samples WHERE migration_key = $1 AND entity_key \
                         NOT IN (SELECT entity_key FROM mismatch_samples WHERE migration_key = $1 \
                         ORDER BY last_seen_ms DESC, entity_key LIMIT $2)",
                    )
                    .bind(key)
                    .bind(KEPT_PER_MIGRATION)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(unknown)
            })
        })
        .await
    }

    /// A migration's sampled entities, most recently seen first, and how many are kept.
    pub async fn mismatches(
        &self,
        key: &str,
        limit: u32,
    ) -> Result<(Vec<MismatchEntity>, u64), StoreError> {
        let rows: Vec<MismatchEntity> = sqlx::query_as(
            "SELECT entity_key, description, seen, first_seen_ms, last_seen_ms, service, \
             instance_id FROM mismatch_samples WHERE migration_key = $1 \
             ORDER BY last_seen_ms DESC, entity_key LIMIT $2",
        )
        .bind(key)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM mismatch_samples WHERE migration_key = $1")
                .bind(key)
                .fetch_one(&self.pool)
                .await?;
        Ok((rows, total.max(0) as u64))
    }
}
