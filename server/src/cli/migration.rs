//! Migration commands: create, show, list, ramp, advance, retreat, record, and the retire and
//! restore SQL.

use super::api::{Answer, Client, Failure, path_segment};
use super::args::{Change, MigrationCommand};
use super::sqlfiles::{self, Phase};
use super::{Output, render};
use serde_json::Value;
use std::path::Path;
use switchyard_domain::{BasisPoints, EventKind, Migration, SchemaObject, Stage, schema};
use switchyard_proto::json;

pub(super) async fn run(client: &Client, command: MigrationCommand) -> Result<Output, Failure> {
    match command {
        MigrationCommand::Create {
            key,
            description,
            owner,
            entity_kind,
            soak,
            expected_services,
            backfill,
            shadow_sample_percent,
            reason,
            target_database,
            mut old_shape,
            contract_sql,
            retire_probation,
        } => {
            if let Some(path) = contract_sql {
                old_shape.extend(contract_objects(&path)?);
            }
            let sample = shadow_sample_percent
                .map(|p| BasisPoints::from_percent(&p).map(|bp| bp.get()))
                .transpose()
                .map_err(|e| Failure::usage(e.0))?;
            let m = client
                .post(
                    "/v1/migrations",
                    &json::CreateMigration {
                        key,
                        description,
                        owner,
                        entity_kind,
                        soak_seconds: soak.map(|d| d.as_secs()),
                        expected_services,
                        has_backfill: backfill,
                        shadow_sample_bp: sample,
                        reason,
                        target_database,
                        old_shape,
                        retire_probation_seconds: retire_probation.map(|d| d.as_secs()),
                    },
                )
                .await?;
            output(m, "created")
        }
        MigrationCommand::Show { key } => output(client.migration(&key).await?, ""),
        MigrationCommand::List { stale: false, .. } => {
            let s = client.get::<json::Snapshot>("/v1/migrations").await?;
            let migrations = s
                .body
                .migrations
                .into_iter()
                .map(domain)
                .collect::<Result<Vec<_>, _>>()?;
            let human = render::list(s.body.version, &migrations);
            Ok(Output::ok(s.json, human))
        }
        MigrationCommand::List { stale: true, days } => {
            let v = client
                .get::<json::Lifecycle>(&format!("/v1/lifecycle?complete_for_days={days}"))
                .await?;
            let human = render::lifecycle(&v.body);
            Ok(Output::ok(v.json, human))
        }
    }
}

/// `ramp KEY --percent P [--stage S]`.
pub(super) async fn ramp(
    client: &Client,
    key: &str,
    percent: &str,
    stage: Option<String>,
    change: Change,
) -> Result<Output, Failure> {
    change.require_view("ramp")?;
    let bp = BasisPoints::from_percent(percent).map_err(|e| Failure::usage(e.0))?;
    let version = client
        .expected_version(key, change.expected_version)
        .await?;
    let path = format!("/v1/migrations/{}/rollout", path_segment(key)?);
    let body = json::Rollout {
        stage,
        rollout_bp: bp.get(),
        expected_version: version,
        reason: change.reason,
        request_approval: change.request_approval,
        bypass_approval: change.bypass_approval,
    };
    if change.request_approval {
        return request(client, &path, &body).await;
    }
    let m: Answer<json::Migration> = client.post(&path, &body).await?;
    if m.body.record.version == version {
        // The server writes nothing for a ramp to the front it is at, and answers with it.
        let mut out = output(m, "")?;
        out.human = format!("already there, nothing changed: {}", out.human);
        return Ok(out);
    }
    output(m, "ramped")
}

/// `advance` and `retreat`.
pub(super) async fn step(
    client: &Client,
    key: &str,
    action: &str,
    change: Change,
) -> Result<Output, Failure> {
    change.require_view(action)?;
    let version = client
        .expected_version(key, change.expected_version)
        .await?;
    let path = format!("/v1/migrations/{}/{action}", path_segment(key)?);
    let body = json::Step {
        expected_version: version,
        reason: change.reason,
        request_approval: change.request_approval,
        bypass_approval: change.bypass_approval,
    };
    if change.request_approval {
        return request(client, &path, &body).await;
    }
    let m = client.post(&path, &body).await?;
    output(
        m,
        if action == "advance" {
            "advanced"
        } else {
            "stepped back"
        },
    )
}

/// Records an event; `rows` (done, total estimate) only for progress.
pub(super) async fn record(
    client: &Client,
    key: &str,
    event: EventKind,
    rows: (Option<u64>, Option<u64>),
    change: Change,
) -> Result<Output, Failure> {
    let version = client
        .expected_version(key, change.expected_version)
        .await?;
    let (rows_done, rows_total) = rows;
    let path = format!("/v1/migrations/{}/events", path_segment(key)?);
    let body = json::RecordEvent {
        event: event.as_str().to_owned(),
        expected_version: version,
        reason: change.reason,
        rows_done,
        rows_total_estimate: rows_total,
        request_approval: change.request_approval,
        bypass_approval: change.bypass_approval,
    };
    if change.request_approval {
        return request(client, &path, &body).await;
    }
    let m = client.post(&path, &body).await?;
    output(m, &format!("recorded {event}"))
}

/// Files a change for a second operator's approval (`--request-approval`): the server
/// answers with the request instead of the migration.
async fn request<B: serde::Serialize>(
    client: &Client,
    path: &str,
    body: &B,
) -> Result<Output, Failure> {
    let filed: Answer<json::Approval> = client.post(path, body).await?;
    let human = render::approval(&filed.body);
    Ok(Output::ok(filed.json, human))
}

/// Which of the two renames `rename_sql` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rename {
    Retire,
    Restore,
}

/// `retire-sql KEY` and `restore-sql KEY`: the SQL file, from the old shape the server has for
/// the migration, so the file renames exactly what the gate and the observer check.
pub(super) async fn rename_sql(
    client: &Client,
    key: &str,
    which: Rename,
) -> Result<Output, Failure> {
    let m = client.migration(key).await?.body.record;
    if m.retire_probation_seconds.is_none() {
        return Err(Failure::usage(format!(
            "migration {key} was created without --retire-probation, so its old shape is \
             dropped directly, not retired: the contract file drops it once `switchyard gate \
             {key}` passes"
        )));
    }
    let objects = m
        .old_shape
        .iter()
        .map(|o| o.parse::<SchemaObject>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure {
            code: 3,
            message: format!("the server sent an invalid old shape: {}", e.0),
            body: None,
        })?;
    if !objects.iter().any(|o| o.retired_name().is_some()) {
        return Err(Failure::usage(format!(
            "migration {key} has no column or table in its old shape (--drops), so there is \
             nothing to rename"
        )));
    }
    let sql = match which {
        Rename::Retire => schema::retire_sql(&m.key, &objects),
        Rename::Restore => schema::restore_sql(&m.key, &objects),
    };
    Ok(Output::ok(
        serde_json::json!({ "key": m.key, "sql": sql }),
        // Printed as is: redirected into the migrations folder, the file is the output.
        sql.trim_end().to_owned(),
    ))
}

/// Records what a just-applied migration file's header names.
pub(super) async fn record_sql_file(
    client: &Client,
    path: &Path,
    change: Change,
) -> Result<Output, Failure> {
    if change.request_approval {
        return Err(Failure::usage(
            "--request-approval does not go with --sql-file: request the approval before the \
             pipeline applies the file, with `switchyard record KEY EVENT --request-approval`",
        ));
    }
    let file = sqlfiles::read(path).map_err(Failure::usage)?;
    if file.tags.is_empty() {
        return Err(Failure::usage(format!(
            "{} has no `-- switchyard: expand|contract|retire|restore KEY` header",
            file.name
        )));
    }
    let mut recorded = Vec::new();
    let mut human = String::new();
    for (phase, key) in &file.tags {
        let event = match phase {
            Phase::Expand => EventKind::ExpandApplied,
            Phase::Contract => EventKind::Contracted,
            Phase::Retire => EventKind::Retired,
            Phase::Restore => EventKind::Restored,
        };
        let version = client
            .expected_version(key, change.expected_version)
            .await?;
        let result = client
            .post::<_, json::Migration>(
                &format!("/v1/migrations/{}/events", path_segment(key)?),
                &json::RecordEvent {
                    event: event.as_str().to_owned(),
                    expected_version: version,
                    reason: change.reason.clone(),
                    rows_done: None,
                    rows_total_estimate: None,
                    request_approval: false,
                    bypass_approval: change.bypass_approval,
                },
            )
            .await;
        match result {
            Ok(m) => {
                human.push_str(&format!("recorded {event} for {key} ({})\n", file.name));
                recorded.push(m.json);
            }
            // Re-running a pipeline step is fine: the fact is already recorded.
            Err(f) if already_recorded(*phase, &f) => {
                human.push_str(&format!(
                    "{key}: {} already recorded ({})\n",
                    phase.as_str(),
                    file.name
                ));
                recorded.push(f.body.map(|b| b["current"].clone()).unwrap_or_default());
            }
            Err(f) => return Err(f),
        }
    }
    Ok(Output::ok(
        Value::Array(recorded),
        human.trim_end().to_owned(),
    ))
}

/// Whether a refusal only says the file's fact is already on record.
fn already_recorded(phase: Phase, failure: &Failure) -> bool {
    let Some(current) = failure.error_body().and_then(|b| b.current) else {
        return false;
    };
    match phase {
        Phase::Expand => current.record.expand_applied,
        Phase::Contract => current.record.stage == Stage::Contracted,
        // Retire and restore undo each other, so only the present state is known: a file
        // recorded again after a later restore (or retire) would be refused here, not skipped.
        Phase::Retire => current.record.retired_at_ms.is_some(),
        Phase::Restore => current.record.retired_at_ms.is_none(),
    }
}

fn domain(m: json::Migration) -> Result<Migration, Failure> {
    Migration::try_from(m).map_err(|e| Failure {
        code: 3,
        message: format!("the server sent an invalid migration: {e}"),
        body: None,
    })
}

/// A migration answer, shown after `verb` ("created", "ramped"…; empty for `show`).
pub(super) fn output(answer: Answer<json::Migration>, verb: &str) -> Result<Output, Failure> {
    let human = render::migration(&domain(answer.body)?, verb);
    Ok(Output::ok(answer.json, human))
}

/// The objects a contract file drops, in their written form (`column:users.username`).
fn contract_objects(path: &std::path::Path) -> Result<Vec<String>, Failure> {
    let sql = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("reading {}: {e}", path.display())))?;
    let drops = switchyard_sql::contract_drops(&sql).map_err(|e| {
        Failure::usage(format!(
            "{}: {e}; fix the statement, or list the objects with --drops",
            path.display()
        ))
    })?;
    if drops.is_empty() {
        return Err(Failure::usage(format!(
            "{} drops no table, column or index: is it the contract file?",
            path.display()
        )));
    }
    Ok(drops
        .iter()
        .map(|o| live_name(switchyard_domain::SchemaObject::from(o)).to_string())
        .collect())
}

/// A contract written for a retire drops the retired names (`username__retired`); the old
/// shape the observer watches is the name callers use, before the retire.
fn live_name(o: switchyard_domain::SchemaObject) -> switchyard_domain::SchemaObject {
    use switchyard_domain::SchemaObject as O;
    use switchyard_domain::schema::RETIRED_SUFFIX;
    let strip = |name: String| match name.strip_suffix(RETIRED_SUFFIX) {
        Some(live) if !live.is_empty() => live.to_owned(),
        _ => name,
    };
    match o {
        O::Column {
            schema,
            table,
            column,
        } => O::Column {
            schema,
            table,
            column: strip(column),
        },
        O::Table { schema, table } => O::Table {
            schema,
            table: strip(table),
        },
        index => index,
    }
}

#[cfg(test)]
mod tests {
    use super::live_name;

    #[test]
    fn a_contract_written_for_a_retire_declares_the_live_names() {
        for (dropped, declared) in [
            ("column:users.username__retired", "column:users.username"),
            ("table:billing.legacy__retired", "table:billing.legacy"),
            ("column:users.username", "column:users.username"),
            ("column:users.__retired", "column:users.__retired"),
            ("index:users_u__retired", "index:users_u__retired"),
        ] {
            assert_eq!(
                live_name(dropped.parse().unwrap()).to_string(),
                declared,
                "{dropped}"
            );
        }
    }
}
