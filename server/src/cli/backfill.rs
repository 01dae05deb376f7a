//! `backfill`: progress, and pausing, resuming or cancelling (recorded as events).

use super::api::{Client, Failure, path_segment};
use super::args::BackfillCommand;
use super::{Output, migration, render};
use std::time::Duration;
use switchyard_domain::EventKind;
use switchyard_proto::json;

pub(super) async fn run(client: &Client, command: BackfillCommand) -> Result<Output, Failure> {
    let (key, change, event) = match command {
        BackfillCommand::Status { key, watch } => return status(client, &key, watch).await,
        BackfillCommand::Pause { key, change } => (key, change, EventKind::BackfillPaused),
        BackfillCommand::Resume { key, change } => (key, change, EventKind::BackfillResumed),
        BackfillCommand::Cancel { key, change } => (key, change, EventKind::BackfillCancelled),
    };
    migration::record(client, &key, event, (None, None), change).await
}

/// `backfill status`: once, or followed until the backfill ends (a progress bar in a terminal).
async fn status(client: &Client, key: &str, watch: bool) -> Result<Output, Failure> {
    use std::io::{IsTerminal, Write};
    let path = format!("/v1/migrations/{}/backfill", path_segment(key)?);
    let tty = std::io::stdout().is_terminal();
    loop {
        let p = client.get::<json::BackfillProgress>(&path).await?;
        // Printed here while watching, not by `run`: escaped as `run` would.
        let line = render::terminal(&render::progress(&p.body)).into_owned();
        if !watch || p.body.status != json::BackfillStatus::Running {
            if watch && tty {
                println!();
            }
            return Ok(Output::ok(p.json, line));
        }
        if tty {
            print!("\r{line:<100}");
        } else {
            println!("{line}");
        }
        let _ = std::io::stdout().flush();
        // A display refresh, not a wait for a condition: the server is polled once a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
