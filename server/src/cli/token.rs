//! `token`: create, list and revoke API tokens (admin).

use super::api::{Client, Failure};
use super::args::TokenCommand;
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
