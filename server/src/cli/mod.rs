//! The `switchyard` command line: `serve` runs the server; every other command is a client of
//! the HTTP API. Human-readable output by default, `--json` for machines.
//!
//! Exit codes: 0 done; 1 refused (a safety rule, a stale version, a conflict); 2 usage error
//! (bad arguments, unknown migration, invalid input); 3 cannot reach or authenticate (network,
//! 401/403, server errors).

mod sqlfiles;

use crate::startup::ServeConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use sqlfiles::{Phase, Tool};
use std::path::PathBuf;
use std::time::Duration;
use switchyard_domain::migration::BackfillStatus;
use switchyard_domain::{BasisPoints, Migration};

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "Feature flags for expand/contract database migrations"
)]
pub struct Cli {
    #[command(flatten)]
    pub remote: Remote,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// Server base URL (HTTP API).
    #[arg(
        long,
        env = "SWITCHYARD_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// Bearer token.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM CA certificate to trust for an `https://` server (e.g. a self-signed one).
    #[arg(long, env = "SWITCHYARD_TLS_CA", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the flag server.
    Serve(ServeConfig),
    /// Create, show or list migrations.
    #[command(subcommand)]
    Migration(MigrationCommand),
    /// Move the rollout front: `ramp KEY --percent 12.5`.
    Ramp {
        key: String,
        /// Percentage of entities at the stage, up to two decimals.
        #[arg(long)]
        percent: String,
        /// The stage to ramp (default: the current one). The next stage is allowed when the
        /// current one is at 100%, the previous one when it is at 0%.
        #[arg(long)]
        stage: Option<String>,
        #[command(flatten)]
        change: Change,
    },
    /// Advance to the next stage (needs the current one at 100%).
    Advance {
        key: String,
        #[command(flatten)]
        change: Change,
    },
    /// Step back to the previous stage (needs the current one at 0%).
    Retreat {
        key: String,
        #[command(flatten)]
        change: Change,
    },
    /// Record a schema or data event.
    ///
    /// `record KEY EVENT`, or `record --sql-file FILE` after applying a migration file headed
    /// `-- switchyard: expand KEY` (records expand-applied; already recorded is fine) or
    /// `-- switchyard: contract KEY` (records contracted, through the gate).
    Record {
        #[arg(required_unless_present = "sql_file")]
        key: Option<String>,
        #[arg(required_unless_present = "sql_file")]
        event: Option<RecordedEvent>,
        /// A migration file just applied; its header says what to record.
        #[arg(long, conflicts_with_all = ["key", "event"])]
        sql_file: Option<PathBuf>,
        /// Rows done (backfill-progress).
        #[arg(long)]
        rows_done: Option<u64>,
        /// Estimated total rows (backfill-progress).
        #[arg(long)]
        rows_total: Option<u64>,
        #[command(flatten)]
        change: Change,
    },
    /// The contract gate: may the old shape be dropped now? Exit 0 if it passes, 1 if not.
    ///
    /// `gate KEY` checks one migration; `gate --migrations-dir DIR` checks every pending SQL
    /// file headed `-- switchyard: contract KEY` (pending according to the target database's
    /// migration table, or to --applied-list) and fails if any names an unknown migration or
    /// one whose gate fails.
    Gate {
        #[arg(required_unless_present = "migrations_dir")]
        key: Option<String>,
        #[arg(long, conflicts_with = "key")]
        migrations_dir: Option<PathBuf>,
        /// The database the migrations are applied to (sqlite://… or postgres://…).
        #[arg(
            long,
            env = "SWITCHYARD_TARGET_DATABASE_URL",
            requires = "migrations_dir"
        )]
        target_database_url: Option<String>,
        /// Whose migration table to read.
        #[arg(
            long,
            value_enum,
            default_value = "sqlx",
            requires = "target_database_url"
        )]
        tool: Tool,
        /// Instead of a database: a file naming the applied migration files, one per line.
        #[arg(
            long,
            conflicts_with = "target_database_url",
            requires = "migrations_dir"
        )]
        applied_list: Option<PathBuf>,
    },
    /// A backfill's progress, and pausing, resuming or cancelling it (runners act between
    /// batches, never by killing a statement).
    #[command(subcommand)]
    Backfill(BackfillCommand),
    /// Show a migration's audit log, newest first.
    Audit {
        key: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Show entries older than this id (for paging).
        #[arg(long)]
        before: Option<u64>,
    },
    /// Ask the server what an operation on an entity should do.
    Decide {
        key: String,
        /// The entity key; omit for an operation without one.
        #[arg(long)]
        entity: Option<String>,
    },
    /// List client instances seen in the last hour.
    Instances {
        /// Only instances that evaluate this migration.
        #[arg(long)]
        migration: Option<String>,
    },
    /// Show what clients report for a migration, per minute: reads and writes per side,
    /// errors, latency, shadow comparisons and mismatches.
    Traffic {
        key: String,
        /// How many minutes back.
        #[arg(long, default_value_t = 15)]
        minutes: u32,
    },
    /// Manage API tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
pub enum MigrationCommand {
    Create {
        key: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, default_value = "")]
        owner: String,
        /// What the migration is partitioned by, e.g. user_id.
        #[arg(long, default_value = "")]
        entity_kind: String,
        /// Contract-gate soak period (e.g. 7d, 36h).
        #[arg(long, value_parser = humantime::parse_duration)]
        soak: Option<Duration>,
        /// A service expected to use the migration (repeatable).
        #[arg(long = "expected-service")]
        expected_services: Vec<String>,
        /// The migration has a backfill.
        #[arg(long)]
        backfill: bool,
        /// Percentage of shadow reads to compare.
        #[arg(long)]
        shadow_sample_percent: Option<String>,
        #[arg(long)]
        reason: String,
    },
    Show {
        key: String,
    },
    /// List migrations; `--stale` lists those needing attention instead: contracted but still
    /// evaluated by live clients (code to clean up), and at complete 100% for longer than
    /// `--days` without being contracted.
    List {
        #[arg(long)]
        stale: bool,
        #[arg(long, default_value_t = 14, requires = "stale")]
        days: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum BackfillCommand {
    /// Rows done, estimated total, rate and ETA; `--watch` follows it with a progress bar.
    Status {
        key: String,
        #[arg(long)]
        watch: bool,
    },
    Pause {
        key: String,
        #[command(flatten)]
        change: Change,
    },
    Resume {
        key: String,
        #[command(flatten)]
        change: Change,
    },
    /// Stop the backfill and forget its checkpoint (it can be started again).
    Cancel {
        key: String,
        #[command(flatten)]
        change: Change,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    Create {
        name: String,
        #[arg(long, value_parser = ["reader", "operator", "gate", "admin"])]
        role: String,
    },
    List,
    Revoke {
        id: u64,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum RecordedEvent {
    ExpandApplied,
    BackfillStarted,
    BackfillProgress,
    BackfillComplete,
    BackfillPaused,
    BackfillResumed,
    BackfillCancelled,
    OldShapeRepaired,
    Contracted,
}

/// What every mutating command takes.
#[derive(Args, Debug)]
pub struct Change {
    /// Why (required; kept in the audit log).
    #[arg(long)]
    pub reason: String,
    /// The version you expect the migration at (shown by `migration show`); the change is
    /// refused if someone changed the migration since (rule 8).
    #[arg(long)]
    pub expected_version: Option<u64>,
    /// Act on whatever the current version is, instead of naming it.
    #[arg(long, conflicts_with = "expected_version")]
    pub latest: bool,
}

impl Change {
    /// Traffic changes name the state they start from (rule 8): reading it just before the
    /// change would overwrite whatever another release manager did since you last looked.
    fn require_view(&self, action: &str) -> Result<(), Failure> {
        if self.expected_version.is_none() && !self.latest {
            return Err(Failure::usage(format!(
                "{action} changes traffic: name the version you expect with --expected-version V \
                 (see `switchyard migration show`), or pass --latest to act on the current one"
            )));
        }
        Ok(())
    }
}

/// A failed command with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
    pub body: Option<Value>,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
            body: None,
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    remote: Remote,
}

impl Client {
    pub fn new(remote: Remote) -> Result<Self, Failure> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        if let Some(path) = &remote.tls_ca {
            let pem = std::fs::read(path).map_err(|e| {
                Failure::usage(format!(
                    "cannot read the CA certificate {}: {e}",
                    path.display()
                ))
            })?;
            let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                Failure::usage(format!("{} is not a PEM certificate: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(ca);
        }
        let http = builder
            .build()
            .map_err(|e| Failure::usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self { http, remote })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let url = format!("{}{}", self.remote.server.trim_end_matches('/'), path);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.remote.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| Failure {
            code: 3,
            message: format!("cannot reach the server at {}: {e}", self.remote.server),
            body: None,
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        let message = value
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| format!("server answered {status}"), str::to_owned);
        let code = match status.as_u16() {
            401 | 403 => 3,
            400 | 404 | 413 => 2,
            409 | 422 => 1,
            _ => 3,
        };
        let prefix = match value.get("rule").and_then(Value::as_u64) {
            Some(_) if code == 1 => "refused: ",
            _ => "",
        };
        Err(Failure {
            code,
            message: format!("{prefix}{message}"),
            body: Some(value),
        })
    }

    async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, Failure> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn expected_version(&self, key: &str, given: Option<u64>) -> Result<u64, Failure> {
        match given {
            Some(v) => Ok(v),
            None => {
                let m = self
                    .get(&format!("/v1/migrations/{}", path_segment(key)?))
                    .await?;
                m.get("version")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| Failure::usage("the server's answer has no version"))
            }
        }
    }
}

/// Rejects keys that would change the URL path; the server validates the exact form.
fn path_segment(key: &str) -> Result<&str, Failure> {
    if key.is_empty() || key.contains(['/', '?', '#', '%']) {
        return Err(Failure::usage(format!(
            "invalid migration key {key:?}: allowed a-z, 0-9, '.', '_' and '-'"
        )));
    }
    Ok(key)
}

/// Runs a client command, printing its result; returns the exit code.
pub async fn run(remote: Remote, command: Command) -> i32 {
    let json_output = remote.json;
    let result = match Client::new(remote) {
        Ok(client) => execute(&client, command).await,
        Err(failure) => Err(failure),
    };
    match result {
        Ok(output) => {
            if json_output {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&output.json).unwrap_or_default()
                );
            } else {
                println!("{}", output.human);
            }
            output.code
        }
        Err(failure) => {
            if json_output {
                let body = failure
                    .body
                    .clone()
                    .unwrap_or_else(|| json!({ "code": "cli_error", "message": failure.message }));
                println!(
                    "{}",
                    serde_json::to_string_pretty(&body).unwrap_or_default()
                );
            }
            eprintln!("error: {}", failure.message);
            failure.code
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
        Command::Migration(MigrationCommand::Create {
            key,
            description,
            owner,
            entity_kind,
            soak,
            expected_services,
            backfill,
            shadow_sample_percent,
            reason,
        }) => {
            let sample = shadow_sample_percent
                .map(|p| BasisPoints::from_percent(&p).map(|bp| bp.get()))
                .transpose()
                .map_err(|e| Failure::usage(e.0))?;
            let m = client
                .post(
                    "/v1/migrations",
                    json!({
                        "key": key, "description": description, "owner": owner,
                        "entity_kind": entity_kind, "soak_seconds": soak.map(|d| d.as_secs()),
                        "expected_services": expected_services, "has_backfill": backfill,
                        "shadow_sample_bp": sample, "reason": reason,
                    }),
                )
                .await?;
            Ok(migration_output(m, "created"))
        }
        Command::Migration(MigrationCommand::Show { key }) => {
            let m = client
                .get(&format!("/v1/migrations/{}", path_segment(&key)?))
                .await?;
            Ok(migration_output(m, ""))
        }
        Command::Migration(MigrationCommand::List { stale: false, .. }) => {
            let s = client.get("/v1/migrations").await?;
            let human = list_table(&s);
            Ok(Output::ok(s, human))
        }
        Command::Migration(MigrationCommand::List { stale: true, days }) => {
            let v = client
                .get(&format!("/v1/lifecycle?complete_for_days={days}"))
                .await?;
            let human = lifecycle_text(&v, days);
            Ok(Output::ok(v, human))
        }
        Command::Gate {
            key: Some(key),
            target_database_url,
            applied_list,
            ..
        } => {
            // clap waives `requires` for options whose requirement conflicts with KEY.
            if target_database_url.is_some() || applied_list.is_some() {
                return Err(Failure::usage(
                    "--target-database-url and --applied-list go with --migrations-dir, not KEY",
                ));
            }
            let report = client
                .get(&format!("/v1/migrations/{}/gate", path_segment(&key)?))
                .await?;
            let passed = report["passed"].as_bool() == Some(true);
            let human = gate_text(&report);
            Ok(Output {
                json: report,
                human,
                code: if passed { 0 } else { 1 },
            })
        }
        Command::Gate {
            key: None,
            migrations_dir,
            target_database_url,
            tool,
            applied_list,
        } => {
            let dir =
                migrations_dir.ok_or_else(|| Failure::usage("give KEY or --migrations-dir"))?;
            gate_dir(
                client,
                &dir,
                target_database_url.as_deref(),
                tool,
                applied_list.as_deref(),
            )
            .await
        }
        Command::Ramp {
            key,
            percent,
            stage,
            change,
        } => {
            change.require_view("ramp")?;
            let bp = BasisPoints::from_percent(&percent).map_err(|e| Failure::usage(e.0))?;
            let version = client
                .expected_version(&key, change.expected_version)
                .await?;
            let m = client
                .post(
                    &format!("/v1/migrations/{}/rollout", path_segment(&key)?),
                    json!({ "stage": stage, "rollout_bp": bp.get(),
                            "expected_version": version, "reason": change.reason }),
                )
                .await?;
            Ok(migration_output(m, "ramped"))
        }
        Command::Advance { key, change } => step(client, &key, "advance", change).await,
        Command::Retreat { key, change } => step(client, &key, "retreat", change).await,
        Command::Record {
            sql_file: Some(file),
            change,
            ..
        } => record_sql_file(client, &file, change).await,
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
            let name = event
                .to_possible_value()
                .map(|v| v.get_name().replace('-', "_"))
                .unwrap_or_default();
            let version = client
                .expected_version(&key, change.expected_version)
                .await?;
            let m = client
                .post(
                    &format!("/v1/migrations/{}/events", path_segment(&key)?),
                    json!({ "event": name, "expected_version": version, "reason": change.reason,
                            "rows_done": rows_done, "rows_total_estimate": rows_total }),
                )
                .await?;
            Ok(migration_output(m, &format!("recorded {name}")))
        }
        Command::Backfill(BackfillCommand::Status { key, watch }) => {
            backfill_status(client, &key, watch).await
        }
        Command::Backfill(command) => {
            let (key, change, event) = match command {
                BackfillCommand::Pause { key, change } => (key, change, "backfill_paused"),
                BackfillCommand::Resume { key, change } => (key, change, "backfill_resumed"),
                BackfillCommand::Cancel { key, change } => (key, change, "backfill_cancelled"),
                BackfillCommand::Status { .. } => unreachable!("handled above"),
            };
            let version = client
                .expected_version(&key, change.expected_version)
                .await?;
            let m = client
                .post(
                    &format!("/v1/migrations/{}/events", path_segment(&key)?),
                    json!({ "event": event, "expected_version": version, "reason": change.reason }),
                )
                .await?;
            Ok(migration_output(m, &format!("recorded {event}")))
        }
        Command::Audit { key, limit, before } => {
            let mut path = format!("/v1/migrations/{}/audit?limit={limit}", path_segment(&key)?);
            if let Some(b) = before {
                path.push_str(&format!("&before_id={b}"));
            }
            let page = client.get(&path).await?;
            let human = audit_table(&page);
            Ok(Output::ok(page, human))
        }
        Command::Decide { key, entity } => {
            let mut path = format!("/v1/migrations/{}/decide", path_segment(&key)?);
            if let Some(e) = &entity {
                path.push_str(&format!("?entity_key={}", url_encode(e)));
            }
            let d = client.get(&path).await?;
            let human = format!(
                "{} for {}: stage {}, write {}, read {}, return {}{}",
                d["key"].as_str().unwrap_or(""),
                entity
                    .as_deref()
                    .map_or("an operation without entity".to_owned(), |e| {
                        format!("entity {e} (bucket {})", d["bucket"])
                    }),
                d["stage"].as_str().unwrap_or(""),
                d["write"].as_str().unwrap_or(""),
                d["read"].as_str().unwrap_or(""),
                d["return_value"].as_str().unwrap_or(""),
                if d["shadow_compare"].as_bool() == Some(true) {
                    ", compare shadow reads"
                } else {
                    ""
                },
            );
            Ok(Output::ok(d, human))
        }
        Command::Traffic { key, minutes } => {
            let t = client
                .get(&format!(
                    "/v1/migrations/{}/traffic?minutes={minutes}",
                    path_segment(&key)?
                ))
                .await?;
            let human = traffic_table(&t);
            Ok(Output::ok(t, human))
        }
        Command::Instances { migration } => {
            let path = match &migration {
                Some(key) => format!("/v1/migrations/{}/instances", path_segment(key)?),
                None => "/v1/clients".to_owned(),
            };
            let list = client.get(&path).await?;
            let mut human = format!(
                "{:<24} {:<40} {:>8} {:<5} LAST SEEN\n",
                "SERVICE", "INSTANCE", "APPLIED", "LIVE"
            );
            for i in list["instances"].as_array().into_iter().flatten() {
                human.push_str(&format!(
                    "{:<24} {:<40} {:>8} {:<5} {}\n",
                    i["service"].as_str().unwrap_or(""),
                    i["instance_id"].as_str().unwrap_or(""),
                    i["applied_version"],
                    if i["live"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    },
                    time(i["last_seen_ms"].as_i64()),
                ));
            }
            Ok(Output::ok(list, human.trim_end().to_owned()))
        }
        Command::Token(TokenCommand::Create { name, role }) => {
            let t = client
                .post("/v1/tokens", json!({ "name": name, "role": role }))
                .await?;
            let human = format!(
                "created token {} ({}) with role {}; it is shown only now:\n{}",
                t["info"]["id"],
                t["info"]["name"].as_str().unwrap_or(""),
                t["info"]["role"].as_str().unwrap_or(""),
                t["token"].as_str().unwrap_or("")
            );
            Ok(Output::ok(t, human))
        }
        Command::Token(TokenCommand::List) => {
            let list = client.get("/v1/tokens").await?;
            let mut human = format!(
                "{:>4} {:<24} {:<9} {:<22} REVOKED\n",
                "ID", "NAME", "ROLE", "CREATED"
            );
            for t in list["tokens"].as_array().into_iter().flatten() {
                human.push_str(&format!(
                    "{:>4} {:<24} {:<9} {:<22} {}\n",
                    t["id"],
                    t["name"].as_str().unwrap_or(""),
                    t["role"].as_str().unwrap_or(""),
                    time(t["created_at_ms"].as_i64()),
                    t["revoked_at_ms"]
                        .as_i64()
                        .map_or("-".to_owned(), |ms| time(Some(ms))),
                ));
            }
            Ok(Output::ok(list, human.trim_end().to_owned()))
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            let t = client
                .post(&format!("/v1/tokens/{id}/revoke"), json!({}))
                .await?;
            let human = format!(
                "revoked token {} ({})",
                t["id"],
                t["name"].as_str().unwrap_or("")
            );
            Ok(Output::ok(t, human))
        }
    }
}

async fn step(client: &Client, key: &str, action: &str, change: Change) -> Result<Output, Failure> {
    change.require_view(action)?;
    let version = client
        .expected_version(key, change.expected_version)
        .await?;
    let m = client
        .post(
            &format!("/v1/migrations/{}/{action}", path_segment(key)?),
            json!({ "expected_version": version, "reason": change.reason }),
        )
        .await?;
    Ok(migration_output(
        m,
        if action == "advance" {
            "advanced"
        } else {
            "stepped back"
        },
    ))
}

fn url_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(|ms| u64::try_from(ms).ok())
        .map(|ms| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                .to_string()
        })
        .unwrap_or_else(|| "-".to_owned())
}

/// "dual_write at 25% (the rest at off)".
fn front_text(m: &Migration) -> String {
    let front = m.front();
    match m.stage {
        switchyard_domain::Stage::Off => "off".to_owned(),
        switchyard_domain::Stage::Contracted => "contracted".to_owned(),
        s if front.rollout.is_full() => format!("{s} at 100%"),
        s => format!(
            "{s} at {} (the rest at {})",
            m.rollout_bp,
            front.stage_for(Some(u32::MAX))
        ),
    }
}

fn migration_output(value: Value, verb: &str) -> Output {
    let human = match serde_json::from_value::<Migration>(value.clone()) {
        Ok(m) => {
            let backfill = if m.has_backfill {
                let status = match m.backfill.status {
                    BackfillStatus::None => "none",
                    BackfillStatus::NotStarted => "not started",
                    BackfillStatus::Running => "running",
                    BackfillStatus::Complete => "complete",
                };
                let paused = if m.backfill.paused { ", paused" } else { "" };
                // Runners report progress in checkpoints, not in the migration's record.
                let progress = if m.backfill.rows_done > 0 {
                    format!(
                        " ({} of ~{} rows recorded)",
                        m.backfill.rows_done, m.backfill.rows_total_estimate
                    )
                } else {
                    String::new()
                };
                format!(
                    "{status}{paused}{progress}; progress: switchyard backfill status {}",
                    m.key
                )
            } else {
                "none".to_owned()
            };
            let services = if m.expected_services.is_empty() {
                "-".to_owned()
            } else {
                m.expected_services.join(", ")
            };
            let head = if verb.is_empty() {
                format!("{} (version {})", m.key, m.version)
            } else {
                format!("{verb} {} (now version {})", m.key, m.version)
            };
            format!(
                "{head}\n  front            {}\n  description      {}\n  owner            {}\n  entity kind      {}\n  expand applied   {}\n  backfill         {}\n  old shape stale  {}\n  soak             {}\n  expected         {}\n  updated          {}",
                front_text(&m),
                if m.description.is_empty() {
                    "-"
                } else {
                    &m.description
                },
                if m.owner.is_empty() { "-" } else { &m.owner },
                if m.entity_kind.is_empty() {
                    "-"
                } else {
                    &m.entity_kind
                },
                if m.expand_applied { "yes" } else { "no" },
                backfill,
                if m.old_shape_stale {
                    "yes (repair needed before old reads)"
                } else {
                    "no"
                },
                humantime::format_duration(Duration::from_secs(m.soak_seconds)),
                services,
                time(Some(m.updated_at_ms)),
            )
        }
        Err(_) => value.to_string(),
    };
    Output::ok(value, human)
}

fn list_table(snapshot: &Value) -> String {
    let mut out = format!("{:<40} {:<36} {:>8} UPDATED\n", "KEY", "FRONT", "VERSION");
    let migrations: Vec<Migration> = snapshot["migrations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| serde_json::from_value(m.clone()).ok())
        .collect();
    if migrations.is_empty() {
        return "no migrations yet; create one with `switchyard migration create`".to_owned();
    }
    for m in migrations {
        out.push_str(&format!(
            "{:<40} {:<36} {:>8} {}\n",
            m.key.as_str(),
            front_text(&m),
            m.version.0,
            time(Some(m.updated_at_ms))
        ));
    }
    format!(
        "{}\nsnapshot version {}",
        out.trim_end(),
        snapshot["version"]
    )
}

fn audit_table(page: &Value) -> String {
    let mut out = String::new();
    for e in page["entries"].as_array().into_iter().flatten() {
        let front = |v: &Value| match (v["stage"].as_str(), v["rollout_bp"].as_u64()) {
            (Some(s), Some(bp)) => format!(
                "{s}@{}",
                BasisPoints::new(bp as u32)
                    .map(|b| b.to_string())
                    .unwrap_or_default()
            ),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "#{:<5} v{:<6} {} {:<20} {} -> {}\n        by {}: {}\n",
            e["id"],
            e["version"],
            time(e["at_ms"].as_i64()),
            e["action"].as_str().unwrap_or(""),
            front(&e["before"]),
            front(&e["after"]),
            e["actor"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or(""),
        ));
    }
    if out.is_empty() {
        return "no audit entries".to_owned();
    }
    if let Some(next) = page["next_before_id"].as_u64() {
        out.push_str(&format!("(older entries: --before {next})"));
    }
    out.trim_end().to_owned()
}

fn traffic_table(t: &Value) -> String {
    use switchyard_domain::traffic::TrafficCounts;
    let row = |label: String, c: &TrafficCounts| {
        let p99 = |h: &switchyard_domain::traffic::Histogram| match h.quantile_upper_bound_us(0.99)
        {
            _ if h.count() == 0 => "-".to_owned(),
            Some(us) if us >= 1000 => format!("≤{}ms", us / 1000),
            Some(us) => format!("≤{us}µs"),
            None => ">2.5s".to_owned(),
        };
        format!(
            "{label:<20} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>6} {:>8} {:>7} {:>8}\n",
            c.old.reads,
            c.old.writes,
            c.old.errors,
            p99(&c.old.latency),
            c.new.reads,
            c.new.writes,
            c.new.errors,
            p99(&c.new.latency),
            c.comparisons,
            c.mismatches,
        )
    };
    let mut out = format!(
        "{:<20} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>6} {:>8} {:>7} {:>8}\n",
        "MINUTE",
        "OLD R",
        "OLD W",
        "ERR",
        "P99",
        "NEW R",
        "NEW W",
        "ERR",
        "P99",
        "COMPARE",
        "MISMATCH"
    );
    let minutes = t["minutes"].as_array().cloned().unwrap_or_default();
    for m in &minutes {
        if let Ok(c) = serde_json::from_value::<TrafficCounts>(m.clone()) {
            out.push_str(&row(time(m["minute_ms"].as_i64()), &c));
        }
    }
    if minutes.is_empty() {
        return format!(
            "no traffic reported for {} in this window",
            t["key"].as_str().unwrap_or("")
        );
    }
    if let Ok(total) = serde_json::from_value::<TrafficCounts>(t["total"].clone()) {
        out.push_str(&row("total".to_owned(), &total));
        out.push_str(&format!(
            "evaluations without entity: {}, on a fallback: {}",
            total.evaluations_without_entity, total.fallback_evaluations
        ));
    }
    out.trim_end().to_owned()
}

/// Checks every pending contract file of `dir`.
async fn gate_dir(
    client: &Client,
    dir: &std::path::Path,
    target: Option<&str>,
    tool: Tool,
    applied_list: Option<&std::path::Path>,
) -> Result<Output, Failure> {
    let files = sqlfiles::scan(dir).map_err(Failure::usage)?;
    let applied = match (target, applied_list) {
        (Some(url), _) => Some(
            sqlfiles::read_database(url, tool)
                .await
                .map_err(|e| Failure {
                    code: 3,
                    message: e,
                    body: None,
                })?,
        ),
        (None, Some(list)) => Some(sqlfiles::read_list(list).map_err(Failure::usage)?),
        (None, None) => None,
    };
    let mut results = Vec::new();
    let mut human = String::new();
    let mut all_pass = true;
    for file in &files {
        let pending = applied.as_ref().is_none_or(|a| !a.contains(file));
        for (phase, key) in &file.tags {
            if *phase != Phase::Contract {
                continue;
            }
            if !pending {
                human.push_str(&format!("  applied  {}: contracts {key}\n", file.name));
                results.push(json!({ "file": file.name, "key": key, "pending": false }));
                continue;
            }
            match client
                .get(&format!("/v1/migrations/{}/gate", path_segment(key)?))
                .await
            {
                Ok(report) => {
                    let passed = report["passed"].as_bool() == Some(true);
                    all_pass &= passed;
                    human.push_str(&format!(
                        "{} {}: contracts {key}\n{}\n",
                        if passed { "  PASS   " } else { "  FAIL   " },
                        file.name,
                        indent(&gate_text(&report))
                    ));
                    results.push(json!({ "file": file.name, "key": key, "pending": true,
                                         "passed": passed, "gate": report }));
                }
                Err(f) if f.code == 2 => {
                    all_pass = false;
                    human.push_str(&format!(
                        "  FAIL    {}: contracts {key}, which the server does not know ({})\n",
                        file.name, f.message
                    ));
                    results.push(json!({ "file": file.name, "key": key, "pending": true,
                                         "passed": false, "error": f.message }));
                }
                Err(f) => return Err(f),
            }
        }
    }
    if results.is_empty() {
        human.push_str(&format!(
            "no file in {} is headed `-- switchyard: contract KEY`\n",
            dir.display()
        ));
    }
    if applied.is_none() {
        human.push_str(
            "(no --target-database-url or --applied-list: every contract file counted as pending)\n",
        );
    }
    human.push_str(if all_pass {
        "gate passes"
    } else {
        "gate FAILS: do not apply the contract migrations"
    });
    Ok(Output {
        json: json!({ "passed": all_pass, "files": results }),
        human,
        code: if all_pass { 0 } else { 1 },
    })
}

/// Records what a just-applied migration file's header names.
async fn record_sql_file(
    client: &Client,
    path: &std::path::Path,
    change: Change,
) -> Result<Output, Failure> {
    let file = sqlfiles::read(path).map_err(Failure::usage)?;
    if file.tags.is_empty() {
        return Err(Failure::usage(format!(
            "{} has no `-- switchyard: expand KEY` or `-- switchyard: contract KEY` header",
            file.name
        )));
    }
    let mut recorded = Vec::new();
    let mut human = String::new();
    for (phase, key) in &file.tags {
        let event = match phase {
            Phase::Expand => "expand_applied",
            Phase::Contract => "contracted",
        };
        let version = client
            .expected_version(key, change.expected_version)
            .await?;
        let result = client
            .post(
                &format!("/v1/migrations/{}/events", path_segment(key)?),
                json!({ "event": event, "expected_version": version, "reason": change.reason }),
            )
            .await;
        match result {
            Ok(m) => {
                human.push_str(&format!("recorded {event} for {key} ({})\n", file.name));
                recorded.push(m);
            }
            // Re-running a pipeline step is fine: the fact is already recorded.
            Err(f) if already_recorded(*phase, f.body.as_ref()) => {
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
fn already_recorded(phase: Phase, body: Option<&Value>) -> bool {
    let current = body.map(|b| &b["current"]);
    match phase {
        Phase::Expand => current.is_some_and(|c| c["expand_applied"] == true),
        Phase::Contract => current.is_some_and(|c| c["stage"] == "contracted"),
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("           {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn gate_text(report: &Value) -> String {
    let mut out = format!(
        "{}: the contract gate {}\n",
        report["key"].as_str().unwrap_or(""),
        if report["passed"].as_bool() == Some(true) {
            "passes"
        } else {
            "fails"
        }
    );
    for c in report["checks"].as_array().into_iter().flatten() {
        let passed = c["passed"].as_bool() == Some(true);
        out.push_str(&format!(
            "  [{}] {}: {}\n",
            if passed { "ok" } else { "no" },
            c["id"].as_str().unwrap_or(""),
            c["evidence"].as_str().unwrap_or("")
        ));
        if !passed {
            out.push_str(&format!(
                "       → {}\n",
                c["remedy"].as_str().unwrap_or("")
            ));
        }
    }
    out.trim_end().to_owned()
}

fn lifecycle_text(v: &Value, days: u32) -> String {
    let mut out = String::new();
    let in_use = v["contracted_in_use"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let waiting = v["complete_not_contracted"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if in_use.is_empty() && waiting.is_empty() {
        return format!(
            "nothing stale: no contracted migration is still evaluated, and none has been at \
             complete 100% for over {days} days"
        );
    }
    for m in &in_use {
        let instances: Vec<String> = m["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                format!(
                    "{}/{}",
                    i["service"].as_str().unwrap_or(""),
                    i["instance_id"].as_str().unwrap_or("")
                )
            })
            .collect();
        out.push_str(&format!(
            "{}: contracted, still evaluated by {} (remove the flag from that code)\n",
            m["key"].as_str().unwrap_or(""),
            instances.join(", ")
        ));
    }
    for m in &waiting {
        out.push_str(&format!(
            "{}: complete at 100% since {}, not contracted (run the gate and the contract migration)\n",
            m["key"].as_str().unwrap_or(""),
            time(m["complete_since_ms"].as_i64())
        ));
    }
    out.trim_end().to_owned()
}

/// `backfill status`: once, or followed until the backfill ends (a progress bar in a terminal).
async fn backfill_status(client: &Client, key: &str, watch: bool) -> Result<Output, Failure> {
    use std::io::{IsTerminal, Write};
    let path = format!("/v1/migrations/{}/backfill", path_segment(key)?);
    let tty = std::io::stdout().is_terminal();
    loop {
        let p = client.get(&path).await?;
        let running = p["status"] == "running";
        if !watch || !running {
            if watch && tty {
                println!();
            }
            let human = progress_line(&p);
            return Ok(Output::ok(p, human));
        }
        if tty {
            print!("\r{:<100}", progress_line(&p));
        } else {
            println!("{}", progress_line(&p));
        }
        let _ = std::io::stdout().flush();
        // A display refresh, not a wait for a condition: the server is polled once a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn progress_line(p: &Value) -> String {
    let done = p["rows_done"].as_u64().unwrap_or(0);
    let total = p["rows_total_estimate"].as_u64().unwrap_or(0);
    let status = p["status"].as_str().unwrap_or("?");
    // An estimate of 0 means unknown: no bar.
    let bar = match (done.min(total) * 30).checked_div(total) {
        Some(filled) => format!(
            "[{}{}] {:>3}% ",
            "#".repeat(filled as usize),
            ".".repeat(30 - filled as usize),
            done.min(total) * 100 / total
        ),
        None => String::new(),
    };
    let rate = p["rate_rows_per_second"].as_f64().unwrap_or(0.0);
    // While paused, the last rate and ETA describe the time before the pause.
    let pace = if p["paused"] == true {
        String::new()
    } else {
        let eta = p["eta_seconds"]
            .as_u64()
            .map(|s| {
                format!(
                    ", ETA {}",
                    humantime::format_duration(Duration::from_secs(s))
                )
            })
            .unwrap_or_default();
        format!(", {rate:.0} rows/s{eta}")
    };
    format!(
        "{}: backfill {}{} {bar}{done} of ~{total} rows{pace}{}",
        p["key"].as_str().unwrap_or(""),
        status,
        if p["paused"] == true { " (paused)" } else { "" },
        p["runner"]
            .as_str()
            .filter(|r| !r.is_empty())
            .map(|r| format!(", runner {r}"))
            .unwrap_or_default(),
    )
}
