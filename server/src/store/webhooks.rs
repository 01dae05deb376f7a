//! Webhook subscriptions and their outbox (see the migration's comments): enqueued in the
//! transaction of what they report, read back by the sender in id order per subscription.

use super::{Store, StoreError, Tx};
use std::collections::BTreeMap;
use switchyard_domain::{Migration, Scope};

/// A subscription as stored (its secret only for signing: never answered).
#[derive(Debug, Clone)]
pub struct StoredWebhook {
    pub id: u64,
    pub url: String,
    /// The migrations it follows (empty: every one).
    pub migrations: Scope,
    /// The event types it receives.
    pub events: Vec<String>,
    /// `json` or `slack`.
    pub format: String,
    pub secret: String,
    pub created_by: String,
    pub created_at_ms: i64,
    pub removed_at_ms: Option<i64>,
}

/// One event for one subscription: the delivery log's row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: i64,
    pub event_type: String,
    pub migration_key: String,
    pub payload: String,
    pub created_at_ms: i64,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    /// The receiver's last HTTP status (0: none, it could not be reached).
    pub last_status: i64,
    pub last_error: String,
    pub delivered_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct WebhookRow {
    id: i64,
    url: String,
    migrations: String,
    events: String,
    format: String,
    secret: String,
    created_by: String,
    created_at_ms: i64,
    removed_at_ms: Option<i64>,
}

impl WebhookRow {
    fn into_stored(self) -> Result<StoredWebhook, StoreError> {
        let patterns: Vec<&str> = self
            .migrations
            .split(',')
            .filter(|p| !p.is_empty())
            .collect();
        Ok(StoredWebhook {
            id: self.id as u64,
            url: self.url,
            migrations: Scope::parse(&patterns).map_err(|e| StoreError::Corrupt(e.0))?,
            events: self.events.split(',').map(str::to_owned).collect(),
            format: self.format,
            secret: self.secret,
            created_by: self.created_by,
            created_at_ms: self.created_at_ms,
            removed_at_ms: self.removed_at_ms,
        })
    }
}

const WEBHOOK_COLUMNS: &str =
    "id, url, migrations, events, format, secret, created_by, created_at_ms, removed_at_ms";
const DELIVERY_COLUMNS: &str = "id, webhook_id, event_type, migration_key, payload, \
     created_at_ms, status, attempts, next_attempt_ms, last_status, last_error, delivered_at_ms";

impl Store {
    pub async fn add_webhook(&self, w: &StoredWebhook) -> Result<u64, StoreError> {
        let migrations = w.migrations.texts().join(",");
        let events = w.events.join(",");
        self.write(|tx| {
            Box::pin(async move {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO webhooks (url, migrations, events, format, secret, created_by, \
                     created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                )
                .bind(&w.url)
                .bind(&migrations)
                .bind(&events)
                .bind(&w.format)
                .bind(&w.secret)
                .bind(&w.created_by)
                .bind(w.created_at_ms)
                .fetch_one(&mut **tx)
                .await?;
                Ok(id as u64)
            })
        })
        .await
    }

    /// Every subscription not removed, oldest first.
    pub async fn webhooks(&self) -> Result<Vec<StoredWebhook>, StoreError> {
        let rows: Vec<WebhookRow> = sqlx::query_as(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE removed_at_ms IS NULL ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(WebhookRow::into_stored).collect()
    }

    pub async fn webhook(&self, id: u64) -> Result<Option<StoredWebhook>, StoreError> {
        let row: Option<WebhookRow> = sqlx::query_as(&format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"
        ))
        .bind(id.min(i64::MAX as u64) as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.map(WebhookRow::into_stored).transpose()
    }

    /// Removes a subscription: nothing more is sent to it (what waits is dropped); its log
    /// stays. False when there was none to remove.
    pub async fn remove_webhook(&self, id: u64, now_ms: i64) -> Result<bool, StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                let id = id.min(i64::MAX as u64) as i64;
                let done = sqlx::query(
                    "UPDATE webhooks SET removed_at_ms = $2 WHERE id = $1 AND removed_at_ms IS NULL",
                )
                .bind(id)
                .bind(now_ms)
                .execute(&mut **tx)
                .await?;
                sqlx::query(
                    "UPDATE webhook_outbox SET status = 'failed', last_error = 'subscription \
                     removed' WHERE webhook_id = $1 AND status = 'pending'",
                )
                .bind(id)
                .execute(&mut **tx)
                .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
    }

    /// Enqueues an event for the subscriptions that want it, in its own transaction (for
    /// events that are not a change: a halt, an approval request).
    pub async fn enqueue_event(
        &self,
        key: &str,
        event_type: &str,
        payload: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write(|tx| Box::pin(enqueue_in(tx, key, event_type, payload, now_ms, None)))
            .await
            .map(|_| ())
    }

    /// The migrations whose gate was announced as passing, with the version it passed at.
    pub async fn gate_passes(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT migration_key, version FROM gate_passes")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Records that `key`'s gate was announced as passing at `version` (`None`: it stopped
    /// passing, so the next pass is announced again).
    pub async fn set_gate_pass(
        &self,
        key: &str,
        version: Option<i64>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        match version {
            Some(v) => sqlx::query(
                "INSERT INTO gate_passes (migration_key, version, passed_at_ms) \
                 VALUES ($1, $2, $3) ON CONFLICT (migration_key) DO UPDATE SET \
                 version = excluded.version, passed_at_ms = excluded.passed_at_ms",
            )
            .bind(key)
            .bind(v)
            .bind(now_ms),
            None => sqlx::query("DELETE FROM gate_passes WHERE migration_key = $1").bind(key),
        }
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Enqueues a `test` event for one subscription only; the delivery's id.
    pub async fn enqueue_test(
        &self,
        webhook: u64,
        payload: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                let ids = enqueue_in(tx, "", "test", payload, now_ms, Some(webhook)).await?;
                ids.first()
                    .copied()
                    .ok_or_else(|| StoreError::NotFound(format!("webhook {webhook}")))
            })
        })
        .await
    }

    /// The pending deliveries of live subscriptions, oldest first (at most `limit`), with the
    /// subscription each belongs to.
    pub async fn pending_deliveries(&self, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_outbox WHERE status = 'pending' \
             ORDER BY id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// A subscription's deliveries, newest first.
    pub async fn deliveries(&self, webhook: u64, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_outbox WHERE webhook_id = $1 \
             ORDER BY id DESC LIMIT $2"
        ))
        .bind(webhook.min(i64::MAX as u64) as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records one attempt: delivered, or failed with when to try next (`give_up`: never).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_attempt(
        &self,
        id: i64,
        delivered: bool,
        give_up: bool,
        http_status: u16,
        error: &str,
        next_attempt_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let status = match (delivered, give_up) {
            (true, _) => "delivered",
            (false, true) => "failed",
            (false, false) => "pending",
        };
        self.write(|tx| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE webhook_outbox SET status = $2, attempts = attempts + 1, \
                     last_status = $3, last_error = $4, next_attempt_ms = $5, \
                     delivered_at_ms = $6 WHERE id = $1 AND status = 'pending'",
                )
                .bind(id)
                .bind(status)
                .bind(i64::from(http_status))
                .bind(error)
                .bind(next_attempt_ms)
                .bind(if delivered { now_ms } else { 0 })
                .execute(&mut **tx)
                .await?;
                Ok(())
            })
        })
        .await
    }
}

/// Writes one outbox row per live subscription that wants `event_type` for `key` (or, with
/// `only`, for that subscription whatever it wants); their ids.
pub(super) async fn enqueue_in(
    tx: &mut Tx<'_>,
    key: &str,
    event_type: &str,
    payload: &str,
    now_ms: i64,
    only: Option<u64>,
) -> Result<Vec<u64>, StoreError> {
    let rows: Vec<WebhookRow> = sqlx::query_as(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE removed_at_ms IS NULL ORDER BY id"
    ))
    .fetch_all(&mut **tx)
    .await?;
    let mut ids = Vec::new();
    for row in rows {
        let w = row.into_stored()?;
        let wanted = match only {
            Some(id) => w.id == id,
            None => w.migrations.covers(key) && w.events.iter().any(|e| e == event_type),
        };
        if !wanted {
            continue;
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO webhook_outbox (webhook_id, event_type, migration_key, payload, \
             created_at_ms, status, attempts, next_attempt_ms, last_status, last_error, \
             delivered_at_ms) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $5, 0, '', 0) \
             RETURNING id",
        )
        .bind(w.id as i64)
        .bind(event_type)
        .bind(key)
        .bind(payload)
        .bind(now_ms)
        .fetch_one(&mut **tx)
        .await?;
        ids.push(id as u64);
    }
    Ok(ids)
}

/// The event a committed change sends: what changed, from which front to which, by whom, why.
pub(super) struct ChangeEvent<'a> {
    pub event_type: &'static str,
    pub before: &'a Migration,
    pub after: &'a Migration,
    pub actor: &'a str,
    pub approved_by: &'a str,
    pub action: &'a str,
    pub reason: &'a str,
    pub at_ms: i64,
}

impl ChangeEvent<'_> {
    pub(super) fn payload(&self) -> String {
        let front = |m: &Migration| serde_json::json!({ "stage": m.stage.as_str(), "rollout_bp": m.rollout_bp.get() });
        serde_json::json!({
            "event": self.event_type,
            "key": self.after.key.as_str(),
            "version": self.after.version.0,
            "action": self.action,
            "actor": self.actor,
            "approved_by": self.approved_by,
            "reason": self.reason,
            "at_ms": self.at_ms,
            "before": front(self.before),
            "after": front(self.after),
        })
        .to_string()
    }
}
