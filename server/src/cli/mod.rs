//! The `switchyard` command line: `serve` runs the server; `lint` reads SQL files; every other
//! command is a client of the HTTP API. Human-readable output by default, `--json` for machines.
//!
//! Exit codes: 0 done; 1 refused (a safety rule, a stale version, a conflict); 2 usage error
//! (bad arguments, unknown migration, invalid input); 3 cannot reach or authenticate (network,
//! 401/403, server errors).

mod api;
mod args;
mod backfill;
mod gate;
mod inspect;
mod lint;
mod migration;
mod plan;
mod render;
mod sqlfiles;
mod token;

pub use api::{Client, Failure};
pub use args::{
    ApprovalsCommand, BackfillCommand, Change, Cli, Command, MigrationCommand, PlanCommand, Remote,
    TemplateCommand, TokenCommand, WebhookCommand, command, parse,
};
use migration::Rename;
use serde_json::{Value, json};

/// Runs a client command, printing its result; returns the exit code.
pub async fn run(remote: Remote, command: Command) -> i32 {
    // SARIF is JSON: printed (and errors reported) the way `--json` prints.
    let json_output = remote.json || matches!(command, Command::Lint { sarif: true, .. });
    let result = match command {
        // Reads files only: no client, so no server URL or token is needed.
        Command::Lint { paths, sarif } => lint::run(&paths, sarif),
        // Generated from the parser itself, so they never disagree with it.
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut args::command(), "switchyard", &mut script);
            say(&String::from_utf8_lossy(&script));
            return 0;
        }
        Command::Man { out_dir } => return manual(out_dir.as_deref()),
        command => match Client::new(remote) {
            Ok(client) => execute(&client, command).await,
            Err(failure) => Err(failure),
        },
    };
    match result {
        Ok(output) => {
            if json_output {
                say(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&output.json).unwrap_or_default()
                ));
            } else {
                // Escaped here whoever composed it: see `render`.
                say(&format!("{}\n", render::terminal(&output.human)));
            }
            output.code
        }
        Err(failure) => {
            if json_output {
                let body = failure
                    .body
                    .clone()
                    .unwrap_or_else(|| json!({ "code": "cli_error", "message": failure.message }));
                say(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&body).unwrap_or_default()
                ));
            }
            // Messages carry the server's words (and, for a refusal, a migration's text).
            eprintln!("error: {}", render::terminal(&failure.message));
            failure.code
        }
    }
}

/// `man`: the main page on standard output, or every command's page into `out_dir`.
fn manual(out_dir: Option<&std::path::Path>) -> i32 {
    let written = match out_dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(args::command())
                .render(&mut page)
                .map(|()| say(&String::from_utf8_lossy(&page)))
        }
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(args::command(), dir))
            .map(|()| say(&format!("manual pages written to {}\n", dir.display()))),
    };
    match written {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: writing the manual: {e}");
            2
        }
    }
}

/// Writes `text` to standard output. A reader that went away (`| head`, `grep -q`) ends the
/// command quietly, as other Unix tools end; SIGPIPE itself stays ignored, so a server that
/// closes the connection mid-request (a TLS client against a plaintext port) is an error the
/// CLI reports with its exit code, not a signal that kills it.
pub(crate) fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

struct Output {
    json: Value,
    human: String,
    /// 0, or 1 for an answer that is a "no" (a failing gate).
    code: i32,
}

impl Output {
    fn ok(json: Value, human: String) -> Self {
        Self {
            json,
            human,
            code: 0,
        }
    }
}

async fn execute(client: &Client, command: Command) -> Result<Output, Failure> {
    match command {
        Command::Serve(_) => unreachable!("serve is handled by main"),
        Command::Lint { .. } | Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("local commands are handled by run")
        }
        Command::Migration(command) => migration::run(client, command).await,
        Command::Gate {
            key: Some(key),
            target_database_url,
            applied_list,
            lint_fails,
            ..
        } => {
            // clap waives `requires` for options whose requirement conflicts with KEY.
            if target_database_url.is_some() || applied_list.is_some() || lint_fails {
                return Err(Failure::usage(
                    "--target-database-url, --applied-list and --lint-fails go with \
                     --migrations-dir, not KEY",
                ));
            }
            gate::one(client, &key).await
        }
        Command::Gate {
            key: None,
            migrations_dir,
            target_database_url,
            tool,
            applied_list,
            lint_fails,
        } => {
            let dir =
                migrations_dir.ok_or_else(|| Failure::usage("give KEY or --migrations-dir"))?;
            gate::dir(
                client,
                &dir,
                target_database_url.as_deref(),
                tool,
                applied_list.as_deref(),
                lint_fails,
            )
            .await
        }
        Command::Ramp {
            key,
            percent,
            stage,
            change,
        } => migration::ramp(client, &key, &percent, stage, change).await,
        Command::Advance { key, change } => migration::step(client, &key, "advance", change).await,
        Command::Retreat { key, change } => migration::step(client, &key, "retreat", change).await,
        Command::Record {
            sql_file: Some(file),
            change,
            ..
        } => migration::record_sql_file(client, &file, change).await,
        Command::Record {
            key,
            event,
            rows_done,
            rows_total,
            change,
            ..
        } => {
            let (Some(key), Some(event)) = (key, event) else {
                return Err(Failure::usage("give KEY and EVENT, or --sql-file FILE"));
            };
            migration::record(client, &key, event, (rows_done, rows_total), change).await
        }
        Command::RetireSql { key } => migration::rename_sql(client, &key, Rename::Retire).await,
        Command::RestoreSql { key } => migration::rename_sql(client, &key, Rename::Restore).await,
        Command::Backfill(command) => backfill::run(client, command).await,
        Command::Audit { key, limit, before } => inspect::audit(client, &key, limit, before).await,
        Command::Decide { key, entity } => inspect::decide(client, &key, entity.as_deref()).await,
        Command::Traffic { key, minutes } => inspect::traffic(client, &key, minutes).await,
        Command::Usage { key, since } => inspect::usage(client, &key, since).await,
        Command::Mismatches {
            key,
            limit,
            keys_only,
        } => inspect::mismatches(client, &key, limit, keys_only).await,
        Command::Instances { migration } => inspect::instances(client, migration.as_deref()).await,
        Command::Token(command) => token::run(client, command).await,
        Command::Plan(command) => plan::run(client, command).await,
        Command::Approvals(command) => plan::approvals(client, command).await,
        Command::Webhook(command) => token::webhook(client, command).await,
    }
}
