//! Client instances (heartbeats, the migrations each evaluates, the live fleet) and the traffic
//! they report, rolled up per minute.

use super::rows::{ClientInstance, InstanceRow};
use super::state::{counts_json, parse_counts};
use super::{Store, StoreError, Tx};
use std::time::Duration;
use switchyard_domain::traffic::TrafficCounts;
use switchyard_domain::{Fleet, LiveInstance, Version};

impl Store {
    /// Records that an instance is alive and which snapshot version it has applied.
    pub async fn heartbeat(
        &self,
        service: &str,
        instance_id: &str,
        applied: Version,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO client_instances (service, instance_id, applied_version, \
                     first_seen_ms, last_seen_ms) VALUES ($1, $2, $3, $4, $4) \
                     ON CONFLICT (service, instance_id) DO UPDATE SET \
                     applied_version = excluded.applied_version, \
                     last_seen_ms = excluded.last_seen_ms",
                )
                .bind(service)
                .bind(instance_id)
                .bind(applied.0 as i64)
                .bind(now_ms)
                .execute(&mut **tx)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Forgets an instance that shut down cleanly (and which migrations it evaluated).
    pub async fn forget_instance(
        &self,
        service: &str,
        instance_id: &str,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                for table in ["client_instance_migrations", "client_instances"] {
                    sqlx::query(&format!(
                        "DELETE FROM {table} WHERE service = $1 AND instance_id = $2"
                    ))
                    .bind(service)
                    .bind(instance_id)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Every instance seen within `window` (live ones are those within the client TTL).
    pub async fn instances(
        &self,
        now_ms: i64,
        window: Duration,
    ) -> Result<Vec<ClientInstance>, StoreError> {
        let rows: Vec<InstanceRow> = sqlx::query_as(
            "SELECT service, instance_id, applied_version, first_seen_ms, last_seen_ms \
             FROM client_instances WHERE last_seen_ms >= $1 ORDER BY service, instance_id",
        )
        .bind(now_ms - window.as_millis() as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(InstanceRow::into_record).collect())
    }

    /// Records which migrations an instance evaluates (as of its latest heartbeat).
    pub async fn heartbeat_migrations(
        &self,
        service: &str,
        instance_id: &str,
        migrations: &[String],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if migrations.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            Box::pin(async move {
                for key in migrations {
                    sqlx::query(
                        "INSERT INTO client_instance_migrations (service, instance_id, \
                         migration_key, last_seen_ms) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (migration_key, service, instance_id) DO UPDATE SET \
                         last_seen_ms = excluded.last_seen_ms",
                    )
                    .bind(service)
                    .bind(instance_id)
                    .bind(key)
                    .bind(now_ms)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Instances seen within `window` whose heartbeats name `key` among their migrations.
    pub async fn instances_of(
        &self,
        key: &str,
        now_ms: i64,
        window: Duration,
    ) -> Result<Vec<ClientInstance>, StoreError> {
        let rows: Vec<InstanceRow> = sqlx::query_as(
            "SELECT i.service, i.instance_id, i.applied_version, i.first_seen_ms, \
             i.last_seen_ms FROM client_instances i JOIN client_instance_migrations m \
             ON m.service = i.service AND m.instance_id = i.instance_id \
             WHERE m.migration_key = $1 AND i.last_seen_ms >= $2 AND m.last_seen_ms >= $2 \
             ORDER BY i.service, i.instance_id",
        )
        .bind(key)
        .bind(now_ms - window.as_millis() as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(InstanceRow::into_record).collect())
    }

    /// Adds one service's counts to the per-minute rollups, all in one transaction.
    pub async fn add_traffic(
        &self,
        service: &str,
        entries: &[(String, i64, TrafficCounts)],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                for (key, minute, counts) in entries {
                    // Create the row if missing, then lock it (Postgres) and add to it.
                    sqlx::query(
                        "INSERT INTO traffic_minutes (migration_key, minute_ms, service, counts) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (migration_key, minute_ms, service) \
                         DO NOTHING",
                    )
                    .bind(key)
                    .bind(*minute)
                    .bind(service)
                    .bind("{}")
                    .execute(&mut **tx)
                    .await?;
                    let stored: String = sqlx::query_scalar(&format!(
                        "SELECT counts FROM traffic_minutes WHERE migration_key = $1 \
                         AND minute_ms = $2 AND service = $3{}",
                        self.backend.for_update()
                    ))
                    .bind(key)
                    .bind(*minute)
                    .bind(service)
                    .fetch_one(&mut **tx)
                    .await?;
                    let mut total = parse_counts(&stored)?;
                    total.add(counts);
                    sqlx::query(
                        "UPDATE traffic_minutes SET counts = $1 WHERE migration_key = $2 \
                         AND minute_ms = $3 AND service = $4",
                    )
                    .bind(counts_json(&total)?)
                    .bind(key)
                    .bind(*minute)
                    .bind(service)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// A migration's counts per minute from `since_minute_ms` on, summed over services.
    pub async fn traffic(
        &self,
        key: &str,
        since_minute_ms: i64,
    ) -> Result<Vec<(i64, TrafficCounts)>, StoreError> {
        traffic_minutes(&self.pool, key, since_minute_ms).await
    }

    /// The live fleet (instances that reported within `ttl`).
    pub async fn fleet(&self, now_ms: i64, ttl: Duration) -> Result<Fleet, StoreError> {
        let mut tx = self.pool.begin().await?;
        let fleet = load_fleet(&mut tx, now_ms, ttl).await;
        tx.commit().await?;
        fleet
    }

    /// Deletes rollups of minutes before `before_ms` and instance records not seen since then.
    pub async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                let mut removed = 0;
                for sql in [
                    "DELETE FROM traffic_minutes WHERE minute_ms < $1",
                    "DELETE FROM client_instance_migrations WHERE last_seen_ms < $1",
                    "DELETE FROM client_instances WHERE last_seen_ms < $1",
                ] {
                    removed += sqlx::query(sql)
                        .bind(before_ms)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                }
                Ok(removed)
            })
        })
        .await
    }
}

pub(super) async fn traffic_minutes<'e, E>(
    executor: E,
    key: &str,
    since_minute_ms: i64,
) -> Result<Vec<(i64, TrafficCounts)>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT minute_ms, counts FROM traffic_minutes WHERE migration_key = $1 \
         AND minute_ms >= $2 ORDER BY minute_ms",
    )
    .bind(key)
    .bind(since_minute_ms)
    .fetch_all(executor)
    .await?;
    let mut minutes: Vec<(i64, TrafficCounts)> = Vec::new();
    for (minute, counts) in rows {
        let counts = parse_counts(&counts)?;
        match minutes.last_mut() {
            Some((m, total)) if *m == minute => total.add(&counts),
            _ => minutes.push((minute, counts)),
        }
    }
    Ok(minutes)
}

pub(super) async fn load_fleet(
    tx: &mut Tx<'_>,
    now_ms: i64,
    ttl: Duration,
) -> Result<Fleet, StoreError> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT service, instance_id, applied_version FROM client_instances \
         WHERE last_seen_ms >= $1",
    )
    .bind(now_ms - ttl.as_millis() as i64)
    .fetch_all(&mut **tx)
    .await?;
    Ok(Fleet {
        live: rows
            .into_iter()
            .map(|(service, instance_id, applied)| LiveInstance {
                service,
                instance_id,
                applied_version: Version(applied as u64),
            })
            .collect(),
    })
}
