//! The `switchyard` binary: the flag server (`serve`) and its command-line client.

use clap::Parser;
use switchyard_server::cli::{self, Cli, Command};
use switchyard_server::startup::{Server, shutdown_signal};
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        restore_sigpipe();
    }
    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Serve(config) => serve(config).await,
            command => cli::run(cli.remote, command).await,
        }
    });
    std::process::exit(code);
}

/// A command piped into `head` or `grep -q` ends quietly when the reader goes away, as other
/// Unix tools do, instead of panicking on the failed write (Rust ignores SIGPIPE by default,
/// which the server wants and the CLI does not).
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called once at start-up, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

async fn serve(config: switchyard_server::startup::ServeConfig) -> i32 {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .init();
    let server = match Server::start(config, switchyard_server::app::system_clock()).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return 3;
        }
    };
    if let Some(token) = &server.generated_admin_token {
        // Printed once, on the store's first start; only its hash is kept.
        println!(
            "\nNo tokens existed, so an admin token was created. It is shown only now:\n\n    \
             {token}\n\nExport it for the CLI: export SWITCHYARD_TOKEN={token}\n"
        );
    }
    let scheme = if server.tls { "https" } else { "http" };
    println!(
        "switchyard serving HTTP on {scheme}://{} and gRPC on {} ({})",
        server.http_addr,
        server.grpc_addr,
        if server.tls { "TLS" } else { "plaintext" }
    );
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
