//! Read-only commands about a migration's use: audit log, decisions, traffic, instances.

use super::api::{Client, Failure, path_segment, url_encode};
use super::{Output, render};
use switchyard_proto::json;

pub(super) async fn audit(
    client: &Client,
    key: &str,
    limit: u32,
    before: Option<u64>,
) -> Result<Output, Failure> {
    let mut path = format!("/v1/migrations/{}/audit?limit={limit}", path_segment(key)?);
    if let Some(b) = before {
        path.push_str(&format!("&before_id={b}"));
    }
    let page = client.get::<json::AuditPage>(&path).await?;
    let human = render::audit(&page.body);
    Ok(Output::ok(page.json, human))
}

pub(super) async fn decide(
    client: &Client,
    key: &str,
    entity: Option<&str>,
) -> Result<Output, Failure> {
    let mut path = format!("/v1/migrations/{}/decide", path_segment(key)?);
    if let Some(e) = entity {
        path.push_str(&format!("?entity_key={}", url_encode(e)));
    }
    let d = client.get::<json::Decision>(&path).await?;
    let human = render::decision(&d.body, entity);
    Ok(Output::ok(d.json, human))
}

pub(super) async fn traffic(client: &Client, key: &str, minutes: u32) -> Result<Output, Failure> {
    let t = client
        .get::<json::Traffic>(&format!(
            "/v1/migrations/{}/traffic?minutes={minutes}",
            path_segment(key)?
        ))
        .await?;
    let human = render::traffic(&t.body);
    Ok(Output::ok(t.json, human))
}

/// Exit 0 if the gate's database check passes, 1 if not (as `gate`).
pub(super) async fn usage(
    client: &Client,
    key: &str,
    since: Option<std::time::Duration>,
) -> Result<Output, Failure> {
    let mut path = format!("/v1/migrations/{}/usage", path_segment(key)?);
    if let Some(since) = since {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let from = now.saturating_sub(since).as_millis();
        path.push_str(&format!("?since_ms={from}"));
    }
    let u = client.get::<json::UsageReport>(&path).await?;
    Ok(Output {
        human: render::usage(&u.body),
        code: if u.body.check.passed { 0 } else { 1 },
        json: u.json,
    })
}

pub(super) async fn mismatches(
    client: &Client,
    key: &str,
    limit: u32,
    keys_only: bool,
) -> Result<Output, Failure> {
    let m = client
        .get::<json::Mismatches>(&format!(
            "/v1/migrations/{}/mismatches?limit={limit}",
            path_segment(key)?
        ))
        .await?;
    let human = if keys_only {
        render::mismatch_keys(&m.body)
    } else {
        render::mismatches(&m.body)
    };
    Ok(Output::ok(m.json, human))
}

/// Every instance: the server answers in pages (a fleet can be thousands), followed here to
/// the last so the list is never silently cut.
pub(super) async fn instances(client: &Client, migration: Option<&str>) -> Result<Output, Failure> {
    let path = match migration {
        Some(key) => format!("/v1/migrations/{}/instances", path_segment(key)?),
        None => "/v1/clients".to_owned(),
    };
    let mut all = json::Instances {
        instances: Vec::new(),
        next_after: None,
    };
    let mut after: Option<String> = None;
    loop {
        let page_path = match &after {
            Some(cursor) => format!("{path}?after={}", url_encode(cursor)),
            None => path.clone(),
        };
        let page = client.get::<json::Instances>(&page_path).await?.body;
        all.instances.extend(page.instances);
        match page.next_after {
            // A cursor that does not move would loop forever: stop on it.
            Some(next) if after.as_ref() != Some(&next) => after = Some(next),
            _ => break,
        }
    }
    let human = render::instances(&all);
    let json = serde_json::to_value(&all).expect("instances serialise");
    Ok(Output::ok(json, human))
}
