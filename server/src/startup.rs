//! Builds the server from its configuration, binds both listeners (port 0 works: the bound
//! addresses are exposed), and runs until a shutdown is requested. Shutdown ends watch streams
//! first, so both transports can drain their in-flight requests and stop; connections still
//! open after the drain period are closed.

use crate::app::{App, Clock};
use crate::auth::Authenticator;
use crate::conn::{ConnLimits, Connections, FdBudget, Tracked};
use crate::grpc::{GrpcApi, SwitchyardServer};
use crate::hub::{Hub, HubOptions};
use crate::observe::ObserveConfig;
use crate::store::Store;
use crate::tls::TlsFiles;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use switchyard_domain::gate::GatePolicy;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often telemetry past its retention is deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// The log's format (`serve --log-format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything `switchyard serve` is configured with.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeConfig {
    /// HTTP/JSON API, dashboard, health and metrics address.
    #[arg(long, env = "SWITCHYARD_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// gRPC address.
    #[arg(long, env = "SWITCHYARD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// `sqlite://PATH` (created if missing) or `postgres://…`.
    // The URL usually holds the database password: `--help` names the variable, never its
    // value (clap prints env values by default).
    #[arg(
        long,
        env = "SWITCHYARD_DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://switchyard.db"
    )]
    pub database_url: String,
    /// A client instance counts as live if it reported within this long (e.g. 30s).
    #[arg(long, env = "SWITCHYARD_CLIENT_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub client_ttl: Duration,
    /// How long per-minute client traffic rollups are kept (e.g. 14d).
    #[arg(long, env = "SWITCHYARD_TRAFFIC_RETENTION", default_value = "14d", value_parser = humantime::parse_duration)]
    pub traffic_retention: Duration,
    /// The shortest soak any migration may have (the contract gate's floor), e.g. 1h.
    #[arg(long, env = "SWITCHYARD_MIN_SOAK", default_value = "1h", value_parser = humantime::parse_duration)]
    pub min_soak: Duration,
    /// The largest share of new-shape operations that may fail during the soak for the gate
    /// to pass (0.001 = 0.1%).
    #[arg(
        long,
        env = "SWITCHYARD_GATE_MAX_NEW_ERROR_RATIO",
        default_value_t = 0.001
    )]
    pub gate_max_new_error_ratio: f64,
    /// First admin token, used only when the store has no token yet; if unset, one is
    /// generated and printed once.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// PEM certificate chain: serve both HTTP and gRPC over TLS (needs --tls-key).
    #[arg(long, env = "SWITCHYARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SWITCHYARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How often a replica checks the database for changes made through other replicas,
    /// besides Postgres notifications.
    #[arg(long, env = "SWITCHYARD_CHANGE_POLL_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub change_poll_interval: Duration,
    /// Listen for Postgres change notifications (turn off behind a pooler that breaks
    /// LISTEN, e.g. PgBouncer in transaction mode; replicas then rely on polling).
    #[arg(long, env = "SWITCHYARD_CHANGE_NOTIFICATIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub change_notifications: bool,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish before the remaining
    /// connections are closed (one client holding a half-sent request must not keep the
    /// server from stopping).
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_DRAIN", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_drain: Duration,
    /// How log lines are written to standard output: `text` for people (coloured only on a
    /// terminal, and never with NO_COLOR set), `json` for log shippers (one object per line).
    /// RUST_LOG chooses what is logged (default `info,sqlx=warn`).
    #[arg(
        long,
        env = "SWITCHYARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// How many live client instances one token may have registered: a heartbeat registering
    /// one more is refused, so one token (a leaked reader token, a crash-looping deployment with
    /// fresh instance ids) cannot swell the fleet the safety rules wait on.
    #[arg(
        long,
        env = "SWITCHYARD_MAX_INSTANCES_PER_TOKEN",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_instances_per_token: u32,
    /// How long a client may take to send a request's head (from connecting, for its first
    /// request) or a TLS handshake; a silent or slowloris connection is closed after it.
    #[arg(long, env = "SWITCHYARD_REQUEST_HEADER_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub request_header_timeout: Duration,
    /// How long a request body may take to arrive, whole; a slower one is answered 408.
    #[arg(long, env = "SWITCHYARD_REQUEST_BODY_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub request_body_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    #[arg(long, env = "SWITCHYARD_IDLE_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
    pub idle_timeout: Duration,
    /// Open connections per listener (HTTP, gRPC), not counting those carrying a watch stream.
    /// At the cap a new connection displaces the oldest idle one; it is refused only when every
    /// connection is in use. The process's open-file limit (raised to its hard limit at
    /// start-up) bounds all connections together as well.
    #[arg(
        long,
        env = "SWITCHYARD_MAX_CONNECTIONS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,
    /// Watch streams (gRPC Watch and SSE /v1/watch) open at once; one more is answered
    /// UNAVAILABLE / 503 with Retry-After.
    #[arg(
        long,
        env = "SWITCHYARD_MAX_WATCH_STREAMS",
        default_value_t = 20_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_watch_streams: u32,
    /// Threads serving gRPC, each with its own share of the connections (0: one per CPU
    /// core). A change reaching many watch streams is written by all of them at once.
    #[arg(
        long,
        env = "SWITCHYARD_GRPC_THREADS",
        default_value_t = 0,
        value_parser = clap::value_parser!(u16).range(0..=256)
    )]
    pub grpc_threads: u16,
    /// A database migrations may name as their target, `NAME=URL` (repeat the flag; in the
    /// environment, comma-separated). Connect with a read-only role: the server only reads
    /// statistics views. The URL is never stored, logged or returned.
    #[arg(
        long = "target-database",
        env = "SWITCHYARD_TARGET_DATABASES",
        hide_env_values = true,
        value_delimiter = ',',
        value_parser = TargetDatabase::parse
    )]
    pub target_databases: Vec<TargetDatabase>,
    /// How often the usage observer reads each target database's pg_stat_statements: the
    /// resolution of the gate's database evidence.
    #[arg(long, env = "SWITCHYARD_OBSERVE_INTERVAL", default_value = "60s", value_parser = positive_duration)]
    pub observe_interval: Duration,
    /// How often the usage observer looks in pg_stat_activity for who runs the statements that
    /// touch an old shape (a cheap query over the target's sessions).
    #[arg(long, env = "SWITCHYARD_OBSERVE_ACTIVITY_INTERVAL", default_value = "1s", value_parser = positive_duration)]
    pub observe_activity_interval: Duration,
    /// How often the replica driving migration plans looks at them (a step is taken at most
    /// this long after its hold ends); another replica takes over within five of these after
    /// the driving one stops.
    #[arg(long, env = "SWITCHYARD_PLAN_INTERVAL", default_value = "1s", value_parser = positive_duration)]
    pub plan_interval: Duration,
    /// Changes a second operator must approve before they are applied (four eyes): `none`,
    /// `default` (all of enter-live, ramp-complete, contract, step-back-from-complete), or a
    /// comma-separated list of them. An admin may bypass with a reason, recorded as such.
    #[arg(
        long,
        env = "SWITCHYARD_REQUIRE_APPROVAL",
        default_value = "none",
        value_name = "none|default|LIST",
        value_parser = parse_approval_policy
    )]
    pub require_approval: switchyard_domain::approval::ApprovalPolicy,
    /// How often the replica sending webhooks looks for due deliveries (an event waits at
    /// most this long before its first attempt).
    #[arg(long, env = "SWITCHYARD_WEBHOOK_INTERVAL", default_value = "1s", value_parser = positive_duration)]
    pub webhook_interval: Duration,
}

fn parse_approval_policy(raw: &str) -> Result<switchyard_domain::approval::ApprovalPolicy, String> {
    switchyard_domain::approval::ApprovalPolicy::parse(raw).map_err(|e| e.0)
}

/// A `--target-database NAME=URL`: a database the server may observe.
#[derive(Clone)]
pub struct TargetDatabase {
    pub name: switchyard_domain::TargetName,
    /// Holds a password, usually: shown only through [`redact`].
    pub url: String,
}

impl TargetDatabase {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (name, url) = raw
            .split_once('=')
            .ok_or("expected NAME=URL, e.g. main=postgres://observer@db:5432/app")?;
        let name = switchyard_domain::TargetName::parse(name.trim()).map_err(|e| e.0)?;
        let url = url.trim();
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(format!(
                "target database {name}: the URL must be postgres://… (only PostgreSQL is observed)"
            ));
        }
        Ok(Self {
            name,
            url: url.to_owned(),
        })
    }
}

impl std::fmt::Debug for TargetDatabase {
    /// The configuration is printed in logs and test failures: never with a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, redact(&self.url))
    }
}

/// A duration flag that must not be zero (a zero timeout would close every connection).
fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be longer than zero (e.g. 10s)".to_owned());
    }
    Ok(d)
}

impl Default for ServeConfig {
    /// The same defaults as the command line (checked by a test).
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8080".parse().expect("static address"),
            grpc_addr: "127.0.0.1:50051".parse().expect("static address"),
            database_url: "sqlite://switchyard.db".to_owned(),
            client_ttl: Duration::from_secs(30),
            traffic_retention: Duration::from_secs(14 * 24 * 3600),
            min_soak: Duration::from_secs(3600),
            gate_max_new_error_ratio: 0.001,
            admin_token: None,
            tls_cert: None,
            tls_key: None,
            change_poll_interval: Duration::from_secs(2),
            change_notifications: true,
            shutdown_drain: Duration::from_secs(10),
            log_format: LogFormat::Text,
            max_instances_per_token: 1000,
            request_header_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_watch_streams: 20_000,
            grpc_threads: 0,
            target_databases: Vec::new(),
            observe_interval: Duration::from_secs(60),
            observe_activity_interval: Duration::from_secs(1),
            plan_interval: Duration::from_secs(1),
            require_approval: Default::default(),
            webhook_interval: Duration::from_secs(1),
        }
    }
}

pub struct Server {
    /// Whether both listeners speak TLS.
    pub tls: bool,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub app: Arc<App>,
    /// The admin token generated on an empty store, to be shown once.
    pub generated_admin_token: Option<String>,
    shutdown: watch::Sender<bool>,
    shutdown_drain: Duration,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    pub async fn start(config: ServeConfig, clock: Clock) -> anyhow::Result<Server> {
        crate::metrics::handle();
        if !(0.0..=1.0).contains(&config.gate_max_new_error_ratio) {
            anyhow::bail!(
                "--gate-max-new-error-ratio {} is out of range: allowed 0 to 1",
                config.gate_max_new_error_ratio
            );
        }
        if config.min_soak > config.traffic_retention {
            anyhow::bail!(
                "--min-soak ({}) is longer than --traffic-retention ({}): the gate reads a \
                 soak's telemetry, so it must be retained at least that long",
                switchyard_domain::time::format_duration(config.min_soak),
                switchyard_domain::time::format_duration(config.traffic_retention)
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for target in &config.target_databases {
            if !names.insert(&target.name) {
                anyhow::bail!(
                    "--target-database {} is given twice: each name maps to one database",
                    target.name
                );
            }
        }
        // Read before anything else so a bad path fails start-up at once.
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles::read(cert, key)?),
            _ => None,
        };
        let store = Arc::new(
            Store::connect(&config.database_url)
                .await
                .with_context(|| {
                    format!("opening the store at {}", redact(&config.database_url))
                })?,
        );
        let hub = Hub::start(
            store.clone(),
            HubOptions {
                poll_interval: config.change_poll_interval,
                notifications: config.change_notifications,
                max_watches: config.max_watch_streams as usize,
            },
        )
        .await?;
        let app = Arc::new(App {
            auth: Authenticator::new(store.clone(), hub.revocations().clone()),
            store,
            hub,
            clock,
            client_ttl: config.client_ttl,
            traffic_retention: config.traffic_retention,
            max_instances_per_token: config.max_instances_per_token,
            target_names: config
                .target_databases
                .iter()
                .map(|t| t.name.clone())
                .collect(),
            observe: ObserveConfig {
                interval: config.observe_interval,
                activity_interval: config.observe_activity_interval,
            },
            approval_policy: config.require_approval.clone(),
            gate_policy: GatePolicy {
                min_soak_seconds: config.min_soak.as_secs(),
                max_new_error_ratio: config.gate_max_new_error_ratio,
            },
        });
        let generated_admin_token = app
            .bootstrap_admin(config.admin_token.as_deref())
            .await
            .map_err(|e| anyhow::anyhow!("creating the first admin token: {e}"))?;

        let http = bind(config.http_addr)
            .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
        let grpc = bind(config.grpc_addr)
            .with_context(|| format!("binding gRPC on {}", config.grpc_addr))?;
        let (http_addr, grpc_addr) = (http.local_addr()?, grpc.local_addr()?);
        let (shutdown, _) = watch::channel(false);

        // Both listeners share the process's file descriptors; each has its own cap.
        let budget = FdBudget::from_process_limit();
        let limits = ConnLimits {
            header_timeout: config.request_header_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections as usize,
        };
        tracing::info!(
            file_descriptors = budget.limit(),
            max_connections = config.max_connections,
            max_watch_streams = config.max_watch_streams,
            "connection limits"
        );
        let http_listener = crate::http::serve::Listener {
            tcp: http,
            tls: tls.as_ref().map(TlsFiles::acceptor).transpose()?,
            connections: Connections::new("http", limits, true, budget.clone()),
            body_timeout: config.request_body_timeout,
        };
        let router = crate::http::router(app.clone());
        let stop = shutdown.subscribe();
        let http_task = tokio::spawn(async move {
            crate::http::serve::serve(http_listener, router, stop)
                .await
                .context("HTTP server")
        });
        let grpc_connections = Connections::new("grpc", limits, false, budget);
        tokio::spawn(grpc_connections.clone().sweep_until(shutdown.subscribe()));

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<SwitchyardServer<GrpcApi>>().await;
        // Both reflection versions: v1 for current clients, v1alpha for the many (stock
        // grpcio-reflection, grpcurl builds) that speak only it; each built on first use.
        use crate::grpc::lazy::{self, Lazy};
        let reflection_v1 = Lazy::new(|| lazy::reflection().build_v1().expect("reflection v1"));
        let reflection_v1alpha = Lazy::new(|| {
            lazy::reflection()
                .build_v1alpha()
                .expect("reflection v1alpha")
        });
        let api = crate::grpc::EncodedWatch::new(
            SwitchyardServer::new(GrpcApi::new(app.clone()))
                .max_decoding_message_size(crate::app::MAX_BODY_BYTES),
            GrpcApi::new(app.clone()),
            crate::app::MAX_BODY_BYTES,
        );
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &tls {
            builder = builder
                .tls_config(tls.tonic_config())
                .context("configuring gRPC TLS")?;
        }
        let grpc_router = builder
            .layer(crate::grpc::timing::TimingLayer)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(api);
        // Each gRPC thread serves the connections handed to it, in turn.
        let threads = match config.grpc_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => usize::from(n),
        };
        let mut grpc_tasks = Vec::with_capacity(threads + 1);
        let mut handoffs = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (handoff, handed) = tokio::sync::mpsc::channel(HANDOFF_QUEUE);
            handoffs.push(handoff);
            let router = grpc_router.clone();
            let mut stop = shutdown.subscribe();
            grpc_tasks.push(spawn_grpc_thread(move || async move {
                router
                    .serve_with_incoming_shutdown(handed_over(handed), async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
                    .context("gRPC server")
            })?);
        }
        grpc_tasks.push(tokio::spawn(accept_grpc(
            grpc,
            grpc_connections,
            handoffs,
            shutdown.subscribe(),
        )));

        let mut stop = shutdown.subscribe();
        let pruner = app.clone();
        let prune_task = tokio::spawn(async move {
            loop {
                if let Err(e) = pruner.prune().await {
                    tracing::warn!(error = %e, "pruning old telemetry failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
            }
        });

        let mut tasks = vec![
            http_task,
            prune_task,
            crate::plans::spawn(app.clone(), config.plan_interval, shutdown.subscribe()),
            crate::webhooks::spawn(app.clone(), config.webhook_interval, shutdown.subscribe()),
        ];
        tasks.extend(grpc_tasks);
        tasks.extend(crate::observe::spawn(
            app.clone(),
            config
                .target_databases
                .iter()
                .map(|t| (t.name.clone(), t.url.clone()))
                .collect(),
            app.observe,
            shutdown.subscribe(),
        ));

        tracing::info!(%http_addr, %grpc_addr, tls = tls.is_some(), "switchyard serving");
        Ok(Server {
            tls: tls.is_some(),
            http_addr,
            grpc_addr,
            app,
            generated_admin_token,
            shutdown,
            shutdown_drain: config.shutdown_drain,
            tasks,
        })
    }

    /// Ends watch streams, lets in-flight requests finish for up to the drain period, then
    /// closes whatever connections remain, stops background tasks and closes the database pool.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.app.hub.shut_down();
        self.shutdown.send_replace(true);
        let deadline = tokio::time::Instant::now() + self.shutdown_drain;
        let mut cut = 0;
        for mut task in self.tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(joined) => joined??,
                Err(_) => {
                    // Stop waiting for the connections it still serves (a stalled upload, a
                    // half-sent request); they end with the process.
                    task.abort();
                    cut += 1;
                }
            }
        }
        if cut > 0 {
            tracing::warn!(
                drain = ?self.shutdown_drain,
                "connections still open after the drain period were closed"
            );
        }
        // Connections cut mid-request may still be returning theirs: the pool waits no longer
        // than the drain period for them either.
        if tokio::time::timeout(self.shutdown_drain, self.app.store.close())
            .await
            .is_err()
        {
            tracing::warn!("database connections still in use after the drain period were dropped");
        }
        Ok(())
    }
}

/// Runs one gRPC server on a thread of its own, on a current-thread runtime. There, a change
/// wakes every watch stream before any connection task runs, so each HTTP/2 connection writes
/// its streams' frames together: at 10,000 streams over 100 connections, a few hundred writes
/// per change rather than ~9,200 (see `hub::Feed` for the other half). The task returned ends with
/// the server; aborting it (the drain period is over) cuts the connections still open.
fn spawn_grpc_thread<F>(
    serve: impl FnOnce() -> F + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let (cut, cut_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("switchyard-grpc".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the gRPC runtime")
                .and_then(|runtime| {
                    let result = runtime.block_on(async move {
                        tokio::select! {
                            result = serve() => result,
                            // The task was aborted, or the server is gone.
                            _ = cut_rx => Ok(()),
                        }
                    });
                    // Drops the connections still open without waiting on them.
                    runtime.shutdown_background();
                    result
                });
            let _ = done_tx.send(result);
        })
        .context("starting the gRPC thread")?;
    Ok(tokio::spawn(async move {
        // Dropped when this task is aborted, which tells the thread to stop.
        let _cut = cut;
        done.await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the gRPC thread ended without a result")))
    }))
}

/// Connections the kernel may queue before `accept`: when many clients reconnect at once (a
/// fleet after a restart, a flood's sockets closed by the sweeper together), a short queue
/// drops SYNs and the dropped clients wait a full second to retry. The kernel caps it at
/// `net.core.somaxconn`.
const ACCEPT_BACKLOG: u32 = 4096;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted server can bind while old connections linger.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Accepts the gRPC listener's connections, registers them with its connection limits and hands
/// them to the gRPC threads in turn; ends at shutdown. A connection the sweeper closes fails
/// its next read, which ends it.
async fn accept_grpc(
    listener: TcpListener,
    connections: Arc<Connections>,
    threads: Vec<tokio::sync::mpsc::Sender<Handoff>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            accepted = async {
                connections.settled().await;
                listener.accept().await
            } => accepted,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        match accepted {
            Ok((socket, _peer)) => {
                let _ = socket.set_nodelay(true);
                // Refused: every connection is in use; dropping the socket closes it.
                let Some(admitted) = connections.admit() else {
                    continue;
                };
                // Out of the accepting runtime, to be registered with the serving thread's.
                let socket = match socket.into_std() {
                    Ok(socket) => socket,
                    Err(e) => {
                        tracing::warn!(error = %e, "handing over a gRPC connection failed");
                        continue;
                    }
                };
                let thread = &threads[next % threads.len()];
                next += 1;
                if thread.send((socket, admitted)).await.is_err() {
                    // That thread's server has ended: the server is shutting down.
                    return Ok(());
                }
            }
            Err(e) => {
                // Out of descriptors, typically: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a gRPC connection failed");
                tokio::time::sleep(crate::http::serve::ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// An accepted gRPC connection on its way to the thread that serves it.
type Handoff = (std::net::TcpStream, crate::conn::Admitted);

/// Accepted connections waiting for their thread; the acceptor waits when one is full.
const HANDOFF_QUEUE: usize = 64;

/// A gRPC thread's incoming connections: those the acceptor hands it, registered with its own
/// runtime, which then drives their reads and writes. Never yields an error (tonic would end
/// the server on one).
fn handed_over(
    mut handed: tokio::sync::mpsc::Receiver<Handoff>,
) -> impl futures::Stream<Item = std::io::Result<Tracked<tokio::net::TcpStream>>> {
    async_stream::stream! {
        while let Some((socket, admitted)) = handed.recv().await {
            match tokio::net::TcpStream::from_std(socket) {
                Ok(socket) => yield Ok(Tracked::new(socket, admitted).without_vectored_writes()),
                Err(e) => tracing::warn!(error = %e, "taking over a gRPC connection failed"),
            }
        }
    }
}

/// The database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_matches_the_command_line_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: super::ServeConfig,
        }
        let parsed = Cli::parse_from(["switchyard"]).config;
        let default = super::ServeConfig::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
