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
#[command(next_help_heading = "Connection")]
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
    /// Move the rollout front: `ramp KEY --percent 12.5`. A ramp to the front the migration is
    /// already at changes nothing (no new version, no audit record) and says so.
    Ramp {
        /// The migration's key.
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
        /// The migration's key.
        key: String,
        #[command(flatten)]
        change: Change,
    },
    /// Step back to the previous stage (needs the current one at 0%).
    Retreat {
        /// The migration's key.
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
        /// The migration's key.
        #[arg(required_unless_present = "sql_file")]
        key: Option<String>,
        /// What happened.
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
        /// The migration whose contract is to run.
        #[arg(required_unless_present = "migrations_dir")]
        key: Option<String>,
        /// The folder of migration files: every pending file headed `-- switchyard: contract`
        /// (or `retire` / `restore`) is checked.
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
    RetireSql {
        /// The migration's key.
        key: String,
    },
    /// Print the SQL that undoes `retire-sql` (the retired names given back), headed
    /// `-- switchyard: restore KEY`; apply it, then `record KEY restored`.
    RestoreSql {
        /// The migration's key.
        key: String,
    },
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
        /// The migration's key.
        key: String,
        /// How many entries (1 to 500).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Show entries older than this id (for paging).
        #[arg(long)]
        before: Option<u64>,
    },
    /// Ask the server what an operation on an entity should do.
    Decide {
        /// The migration's key.
        key: String,
        /// The entity key; omit for an operation without one.
        #[arg(long)]
        entity: Option<String>,
    },
    /// List client instances seen in the last hour.
    Instances {
        /// The instances the rules count for this migration: every one (rules 3 and 5 wait on
        /// each live instance), with whether its heartbeats name the migration (it evaluates
        /// it or runs its backfill).
        #[arg(long)]
        migration: Option<String>,
    },
    /// Show what clients report for a migration, per minute: reads and writes per side,
    /// errors, latency, shadow comparisons and mismatches.
    Traffic {
        /// The migration's key.
        key: String,
        /// How many minutes back.
        #[arg(long, default_value_t = 15)]
        minutes: u32,
    },
    /// Show what the migration's target database ran against its old shape: each statement
    /// with its calls, when it was last seen, who ran it (role, application_name, address) and
    /// whether it blocks the gate. Exit 0 if the gate's database check passes, 1 if not.
    Usage {
        /// The migration's key.
        key: String,
        /// How far back to show evidence (default: a day, or the soak period if longer).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
    },
    /// List the entities whose shadow reads differed (as clients sampled them, with what the
    /// application's comparison said), most recently seen first: the ones to repair, e.g. by
    /// re-running the backfill's statement for these keys.
    Mismatches {
        /// The migration's key.
        key: String,
        /// How many entities (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print only the entity keys, one per line (for a repair script).
        #[arg(long)]
        keys_only: bool,
    },
    /// A migration's plan: the rollout steps it takes by itself, each held a minimum time, made
    /// through the safety rules in the name of the token that set it.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Changes waiting for a second operator's approval (four eyes): list, show, approve,
    /// reject. A change is filed with `--request-approval` on ramp, advance, retreat or record.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Webhooks: POST a migration's events to a URL, signed, at least once (operator role):
    /// add, list, test, deliveries, remove.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Manage API tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print a shell completion script: `source <(switchyard completions bash)`, or save it
    /// where your shell loads completions (zsh: a file `_switchyard` on `$fpath`).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) for `man -l -`, or write one page per command into a
    /// folder (`switchyard.1`, `switchyard-ramp.1`, …) for a MANPATH.
    Man {
        /// Write every command's page into this folder instead of printing the main page.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// Commands that never talk to a server, and the connection options each must not be offered
/// (`lint` keeps `--json`). The options are global for every other command, so that
/// `switchyard --server URL ramp …` and `switchyard ramp … --server URL` both work.
const LOCAL_COMMANDS: [(&str, &[&str]); 4] = [
    ("serve", &["server", "token", "tls_ca", "json"]),
    ("lint", &["server", "token", "tls_ca"]),
    ("completions", &["server", "token", "tls_ca", "json"]),
    ("man", &["server", "token", "tls_ca", "json"]),
];

/// The command line's parser: the derived one, with the client's connection options hidden
/// from the commands that never talk to a server (their help does not list them).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    let connection: Vec<clap::Arg> = cli
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    for (name, hidden) in LOCAL_COMMANDS {
        // A local argument with the global's id stops clap from propagating the global
        // there; it keeps the global's type, so parsing the rest is unchanged.
        let standins: Vec<clap::Arg> = connection
            .iter()
            .filter(|a| hidden.contains(&a.get_id().as_str()))
            .map(|a| {
                a.clone()
                    .global(false)
                    .hide(true)
                    .env(None::<&'static str>)
                    .default_value(None::<&'static str>)
            })
            .collect();
        cli = cli.mut_subcommand(name, |sub| sub.args(standins));
    }
    cli
}

/// Parses the process's arguments, exiting with clap's usage error (exit code 2) when they are
/// wrong, including a connection option given to a command that never uses it.
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    use clap::parser::ValueSource;
    let mut parser = command();
    let matches = parser.get_matches_mut();
    if let Some((name, sub)) = matches.subcommand() {
        let given = LOCAL_COMMANDS
            .iter()
            .find(|(local, _)| *local == name)
            .and_then(|(_, hidden)| {
                hidden
                    .iter()
                    .find(|id| sub.value_source(id) == Some(ValueSource::CommandLine))
            });
        if let Some(id) = given {
            let local = parser
                .find_subcommand_mut(name)
                .expect("the matched subcommand exists");
            local
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "--{} is for the commands that talk to a Switchyard server; \
                         `switchyard {name}` does not take it",
                        id.replace('_', "-")
                    ),
                )
                .exit();
        }
    }
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut parser).exit())
}

// Parsed once per process: the size of the largest variant costs nothing worth boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum MigrationCommand {
    /// Create a migration at `off` (every entity on the old shape).
    Create {
        /// Its key: lowercase letters, digits, `.`, `_` and `-` (e.g. `orders.split-shipments`).
        key: String,
        /// What it changes and why, for the people who ramp it.
        #[arg(long, default_value = "")]
        description: String,
        /// Who to ask about it (a team or a person).
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
        /// Why (required; kept in the audit log).
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
    /// Show a migration: its front, backfill, soak, expected services and what it drops.
    Show {
        /// The migration's key.
        key: String,
    },
    /// List migrations; `--stale` lists those needing attention instead: contracted but still
    /// evaluated by live clients (code to clean up), and at complete 100% for longer than
    /// `--days` without being contracted.
    List {
        /// List the migrations needing attention instead of every migration.
        #[arg(long)]
        stale: bool,
        /// With --stale: days at complete 100% after which an uncontracted migration is listed.
        #[arg(long, default_value_t = DEFAULT_COMPLETE_FOR_DAYS, requires = "stale")]
        days: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum BackfillCommand {
    /// Rows done, estimated total, rate and ETA; `--watch` follows it with a progress bar.
    Status {
        /// The migration's key.
        key: String,
        /// Follow it until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Pause it: its runner stops after the batch in flight and waits.
    Pause {
        /// The migration's key.
        key: String,
        #[command(flatten)]
        change: Change,
    },
    /// Resume a paused backfill from its checkpoint.
    Resume {
        /// The migration's key.
        key: String,
        #[command(flatten)]
        change: Change,
    },
    /// Change its thresholds and pace while it runs (operator role); the runner applies them
    /// at its next batch.
    Set(super::backfill::SetArgs),
    /// Stop the backfill and forget its checkpoint (it can be started again).
    Cancel {
        /// The migration's key.
        key: String,
        #[command(flatten)]
        change: Change,
    },
}

#[derive(Subcommand, Debug)]
pub enum PlanCommand {
    /// Set or replace a migration's plan (operator role):
    /// `plan set KEY --stage dual_write=1,25,100 --stage shadow=100 --stage live=5,50,100 --hold 1h`.
    /// Every stage but the last advances after its last step (which must be 100%); the last
    /// stops there. A manual ramp, advance or step back pauses the plan.
    Set {
        /// The migration's key.
        key: String,
        /// A stage and its steps in percent, in order: `live=5,25,50,100`. Repeat for
        /// consecutive stages, in stage order.
        #[arg(
            long = "stage",
            value_name = "STAGE=P1,P2,…",
            required_unless_present_any = ["file", "template"]
        )]
        stages: Vec<String>,
        /// Start from this template (`plan template list`); each --stage given replaces the
        /// template's stage of that name, and --window its window.
        #[arg(long, value_name = "NAME", conflicts_with = "file")]
        template: Option<String>,
        /// How long each step is held before the next (e.g. 30m, 1h); counted from the
        /// migration's last change.
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "file")]
        hold: Option<Duration>,
        /// Advancing out of this stage waits for a second operator's approval (the plan files
        /// the request: `approvals list`). Repeat for several stages.
        #[arg(long, value_name = "STAGE", conflicts_with = "file")]
        approve_advance: Vec<String>,
        /// Take no step before this UTC time (e.g. 2026-12-03T09:00:00Z): a scheduled change.
        #[arg(long, value_name = "TIME", conflicts_with = "file")]
        at: Option<String>,
        /// Take steps only within these hours, in a named time zone:
        /// `"mon-fri 09:00-16:00 Europe/Berlin"` (holds count outside them too).
        #[arg(long, value_name = "DAYS HOURS ZONE")]
        window: Option<String>,
        #[command(flatten)]
        guardrails: super::plan::GuardrailArgs,
        /// The plan as JSON, the API's body without its reason (per stage its steps with
        /// rollout_bp and hold_seconds, and then: advance or stop), instead of --stage.
        #[arg(long, value_name = "FILE", conflicts_with = "stages")]
        file: Option<PathBuf>,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// Show a migration's plan: its steps, whether it runs, and what it does next and when.
    Show {
        /// The migration's key.
        key: String,
    },
    /// Pause a running plan: no step is taken until it is resumed.
    Pause {
        /// The migration's key.
        key: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// Resume a paused plan from wherever the migration's front is now.
    Resume {
        /// The migration's key.
        key: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// Named plans to start migrations from: `plan template set|list|remove`.
    #[command(subcommand)]
    Template(TemplateCommand),
}

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Subscribe a URL; prints the signing secret, shown this once.
    Add {
        /// Where to POST the events (http:// or https://).
        url: String,
        /// An event type to send: change, plan_step, plan_halt, approval_request, backfill,
        /// gate_pass (repeat, or comma-separated).
        #[arg(
            long = "event",
            value_name = "TYPE",
            value_delimiter = ',',
            required = true
        )]
        events: Vec<String>,
        /// Only this migration's events (a key, or a prefix such as orders.*; repeat);
        /// default every migration.
        #[arg(long = "migration", value_name = "KEY")]
        migrations: Vec<String>,
        /// json (the event as it is) or slack (a Slack incoming webhook's {"text": …}).
        #[arg(long, default_value = "json", value_parser = ["json", "slack"])]
        format: String,
    },
    /// The subscriptions (without their secrets).
    List,
    /// Send a test event to one subscription.
    Test {
        /// The subscription's number.
        id: u64,
    },
    /// A subscription's delivery log, newest first: status, attempts, last error.
    Deliveries {
        /// The subscription's number.
        id: u64,
        /// At most this many (1 to 500).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Remove a subscription: nothing more is sent to it.
    Remove {
        /// The subscription's number.
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// The requests waiting for approval, newest first (with --all, decided ones too).
    List {
        /// Also the applied, rejected, withdrawn and stale ones.
        #[arg(long)]
        all: bool,
        /// Only this migration's.
        #[arg(long, value_name = "KEY")]
        migration: Option<String>,
    },
    /// One request: the change, who asked, and where it stands.
    Show {
        /// The request's number.
        id: u64,
    },
    /// Approve a request another token filed: the change is applied through the safety rules
    /// at the version it was asked at (refused as stale if the migration changed since).
    Approve {
        /// The request's number.
        id: u64,
        /// Why (required; kept in the audit log beside the requester's).
        #[arg(long)]
        reason: String,
    },
    /// Reject a request (your own: withdraw it). A plan's request rejected pauses the plan.
    Reject {
        /// The request's number.
        id: u64,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TemplateCommand {
    /// Set or replace a template (operator role):
    /// `plan template set standard-rename --stage dual_write=1,25,100 … --hold 1h`.
    /// Migrations already started from it keep their own copy.
    Set {
        /// Its name: a-z, 0-9, '.', '_' and '-'.
        name: String,
        /// A stage and its steps in percent, as for `plan set` (repeat, in stage order).
        #[arg(long = "stage", value_name = "STAGE=P1,P2,…", required = true)]
        stages: Vec<String>,
        /// How long each step is held before the next.
        #[arg(long, value_parser = humantime::parse_duration)]
        hold: Option<Duration>,
        /// Advancing out of this stage waits for a second operator's approval. Repeat for
        /// several stages.
        #[arg(long, value_name = "STAGE")]
        approve_advance: Vec<String>,
        /// Take steps only within these hours: `"mon-fri 09:00-16:00 Europe/Berlin"`.
        #[arg(long, value_name = "DAYS HOURS ZONE")]
        window: Option<String>,
        /// What it is for, for the people choosing one.
        #[arg(long, default_value = "")]
        description: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// List the templates.
    List,
    /// Remove a template (migrations started from it keep their plans).
    Remove {
        /// The template's name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        /// A name to know it by (unique; shown in the audit log).
        name: String,
        /// Its role: reader for clients, backfill for backfill runners, gate for deploy
        /// pipelines, operator for release managers, admin for everything (tokens too).
        #[arg(long, value_parser = role_parser())]
        role: Role,
        /// Limit it to these migrations: a key (orders.split-shipments) or a key prefix ending
        /// in '*' (orders.*, quoted for the shell). Repeat or separate with commas. Without it,
        /// every migration. Admin tokens cannot be scoped.
        #[arg(long, value_delimiter = ',')]
        scope: Vec<String>,
    },
    /// List every token, revoked ones too.
    List,
    /// Revoke a token: refused from the next request, its open watch streams ended.
    Revoke {
        /// The token's id (from `token list`).
        id: u64,
    },
}

// What every mutating command takes. (A `//` comment: a doc comment here would become the
// `about` of every command that flattens it without its own.)
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
    /// File the change for a second operator's approval instead of applying it, where the
    /// server requires one (four eyes); prints the request's number.
    #[arg(long, conflicts_with = "bypass_approval")]
    pub request_approval: bool,
    /// Apply a change the server requires approval for without it (admins only; the audit
    /// record says so, with the reason).
    #[arg(long)]
    pub bypass_approval: bool,
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
