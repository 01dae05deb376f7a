//! The JSON bodies of the HTTP API, typed: what the server writes, what the CLI reads and the
//! client's snapshot file holds (the same JSON `GET /v1/snapshot` returns).
//!
//! These structs are the wire contract, kept apart from the domain's records so that a change
//! to a record cannot change the API by accident. Clients must not rely on the order of an
//! object's fields (JSON objects are unordered); fields added since the first release default
//! when absent, so that older files and servers still parse. Conversions into domain records validate through the
//! domain's own parse functions.

mod approvals;
mod migration;
mod names;
mod plans;
mod reports;
mod requests;
mod tokens;
mod vocabulary;
mod webhooks;

pub use approvals::*;
pub use migration::*;
pub use plans::*;
pub use reports::*;
pub use requests::*;
pub use tokens::*;
pub use vocabulary::*;
pub use webhooks::*;
