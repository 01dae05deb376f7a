//! What one request may carry. Part of the contract: the server refuses more, and the client
//! sizes its reports to stay under it.

/// Request bodies (HTTP) and messages (gRPC) above this are refused; no legitimate request
/// comes close.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Migrations one heartbeat may name.
pub const MAX_REPORTED_MIGRATIONS: usize = 1000;
/// Entries one telemetry report may carry.
pub const MAX_TELEMETRY_ENTRIES: usize = 5000;
