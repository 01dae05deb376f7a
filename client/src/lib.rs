//! The Switchyard client: what an application links to follow its database migrations.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use switchyard_client::Client;
//!
//! let client = Client::builder("http://flags.internal:50051", "sy_…", "billing-api")
//!     .snapshot_file("/var/lib/billing-api/switchyard.json")
//!     .connect()
//!     .await?;
//!
//! // Evaluate locally: no network, no lock, no allocation.
//! let users = client.handle("users.username-to-handle");
//! let plan = users.plan("user-42");
//!
//! // Or let the migrator run the right reads and writes.
//! let migrator = client.migrator("users.username-to-handle");
//! let name: String = migrator
//!     .read(
//!         "user-42",
//!         || async { Ok::<_, std::io::Error>("old".to_owned()) },
//!         || async { Ok("new".to_owned()) },
//!     )
//!     .await?;
//! # let _ = (plan, name); Ok(()) }
//! ```
//!
//! A background task holds a gRPC watch stream to the server, applies snapshots in version order
//! (never an older one), acknowledges every version it applies, heartbeats, reports telemetry,
//! and reconnects with jittered backoff across the configured servers. While the server is
//! unreachable the client keeps serving its last state, indefinitely.
//!
//! # Layout
//! - `client`: [`Client`], [`ClientBuilder`].
//! - `handle`: [`MigrationHandle`], evaluation of one migration resolved once.
//! - `state`: what the background tasks keep current and handles read: the applied snapshot,
//!   [`Status`] and its [`Source`], the configuration.
//! - `slot`: per-migration evaluation state in atomics, and the lock-free name registry.
//! - `migrator`: [`Migrator`], the read/write runner (and why writes behave as they do, and
//!   which write to use); [`atomic`]: what a database driver provides for transactional writes.
//! - `logs`: the migrator's rate-limited mismatch and failure logs.
//! - `backfill`: [`BackfillRunner`], batched, checkpointed, pausable backfills.
//! - [`health`]: the database health signals a backfill yields to ([`health::HealthCheck`]).
//! - `telemetry`: sharded counters.
//! - `sync`: the background tasks (watch, acknowledgements, telemetry reports).
//! - `rpc`: calls to the servers in preference order, and the server's errors by their code.
//! - `snapshot_file`: the saved and bootstrap snapshot files.
//! - [`postgres`] (feature `postgres`): [`postgres::PgBackfill`], the backfill's batch function
//!   for a PostgreSQL table (short transactions, `SKIP LOCKED`, lock-timeout retries).

pub mod atomic;
mod backfill;
mod client;
mod handle;
pub mod health;
mod logs;
mod migrator;
#[cfg(feature = "openfeature")]
pub mod openfeature;
#[cfg(feature = "postgres")]
mod pg_health;
#[cfg(feature = "postgres")]
pub mod postgres;
mod rpc;
mod slot;
mod snapshot_file;
mod state;
mod sync;
mod telemetry;

pub use backfill::{BackfillError, BackfillOutcome, BackfillRunner, Batch};
pub use client::{Client, ClientBuilder, ClientError};
pub use handle::MigrationHandle;
pub use migrator::{Migrator, MigratorStats, OtherSide, SideStats, Written};
pub use snapshot_file::SnapshotFile;
pub use state::{Source, Status};
pub use switchyard_domain::{Plan, Side, Stage};
