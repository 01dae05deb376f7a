//! `token`: create, list and revoke API tokens (admin); `webhook`: subscriptions and their
//! signing secrets.

use super::api::{Client, Failure};
use super::args::{TokenCommand, WebhookCommand};
use super::{Output, render};
use serde_json::json;
use switchyard_proto::json;

pub(super) async fn run(client: &Client, command: TokenCommand) -> Result<Output, Failure> {
    match command {
        TokenCommand::Create { name, role, scope } => {
            let t = client
                .post::<_, json::CreatedToken>(
                    "/v1/tokens",
                    &json::CreateToken {
                        name,
                        role: role.as_str().to_owned(),
                        scope,
                    },
                )
                .await?;
            let human = render::created_token(&t.body);
            Ok(Output::ok(t.json, human))
        }
        TokenCommand::List => {
            let list = client.get::<json::Tokens>("/v1/tokens").await?;
            let human = render::tokens(&list.body);
            Ok(Output::ok(list.json, human))
        }
        TokenCommand::Revoke { id } => {
            let t = client
                .post::<_, json::Token>(&format!("/v1/tokens/{id}/revoke"), &json!({}))
                .await?;
            let human = render::revoked_token(&t.body);
            Ok(Output::ok(t.json, human))
        }
    }
}

/// `webhook add|list|test|deliveries|remove`.
pub(super) async fn webhook(client: &Client, command: WebhookCommand) -> Result<Output, Failure> {
    match command {
        WebhookCommand::Add {
            url,
            events,
            migrations,
            format,
        } => {
            let created = client
                .post::<_, json::WebhookCreated>(
                    "/v1/webhooks",
                    &json::CreateWebhook {
                        url,
                        migrations,
                        events,
                        format,
                    },
                )
                .await?;
            let w = &created.body;
            let human = format!(
                "webhook {} added\n{}\n  secret           {}\n  (shown this once: receivers verify Switchyard-Signature with it)",
                w.webhook.id,
                render::webhook(&w.webhook),
                w.secret
            );
            Ok(Output::ok(created.json, human))
        }
        WebhookCommand::List => {
            let list = client.get::<json::Webhooks>("/v1/webhooks").await?;
            let human = if list.body.webhooks.is_empty() {
                "no webhooks".to_owned()
            } else {
                list.body
                    .webhooks
                    .iter()
                    .map(render::webhook)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Output::ok(list.json, human))
        }
        WebhookCommand::Test { id } => {
            let sent = client
                .post::<_, json::WebhookTest>(&format!("/v1/webhooks/{id}/test"), &json!({}))
                .await?;
            let human = format!(
                "test event queued as delivery {}: `switchyard webhook deliveries {id}` shows how it went",
                sent.body.delivery
            );
            Ok(Output::ok(sent.json, human))
        }
        WebhookCommand::Deliveries { id, limit } => {
            let log = client
                .get::<json::WebhookDeliveries>(&format!(
                    "/v1/webhooks/{id}/deliveries?limit={limit}"
                ))
                .await?;
            let human = render::deliveries(&log.body);
            Ok(Output::ok(log.json, human))
        }
        WebhookCommand::Remove { id } => {
            let removed = client
                .delete::<json::Webhook>(&format!("/v1/webhooks/{id}"))
                .await?;
            let human = format!("webhook {id} removed ({})", removed.body.url);
            Ok(Output::ok(removed.json, human))
        }
    }
}
