//! `backfill`: progress, pausing, resuming or cancelling (recorded as events), and its
//! thresholds and pace (`backfill set`, stored with the backfill, read by its runner).

use super::api::{Client, Failure, path_segment};
use super::args::BackfillCommand;
use super::{Output, migration, render};
use std::time::Duration;
use switchyard_domain::EventKind;
use switchyard_proto::json;

pub(super) async fn run(client: &Client, command: BackfillCommand) -> Result<Output, Failure> {
    let (key, change, event) = match command {
        BackfillCommand::Status { key, watch } => return status(client, &key, watch).await,
        BackfillCommand::Set(args) => return set(client, args).await,
        BackfillCommand::Pause { key, change } => (key, change, EventKind::BackfillPaused),
        BackfillCommand::Resume { key, change } => (key, change, EventKind::BackfillResumed),
        BackfillCommand::Cancel { key, change } => (key, change, EventKind::BackfillCancelled),
    };
    migration::record(client, &key, event, (None, None), change).await
}

/// `backfill status`: once, or followed until the backfill ends (a progress bar in a terminal).
async fn status(client: &Client, key: &str, watch: bool) -> Result<Output, Failure> {
    use std::io::IsTerminal;
    let path = format!("/v1/migrations/{}/backfill", path_segment(key)?);
    let tty = std::io::stdout().is_terminal();
    loop {
        let p = client.get::<json::BackfillProgress>(&path).await?;
        // Printed here while watching, not by `run`: escaped as `run` would.
        let line = render::terminal(&render::progress(&p.body)).into_owned();
        if !watch || p.body.status != json::BackfillStatus::Running {
            if watch && tty {
                super::say("\n");
            }
            return Ok(Output::ok(p.json, line));
        }
        if tty {
            super::say(&format!("\r{line:<100}"));
        } else {
            super::say(&format!("{line}\n"));
        }
        // A display refresh, not a wait for a condition: the server is polled once a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `backfill set KEY …`: each option given replaces the stored setting; `--reset` first clears
/// them all (back to the runner's own values). Thresholds take `off` to turn a signal off.
#[derive(clap::Args, Debug)]
pub struct SetArgs {
    /// The migration's key.
    pub key: String,
    /// Rows per batch.
    #[arg(long)]
    pub batch_size: Option<u64>,
    /// At most this many rows per second (`off`: no limit).
    #[arg(long, value_parser = parse_rate)]
    pub max_rows_per_second: Option<f64>,
    /// Hold while a standby's replay lag is over this (e.g. `2s`, `500ms`; `off`).
    #[arg(long, value_parser = parse_millis)]
    pub max_replica_lag: Option<u64>,
    /// Hold while a standby's replay is this far behind in WAL (e.g. `64MiB`; `off`).
    #[arg(long, value_parser = parse_bytes)]
    pub max_replica_lag_bytes: Option<u64>,
    /// Hold while the primary writes more WAL per second than this (e.g. `32MiB`; `off`).
    #[arg(long, value_parser = parse_bytes)]
    pub max_wal_rate: Option<u64>,
    /// Shrink the batch while batches take longer than this (e.g. `500ms`; `off`).
    #[arg(long, value_parser = parse_millis)]
    pub batch_target: Option<u64>,
    /// Hold after an application session waited on the backfill's locks (`on` or `off`).
    #[arg(long, value_parser = parse_switch)]
    pub yield_to_blocked_sessions: Option<bool>,
    /// Hold while autovacuum works on the backfilled table (`on` or `off`).
    #[arg(long, value_parser = parse_switch)]
    pub hold_during_autovacuum: Option<bool>,
    /// Clear every stored setting first.
    #[arg(long)]
    pub reset: bool,
    /// Why (shown with the settings in `backfill status` and the dashboard).
    #[arg(long)]
    pub reason: String,
}

async fn set(client: &Client, args: SetArgs) -> Result<Output, Failure> {
    let change = json::BackfillSettingsChange {
        reset: args.reset,
        reason: args.reason,
        settings: json::BackfillSettings {
            batch_size: args.batch_size,
            max_rows_per_second: args.max_rows_per_second,
            max_replica_lag_ms: args.max_replica_lag,
            max_replica_lag_bytes: args.max_replica_lag_bytes,
            max_wal_bytes_per_second: args.max_wal_rate,
            batch_target_ms: args.batch_target,
            yield_to_blocked_sessions: args.yield_to_blocked_sessions,
            hold_during_autovacuum: args.hold_during_autovacuum,
        },
    };
    if !change.reset && change.settings == json::BackfillSettings::default() {
        return Err(Failure {
            code: 2,
            message: "backfill set: give at least one setting (--batch-size, \
                      --max-rows-per-second, --max-replica-lag, --max-replica-lag-bytes, \
                      --max-wal-rate, --batch-target, --yield-to-blocked-sessions, \
                      --hold-during-autovacuum) or --reset"
                .to_owned(),
            body: None,
        });
    }
    let path = format!(
        "/v1/migrations/{}/backfill/settings",
        path_segment(&args.key)?
    );
    let p = client
        .put::<_, json::BackfillProgress>(&path, &change)
        .await?;
    let mut line = format!(
        "{}\n{}",
        render::progress(&p.body),
        render::backfill_settings(&p.body.settings)
    );
    if let Some(c) = &p.body.settings_changed {
        line.push_str(&format!(
            "\nchanged by {} at {}: {}",
            render::cell(&c.by),
            render::time(Some(c.at_ms)),
            render::cell(&c.reason)
        ));
    }
    Ok(Output::ok(p.json, line))
}

const OFF: &str = "off";

/// A duration in milliseconds (`2s`, `500ms`, `1m`), or `off` (0).
fn parse_millis(s: &str) -> Result<u64, String> {
    if s.eq_ignore_ascii_case(OFF) {
        return Ok(0);
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); give e.g. 2s, 500ms, 1m, or off"))?;
    u64::try_from(d.as_millis()).map_err(|_| format!("{s:?} is too long"))
}

/// A byte count with an optional unit (`B`, `kB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`), or `off` (0).
fn parse_bytes(s: &str) -> Result<u64, String> {
    if s.eq_ignore_ascii_case(OFF) {
        return Ok(0);
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit_scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "kib" | "k" => 1024.0,
        "mb" => 1e6,
        "mib" | "m" => 1024.0 * 1024.0,
        "gb" => 1e9,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?}; allowed B, kB, KiB, MB, MiB, GB, GiB (or off)"
            ));
        }
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size; give e.g. 64MiB, 500kB, 1048576, or off"))?;
    Ok((number * unit_scale).round() as u64)
}

/// Rows per second, or `off` (0: no limit).
fn parse_rate(s: &str) -> Result<f64, String> {
    if s.eq_ignore_ascii_case(OFF) {
        return Ok(0.0);
    }
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{s:?} is not a rate; give rows per second above 0, or off"
        )),
    }
}

/// `on` or `off` (also true/false, yes/no).
fn parse_switch(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("{s:?}: give on or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_with_units_and_off() {
        assert_eq!(parse_millis("2s"), Ok(2000));
        assert_eq!(parse_millis("500ms"), Ok(500));
        assert_eq!(parse_millis("off"), Ok(0));
        assert!(parse_millis("soon").unwrap_err().contains("not a duration"));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("500kB"), Ok(500_000));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("OFF"), Ok(0));
        assert!(
            parse_bytes("3 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert_eq!(parse_rate("1000"), Ok(1000.0));
        assert_eq!(parse_rate("off"), Ok(0.0));
        assert!(parse_rate("-3").is_err());
        assert_eq!(parse_switch("on"), Ok(true));
        assert!(parse_switch("maybe").is_err());
    }
}
