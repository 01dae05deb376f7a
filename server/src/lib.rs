//! The Switchyard flag server: stores migrations and their traffic state, enforces the safety
//! rules, and serves them over HTTP/JSON and gRPC to clients, release managers and pipelines.
//! The `switchyard` binary (this crate's `main.rs`) is both the server and the CLI.
//!
//! # Layout
//! - [`store`]: SQLite/Postgres persistence; the only module that knows the server's database.
//! - [`hub`]: the in-memory snapshot, change following (LISTEN/NOTIFY) and watch fan-out.
//! - [`app`]: the operations, transport-independent; calls the domain's rules.
//! - [`auth`]: bearer tokens and the authenticated caller (roles and permissions are the
//!   domain's).
//! - [`error`]: the API error both transports map.
//! - [`http`] and [`grpc`]: the two transports; [`openapi`] describes the HTTP one. `http`
//!   also serves the web dashboard, whose HTML/CSS/JS are compiled in from `http/dashboard/`.
//! - [`startup`]: configuration, listeners, graceful shutdown; [`tls`] for both listeners;
//!   [`conn`] the connection limits (timeouts, caps, file descriptors) both listeners share.
//! - [`cli`]: the command-line client of the HTTP API.
//! - [`metrics`]: Prometheus counters and gauges.
//! - [`observe`]: the usage observer, reading each target database's statement statistics.
//! - [`plans`]: migration plans and the driver that takes their steps.
//! - [`approvals`]: four eyes, changes a second operator approves before they apply.
//! - [`webhooks`]: subscriptions to a migration's events, sent from a durable outbox.

// The OpenAPI document is one large `json!` literal.
#![recursion_limit = "256"]

pub mod app;
pub mod approvals;
pub mod auth;
pub mod cli;
pub mod conn;
pub mod error;
pub mod grpc;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod plans;
pub mod startup;
pub mod store;
pub mod tls;
pub mod webhooks;
