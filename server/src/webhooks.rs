//! Webhooks: subscriptions to a migration's events, delivered at least once from a durable
//! outbox.
//!
//! A change's event is written to the outbox in the change's own transaction, so a change is
//! never committed without its notification nor notified without being committed; halts and
//! approval requests are written just after theirs. One replica (a lease in the store) sends:
//! per subscription in outbox order, each delivery retried with backoff until the receiver
//! answers 2xx or a day has passed. A restart loses nothing: the outbox is the store's.
//!
//! Each request is signed: `Switchyard-Signature: v1=<hex HMAC-SHA256(secret,
//! "<timestamp>.<body>")>` with `Switchyard-Timestamp` (Unix seconds), so a receiver checks the
//! body and refuses replays older than its tolerance.

use crate::app::App;
use crate::approvals::Via;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::store::{Delivery, StoredWebhook};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use switchyard_domain::{Operation, Permission, Scope, Stage};
use tokio::sync::watch;

/// The event types a subscription may choose.
pub const EVENT_TYPES: [&str; 6] = [
    "change",
    "plan_step",
    "plan_halt",
    "approval_request",
    "backfill",
    "gate_pass",
];

/// The most subscriptions a server keeps: each is read at every enqueue.
pub const MAX_WEBHOOKS: usize = 1000;
/// A delivery still failing this long after its event is given up.
const GIVE_UP_AFTER_MS: i64 = 24 * 3_600_000;
/// How long the sender waits for a receiver.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The event type a change is sent as.
pub(crate) fn event_type(op: &Operation, via: &Via) -> &'static str {
    if via.by_plan() {
        "plan_step"
    } else if matches!(op, Operation::Record(e) if e.as_str().starts_with("backfill_")) {
        "backfill"
    } else {
        "change"
    }
}

/// What a subscription is asked for.
pub struct NewWebhook {
    pub url: String,
    pub migrations: Vec<String>,
    pub events: Vec<String>,
    pub format: String,
}

impl App {
    /// Adds a subscription (operator role); answers it with its secret, shown this once.
    pub async fn add_webhook(
        &self,
        who: &Principal,
        new: NewWebhook,
    ) -> Result<(StoredWebhook, String), ApiError> {
        who.require(Permission::Operate)?;
        let url = check_url(&new.url)?;
        let migrations = Scope::parse(&new.migrations)?;
        // A token scoped to some migrations subscribes to those only.
        if !who.scope.is_all()
            && (migrations.is_all()
                || migrations
                    .patterns()
                    .iter()
                    .any(|p| !who.scope.covers(&p.text().replace('*', ""))))
        {
            return Err(ApiError::PermissionDenied(format!(
                "token {:?} is scoped to {} and may subscribe only to migrations in it: name \
                 them with migrations",
                who.name, who.scope
            )));
        }
        if new.events.is_empty() {
            return Err(ApiError::invalid(format!(
                "no events chosen: name one or more of {}",
                EVENT_TYPES.join(", ")
            )));
        }
        let mut events = Vec::new();
        for e in &new.events {
            if !EVENT_TYPES.contains(&e.as_str()) {
                return Err(ApiError::invalid(format!(
                    "unknown event type {:?}: allowed {}",
                    e.chars().take(40).collect::<String>(),
                    EVENT_TYPES.join(", ")
                )));
            }
            if !events.contains(e) {
                events.push(e.clone());
            }
        }
        if !matches!(new.format.as_str(), "json" | "slack") {
            return Err(ApiError::invalid(format!(
                "unknown format {:?}: allowed json (the event) or slack (a Slack-compatible \
                 {{\"text\": …}})",
                new.format.chars().take(40).collect::<String>()
            )));
        }
        if self.store.webhooks().await?.len() >= MAX_WEBHOOKS {
            return Err(ApiError::invalid(format!(
                "this server has {MAX_WEBHOOKS} webhooks already: remove one first"
            )));
        }
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!("whsec_{}", hex::encode(bytes));
        let mut webhook = StoredWebhook {
            id: 0,
            url,
            migrations,
            events,
            format: new.format,
            secret: secret.clone(),
            created_by: who.actor(),
            created_at_ms: self.now(),
            removed_at_ms: None,
        };
        webhook.id = self.store.add_webhook(&webhook).await?;
        tracing::info!(webhook = webhook.id, actor = %who.actor(), "webhook added");
        Ok((webhook, secret))
    }

    /// Every subscription (operator role: they name where events go).
    pub async fn webhooks(&self, who: &Principal) -> Result<Vec<StoredWebhook>, ApiError> {
        who.require(Permission::Operate)?;
        Ok(self.store.webhooks().await?)
    }

    pub async fn remove_webhook(
        &self,
        who: &Principal,
        id: u64,
    ) -> Result<StoredWebhook, ApiError> {
        let found = self.live_webhook(who, id).await?;
        let now = self.now();
        if !self.store.remove_webhook(id, now).await? {
            return Err(no_webhook(id));
        }
        tracing::info!(webhook = id, actor = %who.actor(), "webhook removed");
        Ok(StoredWebhook {
            removed_at_ms: Some(now),
            ..found
        })
    }

    /// Sends a `test` event to one subscription (through the outbox, as any event); the
    /// delivery's id, to find it in the log.
    pub async fn test_webhook(&self, who: &Principal, id: u64) -> Result<u64, ApiError> {
        self.live_webhook(who, id).await?;
        let now = self.now();
        let payload = serde_json::json!({
            "event": "test",
            "webhook": id,
            "actor": who.actor(),
            "at_ms": now,
        })
        .to_string();
        Ok(self.store.enqueue_test(id, &payload, now).await?)
    }

    /// A subscription's delivery log, newest first.
    pub async fn webhook_deliveries(
        &self,
        who: &Principal,
        id: u64,
        limit: u32,
    ) -> Result<(StoredWebhook, Vec<Delivery>), ApiError> {
        who.require(Permission::Operate)?;
        let found = self
            .store
            .webhook(id)
            .await?
            .ok_or_else(|| no_webhook(id))?;
        Ok((found, self.store.deliveries(id, limit.clamp(1, 500)).await?))
    }

    /// Enqueues an event that is not a change (a halt, an approval request). Logged, not
    /// returned, on failure: what it reports has happened either way.
    pub(crate) async fn notify(&self, key: &str, event_type: &str, fields: serde_json::Value) {
        let now = self.now();
        let mut payload = serde_json::json!({ "event": event_type, "key": key, "at_ms": now });
        if let (Some(all), serde_json::Value::Object(more)) = (payload.as_object_mut(), fields) {
            all.extend(more);
        }
        if let Err(e) = self
            .store
            .enqueue_event(key, event_type, &payload.to_string(), now)
            .await
        {
            tracing::warn!(key, event_type, error = %e, "enqueueing a webhook event failed");
        }
    }

    async fn live_webhook(&self, who: &Principal, id: u64) -> Result<StoredWebhook, ApiError> {
        who.require(Permission::Operate)?;
        match self.store.webhook(id).await? {
            Some(w) if w.removed_at_ms.is_none() => Ok(w),
            _ => Err(no_webhook(id)),
        }
    }

    /// Announces each contract gate that has started to pass since the last look (`gate_pass`),
    /// once: a gate that stops passing (a hidden caller, a rollback) is announced again when it
    /// passes again. Only gates some subscription asks for are evaluated, and only those of
    /// migrations at `complete` (before it, the gate cannot pass).
    async fn announce_gates(&self) -> Result<(), ApiError> {
        let wanted = self
            .store
            .webhooks()
            .await?
            .into_iter()
            .any(|w| w.events.iter().any(|e| e == "gate_pass"));
        if !wanted {
            return Ok(());
        }
        let announced = self.store.gate_passes().await?;
        for m in self.hub.snapshot().migrations.values() {
            let key = m.key.as_str();
            let was = announced.get(key).copied();
            let passed = if m.stage == Stage::Complete && m.soak_started_at_ms.is_some() {
                let now = self.now();
                let fleet = self.store.fleet(key, now, self.client_ttl).await?;
                self.evaluate_gate(m, &fleet, now).await?.passed
            } else {
                false
            };
            match (passed, was) {
                (true, None) => {
                    self.notify(
                        key,
                        "gate_pass",
                        serde_json::json!({
                            "version": m.version.0,
                            "stage": m.stage.as_str(),
                            "rollout_bp": m.rollout_bp.get(),
                        }),
                    )
                    .await;
                    self.store
                        .set_gate_pass(key, Some(m.version.0 as i64), self.now())
                        .await?;
                }
                (false, Some(_)) => self.store.set_gate_pass(key, None, self.now()).await?,
                _ => {}
            }
        }
        Ok(())
    }

    /// One round: every subscription's pending deliveries, in order, each subscription
    /// stopping at its first one not yet due or failing (so none overtakes an earlier one).
    async fn send_round(&self, client: &mut Option<reqwest::Client>) -> Result<(), ApiError> {
        let pending = self.store.pending_deliveries(2000).await?;
        if pending.is_empty() {
            return Ok(());
        }
        // Made when the first delivery is due, not at start: building a client loads the TLS
        // trust roots, memory (and code) a server without subscriptions never needs.
        let client = match client {
            Some(client) => &*client,
            None => client.insert(
                reqwest::Client::builder()
                    .timeout(SEND_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| ApiError::Internal(format!("making the webhook client: {e}")))?,
            ),
        };
        let hooks: BTreeMap<u64, StoredWebhook> = self
            .store
            .webhooks()
            .await?
            .into_iter()
            .map(|w| (w.id, w))
            .collect();
        let mut queues: BTreeMap<u64, Vec<Delivery>> = BTreeMap::new();
        for d in pending {
            queues.entry(d.webhook_id as u64).or_default().push(d);
        }
        let sends = queues.into_iter().filter_map(|(id, queue)| {
            let hook = hooks.get(&id)?.clone();
            Some(async move {
                for d in queue {
                    let now = self.now();
                    if d.next_attempt_ms > now {
                        break;
                    }
                    let (ok, status, error) = deliver(client, &hook, &d, now).await;
                    let give_up = !ok && now - d.created_at_ms >= GIVE_UP_AFTER_MS;
                    let next = now + backoff_ms(d.attempts + 1);
                    if let Err(e) = self
                        .store
                        .record_attempt(d.id, ok, give_up, status, &error, next, now)
                        .await
                    {
                        tracing::warn!(delivery = d.id, error = %e, "recording a webhook attempt failed");
                        break;
                    }
                    if !ok {
                        tracing::info!(webhook = hook.id, delivery = d.id, attempts = d.attempts + 1, error, "webhook delivery failed; retrying");
                        break;
                    }
                }
            })
        });
        futures::future::join_all(sends).await;
        Ok(())
    }
}

fn no_webhook(id: u64) -> ApiError {
    ApiError::NotFound(format!("there is no webhook {id}"))
}

/// An absolute http(s) URL with a host, at most 2,000 characters.
fn check_url(raw: &str) -> Result<String, ApiError> {
    let raw = raw.trim();
    let shown: String = raw.chars().take(80).collect();
    let parsed = reqwest::Url::parse(raw).map_err(|e| {
        ApiError::invalid(format!(
            "invalid webhook url {shown:?}: {e}; write an absolute http:// or https:// URL"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApiError::invalid(format!(
            "invalid webhook url {shown:?}: write an absolute http:// or https:// URL with a host"
        )));
    }
    if raw.len() > 2000 {
        return Err(ApiError::invalid(
            "the webhook url is too long: at most 2000 characters",
        ));
    }
    Ok(raw.to_owned())
}

/// 2 s, doubling per attempt, at most 10 minutes, with up to a fifth more at random so
/// receivers coming back are not hit by every sender at once.
fn backoff_ms(attempts: i64) -> i64 {
    let base = 2_000i64.saturating_mul(1 << attempts.clamp(0, 20)) / 2;
    let base = base.min(600_000);
    base + rand::random_range(0..=base / 5)
}

/// The signature of `body` sent at `timestamp` (Unix seconds) with `secret`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The body a subscription receives: the event as it is, or a Slack-compatible message.
fn body(hook: &StoredWebhook, d: &Delivery) -> String {
    if hook.format != "slack" {
        return d.payload.clone();
    }
    let event: serde_json::Value = serde_json::from_str(&d.payload).unwrap_or_default();
    let s = |field: &str| event[field].as_str().unwrap_or_default().to_owned();
    let front = |side: &str| {
        format!(
            "{} {}%",
            event[side]["stage"].as_str().unwrap_or("?"),
            event[side]["rollout_bp"].as_u64().unwrap_or(0) as f64 / 100.0
        )
    };
    let text = match d.event_type.as_str() {
        "backfill" if s("action") == "backfill_held" => format!(
            ":hourglass: *{}*: the backfill holds itself back: {}",
            s("key"),
            s("reason")
        ),
        "change" | "plan_step" | "backfill" => format!(
            "*{}*: {} {} → {} by {}{}: {}",
            s("key"),
            s("action"),
            front("before"),
            front("after"),
            s("actor"),
            if s("approved_by").is_empty() {
                String::new()
            } else {
                format!(" ({})", s("approved_by"))
            },
            s("reason")
        ),
        "gate_pass" => format!(
            ":white_check_mark: *{}*: the contract gate passes; the old shape may be dropped",
            s("key")
        ),
        "plan_halt" => format!(":rotating_light: *{}*: plan {}", s("key"), s("why")),
        "approval_request" => format!(
            "*{}*: approval {} requested by {}: {} ({}). Approve with `switchyard approvals approve {}`",
            s("key"),
            event["approval"],
            s("requested_by"),
            s("change"),
            s("reason"),
            event["approval"]
        ),
        _ => format!("Switchyard test event from {}", s("actor")),
    };
    serde_json::json!({ "text": text }).to_string()
}

/// One attempt: whether the receiver took it (2xx), its status (0: no answer), the error.
async fn deliver(
    client: &reqwest::Client,
    hook: &StoredWebhook,
    d: &Delivery,
    now_ms: i64,
) -> (bool, u16, String) {
    let body = body(hook, d);
    let timestamp = now_ms / 1000;
    let sent = client
        .post(&hook.url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("switchyard/", env!("CARGO_PKG_VERSION")),
        )
        .header("switchyard-event", &d.event_type)
        .header("switchyard-delivery", d.id.to_string())
        .header("switchyard-timestamp", timestamp.to_string())
        .header(
            "switchyard-signature",
            signature(&hook.secret, timestamp, &body),
        )
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => (true, r.status().as_u16(), String::new()),
        Ok(r) => (
            false,
            r.status().as_u16(),
            format!("the receiver answered {}", r.status()),
        ),
        // The error's chain without the URL (which may hold a token in its query).
        Err(e) => (false, 0, e.without_url().to_string()),
    }
}

/// Sends due deliveries every `interval` while this replica holds the sender's lease (taken
/// for five intervals, so another replica takes over within that of this one stopping).
pub fn spawn(
    app: Arc<App>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let replica = format!("replica-{:016x}", rand::random::<u64>());
    let lease_ms = i64::try_from(interval.as_millis() * 5)
        .unwrap_or(i64::MAX)
        .max(SEND_TIMEOUT.as_millis() as i64 * 2);
    tokio::spawn(async move {
        let mut client = None;
        let mut round: u64 = 0;
        loop {
            let now = app.now();
            match app
                .store
                .lease(
                    crate::store::Lease::WebhookSender,
                    "webhooks",
                    &replica,
                    now,
                    now.saturating_add(lease_ms),
                )
                .await
            {
                Ok(true) => {
                    // Gates are evaluated every fifth round: each look reads a migration's
                    // traffic and the database's evidence.
                    if round % 5 == 0 {
                        if let Err(e) = app.announce_gates().await {
                            tracing::warn!(error = %e, "looking at the gates failed; retrying");
                        }
                    }
                    round = round.wrapping_add(1);
                    if let Err(e) = app.send_round(&mut client).await {
                        tracing::warn!(error = %e, "sending webhooks failed; retrying");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "taking the webhook sender's lease failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_and_body() {
        // Checked against an independent implementation (python3:
        // hmac.new(b"whsec_k", b"1700000000.{}", hashlib.sha256).hexdigest()).
        assert_eq!(
            super::signature("whsec_k", 1_700_000_000, "{}"),
            "v1=8b20524faff2b12e1089e404a8cf60fbe577e5320e899ebff7329ebbcb9ada22"
        );
    }

    #[test]
    fn backoff_grows_to_ten_minutes() {
        assert!((2_000..=2_400).contains(&super::backoff_ms(1)));
        assert!((16_000..=19_200).contains(&super::backoff_ms(4)));
        assert!((600_000..=720_000).contains(&super::backoff_ms(30)));
    }
}
