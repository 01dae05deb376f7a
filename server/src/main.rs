//! The `switchyard` binary: the flag server (`serve`) and its command-line client.

use switchyard_server::cli::{self, Command};
use switchyard_server::startup::LogFormat;
use switchyard_server::startup::{Server, shutdown_signal};
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Serve(config) => serve(config).await,
            command => cli::run(cli.remote, command).await,
        }
    });
    std::process::exit(code);
}

async fn serve(config: switchyard_server::startup::ServeConfig) -> i32 {
    let config_log_format = config.log_format;
    init_logging(config_log_format);
    let server = match Server::start(config, switchyard_server::app::system_clock()).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return 3;
        }
    };
    let json_logs = config_log_format == LogFormat::Json;
    if let Some(token) = &server.generated_admin_token {
        // Printed once, on the store's first start; only its hash is kept. Never a log line:
        // with JSON logs it goes to standard error, out of the shipped stream.
        let notice = format!(
            "\nNo tokens existed, so an admin token was created. It is shown only now:\n\n    \
             {token}\n\nExport it for the CLI: export SWITCHYARD_TOKEN={token}\n"
        );
        if json_logs {
            eprintln!("{notice}");
        } else {
            println!("{notice}");
        }
    }
    // With JSON logs, the log line `startup` writes says the same.
    if !json_logs {
        let scheme = if server.tls { "https" } else { "http" };
        println!(
            "switchyard serving HTTP on {scheme}://{} and gRPC on {} ({})",
            server.http_addr,
            server.grpc_addr,
            if server.tls { "TLS" } else { "plaintext" }
        );
    }
    shutdown_signal().await;
    tracing::info!("shutting down: ending watch streams and draining requests");
    match server.shutdown().await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("shutdown: {e:#}");
            1
        }
    }
}

/// Logs on standard output: text for people (colour only on a terminal, never with NO_COLOR),
/// or one JSON object per line for log shippers.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => {
            let colour = std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            logs.with_ansi(colour).init()
        }
    }
}
