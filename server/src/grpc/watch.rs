//! `Watch` with each message encoded once for every watcher.
//!
//! tonic's generated service encodes every message for every stream: a change reaching 10,000
//! watchers would be converted to its protobuf type and encoded 10,000 times. [`EncodedWatch`]
//! wraps the generated service and serves the `Watch` path itself, with a codec whose messages
//! are already-encoded bytes: the first watcher to send a change encodes it into the change's
//! shared [`crate::hub::Encodings`], every other one writes the same bytes. Every other path
//! goes to the generated service unchanged.

use super::{GrpcApi, ok};
use crate::hub::WatchItem;
use bytes::{BufMut, Bytes};
use futures::{Stream, StreamExt};
use prost::Message;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use switchyard_proto::v1 as pb;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

/// The path the generated service would serve `Watch` on.
pub const WATCH_PATH: &str = "/switchyard.v1.Switchyard/Watch";

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// The generated service `S`, with `Watch` served from shared encodings.
#[derive(Clone)]
pub struct EncodedWatch<S> {
    inner: S,
    api: Arc<GrpcApi>,
    max_decoding_message_size: usize,
}

impl<S> EncodedWatch<S> {
    pub fn new(inner: S, api: GrpcApi, max_decoding_message_size: usize) -> Self {
        EncodedWatch {
            inner,
            api: Arc::new(api),
            max_decoding_message_size,
        }
    }
}

impl<S: NamedService> NamedService for EncodedWatch<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<axum::http::Request<B>> for EncodedWatch<S>
where
    S: tower::Service<
            axum::http::Request<B>,
            Response = axum::http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        if request.uri().path() != WATCH_PATH {
            return Box::pin(self.inner.call(request));
        }
        let api = self.api.clone();
        let max = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(SharedBytes::default())
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.server_streaming(Watch(api), request).await)
        })
    }
}

/// The `Watch` call: the caller's items as their shared encodings.
struct Watch(Arc<GrpcApi>);

type EncodedStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

impl tonic::server::ServerStreamingService<pb::WatchRequest> for Watch {
    type Response = Bytes;
    type ResponseStream = EncodedStream;
    type Future = BoxFuture<Response<EncodedStream>, Status>;

    fn call(&mut self, request: Request<pb::WatchRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move {
            let items = api.open_watch(request).await?;
            ok(
                "Watch",
                Box::pin(items.map(|item| item.map(|i| encoded(&i)))) as EncodedStream,
            )
        })
    }
}

/// `item` as a protobuf `WatchEvent`, encoded by the first watcher that sends it.
pub fn encoded(item: &WatchItem) -> Bytes {
    let encodings = match item {
        WatchItem::Snapshot(s) => &s.encoded,
        WatchItem::Change(p) => &p.encoded,
    };
    encodings.grpc(|| pb::WatchEvent::from(item.clone()).encode_to_vec().into())
}

/// Sends messages that are already encoded; reads `WatchRequest`s as tonic's prost codec does.
#[derive(Default)]
struct SharedBytes(tonic_prost::ProstCodec<pb::WatchEvent, pb::WatchRequest>);

impl Codec for SharedBytes {
    type Encode = Bytes;
    type Decode = pb::WatchRequest;
    type Encoder = BytesEncoder;
    type Decoder = <tonic_prost::ProstCodec<pb::WatchEvent, pb::WatchRequest> as Codec>::Decoder;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        self.0.decoder()
    }
}

struct BytesEncoder;

/// A watch stream's first encode buffer (see [`BytesEncoder::buffer_settings`]).
const ENCODE_BUFFER_BYTES: usize = 1024;

/// Encoded messages gathered before the buffer is handed on (tonic's default).
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    /// Each stream keeps its encode buffer for as long as it is open, so its first size is
    /// part of every watch's cost: tonic's default, 8 KiB, is 3 KiB more per watch at 10,000
    /// watches than this, which holds a typical change; a larger message (a snapshot) grows
    /// the buffer as it needs.
    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        tonic::codec::BufferSettings::new(ENCODE_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
    }

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // The frame's bytes are the stream's own (its header and length go before them), so
        // the shared encoding is copied in: one memcpy, no encoding, no allocation per watcher.
        dst.reserve(item.len());
        dst.put_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::hub::{Encodings, Published, WatchItem};
    use std::sync::Arc;
    use switchyard_domain::{Migration, MigrationKey, NewMigration, Version};

    #[test]
    fn a_change_is_encoded_once_and_shared_by_every_watcher() {
        let new = NewMigration::with_key(MigrationKey::parse("orders.split").unwrap());
        let change = Arc::new(Published {
            migration: Arc::new(Migration::create(new, 7, Version(3), 0)),
            at: std::time::Instant::now(),
            encoded: Encodings::default(),
        });
        // Two watchers' items: clones of the one broadcast change.
        let first = super::encoded(&WatchItem::Change(change.clone()));
        let second = super::encoded(&WatchItem::Change(change));
        assert_eq!(first, second);
        // The same buffer, not an equal copy: the second watcher encoded nothing.
        assert_eq!(first.as_ptr(), second.as_ptr());
    }
}
