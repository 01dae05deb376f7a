//! Client instances (heartbeats, the migrations each evaluates, the live fleet) and the traffic
//! they report, rolled up per minute.

use super::rows::{ClientInstance, InstanceRow};
use super::state::{counts_json, parse_counts};
use super::tokens::instance_covers;
use super::{Store, StoreError, Tx};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use switchyard_domain::gate::{InstanceReport, OldUse, Reports};
use switchyard_domain::traffic::TrafficCounts;
use switchyard_domain::{Fleet, LiveInstance, Version};

impl Store {
    /// Records a heartbeat sent with the token `by.token_id`, and which of `migrations` (those that
    /// exist) the instance evaluates, in one transaction. The instance belongs to the token that
    /// registered it: a heartbeat from another token changes nothing and names the owner. An
    /// unowned row (from before owners were recorded) or one whose token is revoked or gone is
    /// claimed, so a rotated token takes its instances over. An instance new to the token is
    /// refused if the token already has `by.max_live` live instances.
    pub async fn record_heartbeat(
        &self,
        by: Registrant,
        service: &str,
        instance_id: &str,
        applied: Version,
        migrations: &[String],
        now_ms: i64,
    ) -> Result<HeartbeatOutcome, StoreError> {
        let token_id = by.token_id;
        self.write(|tx| {
            Box::pin(async move {
                let held: Option<Option<i64>> = sqlx::query_scalar(
                    "SELECT token_id FROM client_instances WHERE service = $1 AND instance_id = $2",
                )
                .bind(service)
                .bind(instance_id)
                .fetch_optional(&mut **tx)
                .await?;
                if held != Some(Some(token_id as i64)) {
                    // Registering (or claiming) one more: count only then, so the steady stream
                    // of heartbeats costs no count. On Postgres the token's row is locked first,
                    // so its concurrent registrations queue instead of all passing one count.
                    sqlx::query(&format!(
                        "SELECT id FROM api_tokens WHERE id = $1{}",
                        self.backend.for_update()
                    ))
                    .bind(token_id as i64)
                    .fetch_optional(&mut **tx)
                    .await?;
                    let live: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM client_instances WHERE token_id = $1 \
                         AND last_seen_ms >= $2",
                    )
                    .bind(token_id as i64)
                    .bind(by.live_after_ms)
                    .fetch_one(&mut **tx)
                    .await?;
                    if live as u64 >= by.max_live {
                        return Ok(HeartbeatOutcome::TooManyInstances);
                    }
                }
                let written = sqlx::query(
                    "INSERT INTO client_instances (service, instance_id, applied_version, \
                     first_seen_ms, last_seen_ms, token_id) VALUES ($1, $2, $3, $4, $4, $5) \
                     ON CONFLICT (service, instance_id) DO UPDATE SET \
                     applied_version = excluded.applied_version, \
                     last_seen_ms = excluded.last_seen_ms, token_id = excluded.token_id \
                     WHERE client_instances.token_id = excluded.token_id OR NOT EXISTS \
                     (SELECT 1 FROM api_tokens t WHERE t.id = client_instances.token_id \
                     AND t.revoked_at_ms IS NULL)",
                )
                .bind(service)
                .bind(instance_id)
                .bind(applied.0 as i64)
                .bind(now_ms)
                .bind(token_id as i64)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if written == 0 {
                    return match owner(tx, service, instance_id).await? {
                        Some(owner) => Ok(HeartbeatOutcome::OwnedBy(owner)),
                        None => Err(StoreError::Corrupt(format!(
                            "instance {service}/{instance_id}: heartbeat neither written nor owned"
                        ))),
                    };
                }
                // Keys of migrations that do not exist are not stored (a typo or a stale build
                // would otherwise grow the table without bound); the caller counts them.
                let mut unknown_migrations = 0;
                for key in migrations {
                    let stored = sqlx::query(
                        "INSERT INTO client_instance_migrations (service, instance_id, \
                         migration_key, last_seen_ms) SELECT $1, $2, $3, $4 \
                         WHERE EXISTS (SELECT 1 FROM migrations WHERE key = $3) \
                         ON CONFLICT (migration_key, service, instance_id) DO UPDATE SET \
                         last_seen_ms = excluded.last_seen_ms",
                    )
                    .bind(service)
                    .bind(instance_id)
                    .bind(key)
                    .bind(now_ms)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                    if stored == 0 {
                        unknown_migrations += 1;
                    }
                }
                Ok(HeartbeatOutcome::Recorded { unknown_migrations })
            })
        })
        .await
    }

    /// Forgets an instance that shut down cleanly (and which migrations it evaluated), if
    /// `token_id` owns it (or may remove any instance: `any`, an admin). Otherwise nothing
    /// changes and the owner is returned. An instance that is not there is already forgotten.
    pub async fn forget_instance(
        &self,
        token_id: u64,
        any: bool,
        service: &str,
        instance_id: &str,
    ) -> Result<Option<InstanceOwner>, StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                // One conditional statement, so a concurrent claim cannot slip in between a
                // check and the delete.
                let removed = sqlx::query(
                    "DELETE FROM client_instances WHERE service = $1 AND instance_id = $2 \
                     AND ($3 OR token_id = $4 OR NOT EXISTS (SELECT 1 FROM api_tokens t \
                     WHERE t.id = client_instances.token_id AND t.revoked_at_ms IS NULL))",
                )
                .bind(service)
                .bind(instance_id)
                .bind(any)
                .bind(token_id as i64)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if removed == 0 {
                    if let Some(owner) = owner(tx, service, instance_id).await? {
                        return Ok(Some(owner));
                    }
                }
                sqlx::query(
                    "DELETE FROM client_instance_migrations WHERE service = $1 AND instance_id = $2",
                )
                .bind(service)
                .bind(instance_id)
                .execute(&mut **tx)
                .await?;
                Ok(None)
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

    /// One page of the instances seen within `window`, ordered by service and instance id,
    /// starting after `after`; with `key`, only those whose token's scope covers migration
    /// `key` (the set the rules count for it).
    pub async fn instances_page(
        &self,
        key: Option<&str>,
        now_ms: i64,
        window: Duration,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<Vec<ClientInstance>, StoreError> {
        // Labels are never empty, so ("", "") is before every instance.
        let (after_service, after_instance) = after.unwrap_or(("", ""));
        let covering = match key {
            Some(_) => format!("AND {}", instance_covers("$5")),
            None => String::new(),
        };
        let rows: Vec<InstanceRow> = sqlx::query_as(&format!(
            "SELECT service, instance_id, applied_version, first_seen_ms, last_seen_ms \
             FROM client_instances i WHERE last_seen_ms >= $1 \
             AND (service > $2 OR (service = $2 AND instance_id > $3)) {covering} \
             ORDER BY service, instance_id LIMIT $4"
        ))
        .bind(now_ms - window.as_millis() as i64)
        .bind(after_service)
        .bind(after_instance)
        .bind(i64::from(limit))
        .bind(key)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(InstanceRow::into_record).collect())
    }

    /// The instances among `page` whose heartbeats within `window` name `key` (they evaluate
    /// the migration, or run its backfill), as (service, instance id).
    pub async fn naming(
        &self,
        key: &str,
        page: &[ClientInstance],
        now_ms: i64,
        window: Duration,
    ) -> Result<HashSet<(String, String)>, StoreError> {
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            return Ok(HashSet::new());
        };
        // The page's range of (service, instance id), so one query answers for the page.
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT service, instance_id FROM client_instance_migrations \
             WHERE migration_key = $1 AND last_seen_ms >= $2 \
             AND (service > $3 OR (service = $3 AND instance_id >= $4)) \
             AND (service < $5 OR (service = $5 AND instance_id <= $6))",
        )
        .bind(key)
        .bind(now_ms - window.as_millis() as i64)
        .bind(&first.service)
        .bind(&first.instance_id)
        .bind(&last.service)
        .bind(&last.instance_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
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

    /// Adds one service's counts to the per-minute rollups, all in one transaction. Entries for
    /// keys that name no migration are not stored (rows nobody can read, growing without bound);
    /// returns how many were ignored.
    pub async fn add_traffic(
        &self,
        service: &str,
        entries: &[(String, i64, TrafficCounts)],
    ) -> Result<usize, StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                // Whether each key names a migration, asked once per key: a report's entries
                // are many minutes of few migrations.
                let mut exists: HashMap<&str, bool> = HashMap::new();
                let mut unknown = 0;
                for (key, minute, counts) in entries {
                    let known = match exists.get(key.as_str()) {
                        Some(known) => *known,
                        None => {
                            let n: i64 = sqlx::query_scalar(
                                "SELECT COUNT(*) FROM migrations WHERE key = $1",
                            )
                            .bind(key)
                            .fetch_one(&mut **tx)
                            .await?;
                            exists.insert(key, n > 0);
                            n > 0
                        }
                    };
                    if !known {
                        unknown += 1;
                        continue;
                    }
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
                Ok(unknown)
            })
        })
        .await
    }

    /// Records that an instance reported at `now_ms` (its previous report becomes the start of
    /// the interval this one covers), and, per migration, the old-shape operations it
    /// reported: (key, reads, writes, the start of the earliest minute they were counted in).
    pub async fn record_report(
        &self,
        service: &str,
        instance_id: &str,
        old_use: &[(String, u64, u64, i64)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                let previous: Option<Option<i64>> = sqlx::query_scalar(
                    "SELECT reported_ms FROM client_instances \
                     WHERE service = $1 AND instance_id = $2",
                )
                .bind(service)
                .bind(instance_id)
                .fetch_optional(&mut **tx)
                .await?;
                let previous = previous.flatten();
                sqlx::query(
                    "UPDATE client_instances SET previous_reported_ms = reported_ms, \
                     reported_ms = $3 WHERE service = $1 AND instance_id = $2",
                )
                .bind(service)
                .bind(instance_id)
                .bind(now_ms)
                .execute(&mut **tx)
                .await?;
                for (key, reads, writes, first_minute) in old_use {
                    // The operations happened after the previous report, and not before the
                    // minute they were first counted in (a backlog sent after an outage).
                    let since = previous.unwrap_or(*first_minute).max(*first_minute);
                    sqlx::query(
                        "INSERT INTO instance_old_use (migration_key, service, instance_id, \
                         since_ms, until_ms, reads, writes) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (migration_key, service, instance_id) DO UPDATE SET \
                         since_ms = excluded.since_ms, until_ms = excluded.until_ms, \
                         reads = excluded.reads, writes = excluded.writes",
                    )
                    .bind(key)
                    .bind(service)
                    .bind(instance_id)
                    .bind(since.min(now_ms))
                    .bind(now_ms)
                    .bind(i64::try_from(*reads).unwrap_or(i64::MAX))
                    .bind(i64::try_from(*writes).unwrap_or(i64::MAX))
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// What the gate needs of the instances' reports for migration `key`: every instance's
    /// last two report times, and each instance's latest old-shape use of `key` since
    /// `since_ms`.
    pub async fn reports(&self, key: &str, since_ms: i64) -> Result<Reports, StoreError> {
        let instances: Vec<(String, String, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT service, instance_id, reported_ms, previous_reported_ms \
             FROM client_instances WHERE reported_ms IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        let old_use: Vec<(String, String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT service, instance_id, since_ms, until_ms, reads, writes \
             FROM instance_old_use WHERE migration_key = $1 AND until_ms >= $2",
        )
        .bind(key)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(Reports {
            instances: instances
                .into_iter()
                .map(
                    |(service, instance_id, reported_ms, previous_reported_ms)| InstanceReport {
                        service,
                        instance_id,
                        reported_ms,
                        previous_reported_ms,
                    },
                )
                .collect(),
            old_use: old_use
                .into_iter()
                .map(
                    |(service, instance_id, since_ms, until_ms, reads, writes)| OldUse {
                        service,
                        instance_id,
                        since_ms,
                        until_ms,
                        reads: reads.max(0) as u64,
                        writes: writes.max(0) as u64,
                    },
                )
                .collect(),
        })
    }

    /// A migration's counts per minute from `since_minute_ms` on, summed over services.
    pub async fn traffic(
        &self,
        key: &str,
        since_minute_ms: i64,
    ) -> Result<Vec<(i64, TrafficCounts)>, StoreError> {
        traffic_minutes(&self.pool, key, since_minute_ms).await
    }

    /// What each service reported of `key` since `since_minute_ms`, in total, with the last
    /// minute it used the old shape (None: not in the period): who is still on the old shape.
    pub async fn traffic_by_service(
        &self,
        key: &str,
        since_minute_ms: i64,
    ) -> Result<Vec<(String, TrafficCounts, Option<i64>)>, StoreError> {
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT service, minute_ms, counts FROM traffic_minutes WHERE migration_key = $1 \
             AND minute_ms >= $2 ORDER BY service, minute_ms",
        )
        .bind(key)
        .bind(since_minute_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut services: Vec<(String, TrafficCounts, Option<i64>)> = Vec::new();
        for (service, minute, counts) in rows {
            let counts = parse_counts(&counts)?;
            let old_use = (counts.old.operations() > 0).then_some(minute);
            match services.last_mut() {
                Some((s, total, last_old)) if *s == service => {
                    total.add(&counts);
                    *last_old = old_use.or(*last_old);
                }
                _ => services.push((service, counts, old_use)),
            }
        }
        Ok(services)
    }

    /// The live fleet migration `key` waits on (instances that reported within `ttl` and whose
    /// token's scope covers `key`).
    pub async fn fleet(&self, key: &str, now_ms: i64, ttl: Duration) -> Result<Fleet, StoreError> {
        let mut tx = self.pool.begin().await?;
        let fleet = load_fleet(&mut tx, key, now_ms, ttl).await;
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
                    // The database's evidence is kept as long as the clients' own.
                    "DELETE FROM usage_statements WHERE minute_ms < $1",
                    "DELETE FROM instance_old_use WHERE until_ms < $1",
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

/// The live instances migration `key` waits on: an instance whose token may not see `key`
/// never receives its changes, so neither acknowledges nor evaluates them.
pub(super) async fn load_fleet(
    tx: &mut Tx<'_>,
    key: &str,
    now_ms: i64,
    ttl: Duration,
) -> Result<Fleet, StoreError> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(&format!(
        "SELECT service, instance_id, applied_version FROM client_instances i \
         WHERE last_seen_ms >= $1 AND {}",
        instance_covers("$2")
    ))
    .bind(now_ms - ttl.as_millis() as i64)
    .bind(key)
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

/// What a heartbeat did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// Recorded; `unknown_migrations` of the keys it named are not migrations and were ignored.
    Recorded { unknown_migrations: usize },
    /// Another token owns the instance: nothing was written.
    OwnedBy(InstanceOwner),
    /// The instance is new to the token, which already has as many live instances as allowed:
    /// nothing was written.
    TooManyInstances,
}

/// The token a heartbeat comes with, and how many live instances (seen since `live_after_ms`)
/// it may have registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registrant {
    pub token_id: u64,
    pub live_after_ms: i64,
    pub max_live: u64,
}

/// The token that registered an instance (its id and name; never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceOwner {
    pub token_id: u64,
    /// `None` if the token no longer exists.
    pub name: Option<String>,
    /// The token exists and is not revoked: its ownership holds.
    pub active: bool,
}

/// The owner of an instance, if it has one.
async fn owner(
    tx: &mut Tx<'_>,
    service: &str,
    instance_id: &str,
) -> Result<Option<InstanceOwner>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct OwnerRow {
        token_id: Option<i64>,
        name: Option<String>,
        found: Option<i64>,
        revoked_at_ms: Option<i64>,
    }
    let row: Option<OwnerRow> = sqlx::query_as(
        "SELECT i.token_id, t.name, t.id AS found, t.revoked_at_ms FROM client_instances i \
         LEFT JOIN api_tokens t ON t.id = i.token_id \
         WHERE i.service = $1 AND i.instance_id = $2",
    )
    .bind(service)
    .bind(instance_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.and_then(|r| {
        Some(InstanceOwner {
            token_id: r.token_id? as u64,
            active: r.found.is_some() && r.revoked_at_ms.is_none(),
            name: r.name,
        })
    }))
}
