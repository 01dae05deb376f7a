//! Webhook subscriptions on the wire.

use serde::{Deserialize, Serialize};

/// `POST /v1/webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    pub url: String,
    /// Migration keys or prefixes (`orders.*`); empty: every migration.
    #[serde(default)]
    pub migrations: Vec<String>,
    /// Of `change`, `plan_step`, `plan_halt`, `approval_request`, `backfill`, `gate_pass`.
    pub events: Vec<String>,
    /// `json` (the event, default) or `slack` (`{"text": …}` for a Slack incoming webhook).
    #[serde(default = "json_format")]
    pub format: String,
}

fn json_format() -> String {
    "json".to_owned()
}

/// A subscription (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: u64,
    pub url: String,
    pub migrations: Vec<String>,
    pub events: Vec<String>,
    pub format: String,
    pub created_by: String,
    pub created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at_ms: Option<i64>,
}

/// `POST /v1/webhooks`'s answer: the secret is shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookCreated {
    pub webhook: Webhook,
    /// Verify `Switchyard-Signature` with it: `v1=` and the hex HMAC-SHA256 of
    /// `<Switchyard-Timestamp>.<body>`.
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhooks {
    pub webhooks: Vec<Webhook>,
}

/// One event for one subscription, as its delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub id: u64,
    pub event: String,
    pub key: String,
    pub created_at_ms: i64,
    /// `pending`, `delivered` or `failed` (given up after a day, or the subscription removed).
    pub status: String,
    pub attempts: u64,
    /// The receiver's last HTTP status; 0 when it could not be reached.
    pub last_status: u16,
    pub last_error: String,
    /// When a pending delivery is tried next.
    pub next_attempt_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at_ms: Option<i64>,
}

/// `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDeliveries {
    pub webhook: Webhook,
    pub deliveries: Vec<WebhookDelivery>,
}

/// `POST /v1/webhooks/{id}/test`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTest {
    /// The test event's delivery, in the log.
    pub delivery: u64,
}
