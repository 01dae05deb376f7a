//! The Switchyard wire contract, generated at build time from `proto/switchyard/v1/*.proto`.
//!
//! Only transport code (the server's gRPC layer, clients) depends on this crate; domain logic
//! works on the types of `switchyard-domain`, and [`convert`] is the edge between the two.
//! [`json`] holds the HTTP API's bodies, [`limits`] what one request may carry, [`status`] the
//! rich error model gRPC errors are sent in.

pub mod convert;
pub mod json;
pub mod limits;
pub mod status;

// Generated code: a `WatchEvent` holds a whole migration by value, which costs nothing that
// matters for a message built once per change.
#[allow(clippy::large_enum_variant)]
pub mod v1 {
    tonic::include_proto!("switchyard.v1");

    /// Encoded `FileDescriptorSet` of every Switchyard proto, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/switchyard_descriptor.bin"));
}
