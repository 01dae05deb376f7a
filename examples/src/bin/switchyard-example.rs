//! The example services: `switchyard-example users|orders|accounts|shipping seed|run|backfill`.
//!
//! - `seed --rows N` creates nothing: apply `0001_*.sql` first; it fills the table in the old
//!   shape.
//! - `run` is the service: workers reading, updating and inserting through the migrator, a
//!   line of statistics every few seconds, the per-phase report (phase = the stage the
//!   migration's front is at) on Ctrl-C.
//! - `backfill` runs (or resumes) the migration's backfill and exits when it completes.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sqlx::postgres::PgPoolOptions;
use std::sync::Arc;
use std::time::Duration;
use switchyard_client::postgres::PgBackfill;
use switchyard_client::{BackfillOutcome, Client};
use switchyard_examples::Entities;
use switchyard_examples::accounts::{self, Accounts};
use switchyard_examples::load::{Load, LoadConfig};
use switchyard_examples::orders::{self, Orders};
use switchyard_examples::shipments::{self, Shipping};
use switchyard_examples::users::{self, Users};

#[derive(Parser)]
#[command(about = "Example services migrated with Switchyard")]
struct Cli {
    /// Which example.
    #[arg(value_enum)]
    example: Example,
    #[command(subcommand)]
    command: Command,
    /// The application's database.
    // Usually holds the database password: `--help` names the variable, never its value.
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    /// The Switchyard server's gRPC address.
    #[arg(
        long,
        env = "SWITCHYARD_GRPC",
        global = true,
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    #[arg(
        long,
        env = "SWITCHYARD_TOKEN",
        global = true,
        hide_env_values = true,
        default_value = ""
    )]
    token: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Example {
    /// users.username → users.handle
    Users,
    /// orders.amount (float) → orders.amount_exact numeric(10,2)
    Orders,
    /// accounts.settings->>'locale' (JSON) → accounts.locale text NOT NULL
    Accounts,
    /// orders.ship_address → a shipments table, linked both ways
    Shipping,
}

#[derive(Subcommand)]
enum Command {
    /// Fill the (created, empty) table with rows in the old shape.
    Seed {
        #[arg(long, default_value_t = 100_000)]
        rows: i64,
    },
    /// Run the service: load through the migrator, statistics as it goes.
    Run {
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Rows the seed created (the workers read and update those, and what they insert).
        #[arg(long, default_value_t = 100_000)]
        rows: i64,
        /// Each worker's pause between operations, e.g. 2ms.
        #[arg(long, default_value = "2ms", value_parser = humantime_ms)]
        pause: Duration,
    },
    /// Run (or resume) the backfill; exits when it completes or is cancelled.
    Backfill {
        #[arg(long, default_value_t = 1_000)]
        batch_size: u64,
        /// At most this many rows per second.
        #[arg(long)]
        max_rows_per_second: Option<f64>,
    },
}

fn humantime_ms(s: &str) -> Result<Duration, String> {
    let ms = s.strip_suffix("ms").ok_or("give milliseconds, e.g. 2ms")?;
    ms.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("{s}: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect(&cli.database_url)
        .await
        .with_context(|| format!("connecting to {}", cli.database_url))?;
    let (key, service) = match cli.example {
        Example::Users => (users::MIGRATION, "users-api"),
        Example::Orders => (orders::MIGRATION, "orders-api"),
        Example::Accounts => (accounts::MIGRATION, "accounts-api"),
        Example::Shipping => (shipments::MIGRATION, "shipping-api"),
    };
    if let Command::Seed { rows } = cli.command {
        match cli.example {
            Example::Users => users::seed(&pool, rows).await?,
            Example::Orders => orders::seed(&pool, rows).await?,
            Example::Accounts => accounts::seed(&pool, rows).await?,
            Example::Shipping => shipments::seed(&pool, rows).await?,
        }
        println!("seeded {rows} rows");
        return Ok(());
    }
    let client = Client::builder(cli.server.as_str(), cli.token.as_str(), service)
        .connect()
        .await
        .with_context(|| format!("connecting to the Switchyard server at {}", cli.server))?;
    let result = match cli.command {
        Command::Seed { .. } => unreachable!("handled above"),
        Command::Run {
            workers,
            rows,
            pause,
        } => {
            let config = LoadConfig {
                workers,
                seeded_rows: rows,
                pause,
                ..LoadConfig::default()
            };
            match cli.example {
                Example::Users => {
                    let users = Users::new(pool.clone(), client.migrator(key));
                    run(&client, key, Arc::new(users), config).await
                }
                Example::Orders => {
                    let orders = Orders::new(pool.clone(), client.migrator(key));
                    run(&client, key, Arc::new(orders), config).await
                }
                Example::Accounts => {
                    let accounts = Accounts::new(pool.clone(), client.migrator(key));
                    run(&client, key, Arc::new(accounts), config).await
                }
                Example::Shipping => {
                    let shipping = Shipping::new(pool.clone(), client.migrator(key));
                    run(&client, key, Arc::new(shipping), config).await
                }
            }
        }
        Command::Backfill {
            batch_size,
            max_rows_per_second,
        } => {
            let table = match cli.example {
                Example::Users => users::backfill(pool.clone()),
                Example::Orders => orders::backfill(pool.clone()),
                Example::Accounts => accounts::backfill(pool.clone()),
                Example::Shipping => shipments::backfill(pool.clone()),
            };
            backfill(&client, key, &table, batch_size, max_rows_per_second).await
        }
    };
    // Say goodbye, so the server stops counting this instance as live right away (a killed
    // process is forgotten after the client TTL instead).
    client.shutdown().await;
    result
}

/// The service: load until Ctrl-C, a statistics line every 5 s, the report at the end.
async fn run<E: Entities>(
    client: &Client,
    key: &str,
    entities: Arc<E>,
    config: LoadConfig,
) -> anyhow::Result<()> {
    let phase = || client.handle(key).stage_without_entity().to_string();
    let load = Load::start(entities, config, &phase());
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                load.set_phase(&phase());
                let total = load.stats().total();
                println!(
                    "{key} at {}: {} ops, {} failed, {} wrong reads, p99 {:.2} ms",
                    phase(), total.operations(), total.failed, total.wrong_reads,
                    total.percentile_ms(0.99)
                );
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let finished = load.finish().await;
    println!("\n{}", finished.stats.report());
    Ok(())
}

async fn backfill(
    client: &Client,
    key: &str,
    table: &PgBackfill,
    batch_size: u64,
    max_rows_per_second: Option<f64>,
) -> anyhow::Result<()> {
    let mut runner = client
        .backfill(key)
        .batch_size(batch_size)
        .total_estimate(table.estimate_rows().await?);
    if let Some(rate) = max_rows_per_second {
        runner = runner.max_rows_per_second(rate);
    }
    match runner
        .run(|cursor, limit| table.batch(cursor, limit))
        .await?
    {
        BackfillOutcome::Completed { rows } => println!("backfill complete: {rows} rows"),
        BackfillOutcome::Cancelled { rows } => println!("backfill cancelled after {rows} rows"),
    }
    Ok(())
}
