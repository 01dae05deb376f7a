//! What one request may carry. Part of the contract: the server refuses more, and the client
//! sizes its reports to stay under it.

/// Request bodies (HTTP) and messages (gRPC) above this are refused; no legitimate request
/// comes close.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Migrations one heartbeat may name.
pub const MAX_REPORTED_MIGRATIONS: usize = 1000;
/// Entries one telemetry report may carry.
pub const MAX_TELEMETRY_ENTRIES: usize = 5000;
/// Mismatch samples one telemetry entry may carry.
pub const MAX_MISMATCH_SAMPLES: usize = 20;
/// Characters of a mismatch sample's description (clients cut longer ones).
pub const MAX_MISMATCH_DESCRIPTION_CHARS: usize = 200;
/// Characters of a mismatch sample's entity key.
pub const MAX_ENTITY_KEY_CHARS: usize = 256;
