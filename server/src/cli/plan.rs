//! `plan`: set, show, pause and resume a migration's plan (the steps it takes by itself).

use super::api::{Client, Failure, path_segment};
use super::args::{ApprovalsCommand, PlanCommand, TemplateCommand};
use super::{Output, render};
use std::time::Duration;
use switchyard_proto::json;

pub(super) async fn run(client: &Client, command: PlanCommand) -> Result<Output, Failure> {
    let (answer, verb) = match command {
        PlanCommand::Show { key } => {
            let answer = client.get::<json::PlanView>(&plan_path(&key)?).await?;
            (answer, "")
        }
        PlanCommand::Set {
            key,
            stages,
            template,
            hold,
            approve_advance,
            at,
            window,
            guardrails,
            file,
            reason,
        } => {
            let mut body = match file {
                Some(file) => from_file(&file, reason)?,
                None => {
                    // With a template, the last stage is the last of its stages and these.
                    let base = match &template {
                        Some(name) => template_stages(client, name).await?,
                        None => Vec::new(),
                    };
                    json::PlanBody {
                        guardrails: guardrails.body()?,
                        template,
                        stages: flag_stages(&stages, hold, &approve_advance, &base)?,
                        not_before_ms: at.as_deref().map(parse_at).transpose()?,
                        window: None,
                        reason,
                    }
                }
            };
            if window.is_some() {
                body.window = window;
            }
            let answer = client
                .put::<_, json::PlanView>(&plan_path(&key)?, &body)
                .await?;
            (answer, "set")
        }
        PlanCommand::Template(command) => return template(client, command).await,
        PlanCommand::Pause { key, reason } => {
            let answer = client
                .post::<_, json::PlanView>(
                    &format!("{}/pause", plan_path(&key)?),
                    &json::PlanChange { reason },
                )
                .await?;
            (answer, "paused")
        }
        PlanCommand::Resume { key, reason } => {
            let answer = client
                .post::<_, json::PlanView>(
                    &format!("{}/resume", plan_path(&key)?),
                    &json::PlanChange { reason },
                )
                .await?;
            (answer, "resumed")
        }
    };
    let human = render::plan(&answer.body, verb);
    Ok(Output::ok(answer.json, human))
}

/// `approvals list|show|approve|reject`.
pub(super) async fn approvals(
    client: &Client,
    command: ApprovalsCommand,
) -> Result<Output, Failure> {
    let answer = match command {
        ApprovalsCommand::List { all, migration } => {
            let mut path = format!("/v1/approvals?all={all}");
            if let Some(key) = migration {
                path.push_str(&format!("&migration={}", path_segment(&key)?));
            }
            let list = client.get::<json::Approvals>(&path).await?;
            let human = render::approvals(&list.body);
            return Ok(Output::ok(list.json, human));
        }
        ApprovalsCommand::Show { id } => {
            client
                .get::<json::Approval>(&format!("/v1/approvals/{id}"))
                .await?
        }
        ApprovalsCommand::Approve { id, reason } => {
            client
                .post::<_, json::Approval>(
                    &format!("/v1/approvals/{id}/approve"),
                    &json::ApprovalDecision { reason },
                )
                .await?
        }
        ApprovalsCommand::Reject { id, reason } => {
            client
                .post::<_, json::Approval>(
                    &format!("/v1/approvals/{id}/reject"),
                    &json::ApprovalDecision { reason },
                )
                .await?
        }
    };
    let human = render::approval(&answer.body);
    Ok(Output::ok(answer.json, human))
}

/// What halts the plan; each absent one at the server's default.
#[derive(clap::Args, Debug)]
pub struct GuardrailArgs {
    /// Halt when more than this share of shadow reads differ (default 0: any mismatch).
    #[arg(long)]
    max_mismatch_ratio: Option<f64>,
    /// Halt when more than this share of new-shape operations fail (default 0.01).
    #[arg(long)]
    max_new_error_ratio: Option<f64>,
    /// Halt when the new shape's error ratio exceeds the old shape's this many times
    /// (default 2).
    #[arg(long)]
    max_error_ratio_vs_old: Option<f64>,
    /// Halt when the new shape's p99 latency exceeds the old shape's this many times
    /// (default 2).
    #[arg(long)]
    max_p99_ratio_vs_old: Option<f64>,
    /// Halt when a live instance has not applied the last change for this long
    /// (default 10m).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_behind: Option<Duration>,
    /// Halt when a running backfill has written no batch, or held itself back (replica lag,
    /// WAL rate, autovacuum), for this long (default 15m).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_backfill_stall: Option<Duration>,
    /// Halt when the migration's target database cannot be observed (unreachable, unreadable,
    /// not configured here) for this long (default 10m).
    #[arg(long, value_parser = humantime::parse_duration)]
    max_unobserved: Option<Duration>,
    /// On a breach, also move the front back to the plan's previous step (rollback), or only
    /// halt (default).
    #[arg(long, value_parser = ["halt", "rollback"])]
    on_breach: Option<String>,
}

impl GuardrailArgs {
    fn body(&self) -> Result<json::GuardrailsBody, Failure> {
        Ok(json::GuardrailsBody {
            max_mismatch_ratio: self.max_mismatch_ratio,
            max_new_error_ratio: self.max_new_error_ratio,
            max_error_ratio_vs_old: self.max_error_ratio_vs_old,
            max_p99_ratio_vs_old: self.max_p99_ratio_vs_old,
            max_behind_seconds: self.max_behind.map(|d| d.as_secs()),
            max_backfill_stall_seconds: self.max_backfill_stall.map(|d| d.as_secs()),
            max_unobserved_seconds: self.max_unobserved.map(|d| d.as_secs()),
            min_operations: None,
            min_comparisons: None,
            on_breach: self.on_breach.clone(),
        })
    }
}

fn plan_path(key: &str) -> Result<String, Failure> {
    Ok(format!("/v1/migrations/{}/plan", path_segment(key)?))
}

/// `--stage dual_write=1,25,100 --stage shadow=100 …` as a plan's stages, each step held
/// `hold`. Every stage but the plan's last (of these and `base`'s, a template's, in stage order)
/// advances after its last step, once approved for those named in `approve`; the last stops.
fn flag_stages(
    stages: &[String],
    hold: Option<Duration>,
    approve: &[String],
    base: &[String],
) -> Result<Vec<json::PlanStage>, Failure> {
    if let Some(unknown) = approve.iter().find(|a| {
        !stages
            .iter()
            .any(|s| s.split('=').next() == Some(a.as_str()))
    }) {
        return Err(Failure::usage(format!(
            "--approve-advance {unknown}: name a stage given with --stage"
        )));
    }
    let hold_seconds = hold.map_or(0, |h| h.as_secs());
    let mut parsed = Vec::with_capacity(stages.len());
    for raw in stages {
        let (stage, steps) = raw.split_once('=').ok_or_else(|| {
            Failure::usage(format!(
                "--stage {raw:?}: write STAGE=PERCENT,PERCENT,… (e.g. live=5,25,50,100)"
            ))
        })?;
        let steps = steps
            .split(',')
            .map(|p| {
                switchyard_domain::BasisPoints::from_percent(p.trim())
                    .map(|bp| json::PlanStepBody {
                        rollout_bp: bp.get(),
                        hold_seconds,
                    })
                    .map_err(|e| Failure::usage(format!("--stage {raw:?}: {}", e.0)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        parsed.push((stage.trim().to_owned(), steps));
    }
    // Unknown stage names order last here; the server says what is wrong with them.
    let order =
        |name: &str| switchyard_domain::Stage::parse(name).map_or(usize::MAX, |s| s as usize);
    let last = parsed
        .iter()
        .map(|(name, _)| name.as_str())
        .chain(base.iter().map(String::as_str))
        .max_by_key(|name| order(name))
        .map(str::to_owned);
    Ok(parsed
        .into_iter()
        .map(|(stage, steps)| json::PlanStage {
            then: if Some(&stage) == last.as_ref() {
                "stop"
            } else if approve.contains(&stage) {
                "approve"
            } else {
                "advance"
            }
            .to_owned(),
            stage,
            steps,
        })
        .collect())
}

/// `--at 2026-12-03T09:00:00Z` as Unix milliseconds.
fn parse_at(at: &str) -> Result<i64, Failure> {
    humantime::parse_rfc3339_weak(at)
        .map_err(|e| {
            Failure::usage(format!(
                "--at {at:?}: {e}; write a UTC time such as 2026-12-03T09:00:00Z"
            ))
        })
        .and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .map_err(|_| Failure::usage(format!("--at {at:?} is before 1970")))
        })
}

/// The stage names of template `name`.
async fn template_stages(client: &Client, name: &str) -> Result<Vec<String>, Failure> {
    let list = client
        .get::<json::PlanTemplates>("/v1/plan-templates")
        .await?;
    list.body
        .templates
        .into_iter()
        .find(|t| t.name == name)
        .map(|t| t.stages.into_iter().map(|s| s.stage).collect())
        .ok_or_else(|| {
            Failure::usage(format!(
                "there is no plan template {name}: see `switchyard plan template list`"
            ))
        })
}

/// `plan template set|list|remove`.
async fn template(client: &Client, command: TemplateCommand) -> Result<Output, Failure> {
    match command {
        TemplateCommand::Set {
            name,
            stages,
            hold,
            approve_advance,
            window,
            description,
            reason,
        } => {
            let body = json::PlanTemplateBody {
                stages: flag_stages(&stages, hold, &approve_advance, &[])?,
                window,
                description,
                reason,
            };
            let t = client
                .put::<_, json::PlanTemplate>(&template_path(&name)?, &body)
                .await?;
            let human = format!(
                "template {} set\n{}",
                t.body.name,
                render::template(&t.body)
            );
            Ok(Output::ok(t.json, human))
        }
        TemplateCommand::List => {
            let list = client
                .get::<json::PlanTemplates>("/v1/plan-templates")
                .await?;
            let human = if list.body.templates.is_empty() {
                "no plan templates: set one with `switchyard plan template set NAME --stage …`"
                    .to_owned()
            } else {
                list.body
                    .templates
                    .iter()
                    .map(render::template)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Output::ok(list.json, human))
        }
        TemplateCommand::Remove { name } => {
            let answer = client
                .delete::<json::PlanTemplate>(&template_path(&name)?)
                .await?;
            Ok(Output::ok(answer.json, format!("template {name} removed")))
        }
    }
}

fn template_path(name: &str) -> Result<String, Failure> {
    Ok(format!("/v1/plan-templates/{}", path_segment(name)?))
}

/// `--file plan.json`: the API's body without its reason.
fn from_file(path: &std::path::Path, reason: String) -> Result<json::PlanBody, Failure> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        stages: Vec<json::PlanStage>,
        #[serde(default)]
        not_before_ms: Option<i64>,
        #[serde(default)]
        window: Option<String>,
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("reading {}: {e}", path.display())))?;
    let file: File = serde_json::from_str(&text)
        .map_err(|e| Failure::usage(format!("{}: not a plan: {e}", path.display())))?;
    Ok(json::PlanBody {
        guardrails: json::GuardrailsBody::default(),
        template: None,
        stages: file.stages,
        not_before_ms: file.not_before_ms,
        window: file.window,
        reason,
    })
}
