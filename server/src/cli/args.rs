//! The command line's arguments (clap). Names that have a home in the domain (events, roles)
//! are offered from it, never spelled here.

use super::api::Failure;
use super::sqlfiles::Tool;
use crate::app::DEFAULT_COMPLETE_FOR_DAYS;
use crate::startup::ServeConfig;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;
use switchyard_domain::{EventKind, Role};

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
    // Hidden in `--help` like the token: a URL may carry `user:password@`, which the HTTP
    // client sends as basic authentication.
    #[arg(
        long,
        env = "SWITCHYARD_SERVER",
        hide_env_values = true,
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// Bearer token.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM certificate to trust for an `https://` server: the CA that signed the server's
    /// certificate, or the server's self-signed certificate if it is not a CA (CA:FALSE). The
    /// --server host must be in the server certificate's subjectAltName.
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
    /// `-- switchyard: expand KEY` (records expand-applied; already recorded is fine),
    /// `-- switchyard: contract KEY` (records contracted, through the gate),
    /// `-- switchyard: retire KEY` (records retired, through the gate but its retire probation)
    /// or `-- switchyard: restore KEY` (records restored).
    Record {
        #[arg(required_unless_present = "sql_file")]
        key: Option<String>,
        #[arg(required_unless_present = "sql_file")]
        #[arg(value_parser = event_parser())]
        event: Option<EventKind>,
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
    /// one whose gate fails. A pending file headed `-- switchyard: retire KEY` needs every
    /// check but retire_probation (which starts with the retire); one headed
    /// `-- switchyard: restore KEY` always passes.
    Gate {
        #[arg(required_unless_present = "migrations_dir")]
        key: Option<String>,
        #[arg(long, conflicts_with = "key")]
        migrations_dir: Option<PathBuf>,
        /// The database the migrations are applied to (sqlite://… or postgres://…).
        // Usually holds the database password: `--help` names the variable, never its value.
        #[arg(
            long,
            env = "SWITCHYARD_TARGET_DATABASE_URL",
            hide_env_values = true,
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
        /// Fail the gate (exit 1) when `lint` finds a hazard in a pending file; without it the
        /// findings are only reported.
        #[arg(long, requires = "migrations_dir")]
        lint_fails: bool,
    },
    /// Print the SQL that retires a migration's old shape: each column and table of its
    /// `--drops` renamed to NAME__retired, in one transaction, headed
    /// `-- switchyard: retire KEY`. Only for a migration created with --retire-probation.
    ///
    /// Apply it once every gate check but retire_probation passes, then
    /// `record KEY retired`; the drop then waits the probation.
    RetireSql { key: String },
    /// Print the SQL that undoes `retire-sql` (the retired names given back), headed
    /// `-- switchyard: restore KEY`; apply it, then `record KEY restored`.
    RestoreSql { key: String },
    /// Report lock and compatibility hazards in migration SQL: `lint FILE|DIR...`. Exit 0 if
    /// none, 1 if any, 2 if a path cannot be read. Reads files only (no server).
    ///
    /// A comment `-- switchyard: allow SY0NN because <reason>` directly above a statement
    /// silences that code for that statement.
    Lint {
        /// SQL files, or folders whose `.sql` files are read (`.down.sql` skipped).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print SARIF 2.1.0 (for code-scanning tools) instead of text.
        #[arg(long, conflicts_with = "json")]
        sarif: bool,
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
    /// Show what the migration's target database ran against its old shape: each statement
    /// with its calls, when it was last seen, who ran it (role, application_name, address) and
    /// whether it blocks the gate. Exit 0 if the gate's database check passes, 1 if not.
    Usage {
        key: String,
        /// How far back to show evidence (default: a day, or the soak period if longer).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
    },
    /// Manage API tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
}

// Parsed once per process: the size of the largest variant costs nothing worth boxing.
#[allow(clippy::large_enum_variant)]
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
        /// The database it migrates: a name the server was started with
        /// (`serve --target-database NAME=URL`).
        #[arg(long)]
        target_database: Option<String>,
        /// An object the contract drops, `column:[schema.]table.column`, `table:[schema.]table`
        /// or `index:[schema.]index` (repeatable): the old shape the database must stop using.
        #[arg(long = "drops", value_name = "OBJECT")]
        old_shape: Vec<String>,
        /// The contract SQL file: the tables, columns and indexes it drops are added to the old
        /// shape (parsed, not pattern-matched; a statement it cannot parse is an error).
        #[arg(long, value_name = "FILE")]
        contract_sql: Option<std::path::PathBuf>,
        /// Retire before drop: once the gate passes, the old shape is renamed (`retire-sql`,
        /// then `record retired`), and the drop waits this long with nothing failing on it
        /// (e.g. `3d`). Needs --target-database and a column or table in the old shape.
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        retire_probation: Option<Duration>,
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
        #[arg(long, default_value_t = DEFAULT_COMPLETE_FOR_DAYS, requires = "stale")]
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
    /// Change its thresholds and pace while it runs (operator role); the runner applies them
    /// at its next batch.
    Set(super::backfill::SetArgs),
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
        #[arg(long, value_parser = role_parser())]
        role: Role,
    },
    List,
    Revoke {
        id: u64,
    },
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
    pub(super) fn require_view(&self, action: &str) -> Result<(), Failure> {
        if self.expected_version.is_none() && !self.latest {
            return Err(Failure::usage(format!(
                "{action} changes traffic: name the version you expect with --expected-version V \
                 (see `switchyard migration show`), or pass --latest to act on the current one"
            )));
        }
        Ok(())
    }
}

/// Event names as the command line spells them, with dashes (`expand-applied`).
static DASHED_EVENTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    EventKind::ALL
        .into_iter()
        .map(|e| e.as_str().replace('_', "-"))
        .collect()
});

/// Offers the dashed names in `--help` and accepts the API's spelling too.
fn event_parser() -> impl TypedValueParser<Value = EventKind> {
    let names = EventKind::ALL
        .into_iter()
        .zip(DASHED_EVENTS.iter())
        .map(|(e, dashed)| PossibleValue::new(dashed.as_str()).alias(e.as_str()));
    PossibleValuesParser::new(names).try_map(|name| name.parse::<EventKind>())
}

fn role_parser() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new(Role::ALL.map(Role::as_str)).try_map(|name| name.parse::<Role>())
}
