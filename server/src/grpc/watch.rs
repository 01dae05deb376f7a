//! `Watch` with each message encoded once for every watcher.
//!
//! tonic's generated service encodes every message for every stream: a change reaching 10,000
//! watchers would be converted to its protobuf type and encoded 10,000 times, and each stream
//! would keep a buffer as large as the largest message it sent (a snapshot). [`EncodedWatch`]
//! wraps the generated service and serves the `Watch` path itself: tonic still reads the
//! request and answers a refusal, but an opened watch's response body is [`SharedFrames`],
//! which sends each message as its shared, already-framed bytes: the first watcher to send a
//! change frames it into the change's [`crate::hub::Encodings`], every other one sends the same
//! buffer. Every other path goes to the generated service unchanged.

use super::{GrpcApi, ok};
use crate::hub::WatchItem;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use switchyard_proto::v1 as pb;
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
        let opened = Arc::new(std::sync::Mutex::new(None));
        let watch = Watch {
            api: self.api.clone(),
            opened: opened.clone(),
        };
        let max = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                .apply_max_message_size_config(Some(max), None);
            let response = grpc.server_streaming(watch, request).await;
            let items = opened.lock().expect("watch slot poisoned").take();
            Ok(match items {
                // Opened: tonic's answer has the headers; its body (over no messages) gives way
                // to the shared frames.
                Some(items) => {
                    let (parts, _) = response.into_parts();
                    let body = tonic::body::Body::new(SharedFrames {
                        items,
                        ended: false,
                    });
                    axum::http::Response::from_parts(parts, body)
                }
                // Refused: tonic's answer carries the status.
                None => response,
            })
        })
    }
}

/// The `Watch` call: opens the caller's watch and leaves its items, as their shared frames, in
/// `opened` for [`EncodedWatch`] to send.
struct Watch {
    api: Arc<GrpcApi>,
    opened: Arc<std::sync::Mutex<Option<FrameStream>>>,
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

impl tonic::server::ServerStreamingService<pb::WatchRequest> for Watch {
    type Response = pb::WatchEvent;
    type ResponseStream = futures::stream::Empty<Result<pb::WatchEvent, Status>>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<pb::WatchRequest>) -> Self::Future {
        let api = self.api.clone();
        let opened = self.opened.clone();
        Box::pin(async move {
            let items = api.open_watch(request).await?;
            let frames = items.map(|item| item.map(|i| encoded(&i)));
            *opened.lock().expect("watch slot poisoned") = Some(Box::pin(frames));
            ok("Watch", futures::stream::empty())
        })
    }
}

/// A watch's response body: each message's shared frame as a DATA frame of its own (a
/// reference to the one buffer, not a copy), then the status in the trailers, as tonic ends a
/// stream: `OK` when the watch ends, or the error that ended it.
struct SharedFrames {
    items: FrameStream,
    ended: bool,
}

impl http_body::Body for SharedFrames {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let status = match std::task::ready!(self.items.as_mut().poll_next(cx)) {
            Some(Ok(frame)) => return Poll::Ready(Some(Ok(http_body::Frame::data(frame)))),
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        self.ended = true;
        let mut trailers = axum::http::HeaderMap::new();
        status.add_header(&mut trailers)?;
        Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

/// `item` as a gRPC message (the uncompressed flag, the length, the protobuf `WatchEvent`),
/// framed by the first watcher that sends it.
pub fn encoded(item: &WatchItem) -> Bytes {
    let encodings = match item {
        WatchItem::Snapshot(s) => &s.encoded,
        WatchItem::Change(p) => &p.encoded,
    };
    encodings.grpc(|| {
        let event = pb::WatchEvent::from(item.clone());
        let len = event.encoded_len();
        let mut frame = Vec::with_capacity(GRPC_HEADER_BYTES + len);
        frame.push(0);
        // A message is far below 4 GiB: the hub holds it in memory as one snapshot.
        frame.extend_from_slice(&(len as u32).to_be_bytes());
        event
            .encode(&mut frame)
            .expect("a Vec grows to hold the message");
        frame.into()
    })
}

/// A gRPC message's prefix: the compression flag and the length.
const GRPC_HEADER_BYTES: usize = 5;

#[cfg(test)]
mod tests {
    use crate::hub::{Encodings, Published, WatchItem};
    use std::sync::Arc;
    use switchyard_domain::{Migration, MigrationKey, NewMigration, Version};
    use switchyard_proto::v1 as pb;

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
        // A whole gRPC message: uncompressed, its length, then the event.
        assert_eq!(first[0], 0, "the compression flag");
        let len = u32::from_be_bytes(first[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, first.len() - 5);
        let event = <pb::WatchEvent as prost::Message>::decode(&first[5..]).unwrap();
        let Some(pb::watch_event::Event::Change(m)) = event.event else {
            panic!("a change was expected");
        };
        assert_eq!((m.key.as_str(), m.version), ("orders.split", 3));
    }
}
