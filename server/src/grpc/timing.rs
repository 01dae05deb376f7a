//! Times every gRPC call by method (`switchyard_grpc_request_duration_seconds`), as a tower
//! layer around the whole gRPC server, so calls refused before a handler runs are timed too.

use axum::http::Request;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

/// `/package.Service/Method` → `Method`, for the methods the server's protos declare. Any
/// other path (a client probing for methods) is timed as `other`: a label value per made-up
/// path would let clients grow the metric without bound.
static METHODS: LazyLock<HashMap<String, &'static str>> = LazyLock::new(|| {
    use prost::Message;
    let mut methods = HashMap::new();
    for set in [
        switchyard_proto::v1::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let name: &'static str = Box::leak(method.name().to_owned().into_boxed_str());
                    methods.insert(
                        format!("/{}.{}/{}", file.package(), service.name(), name),
                        name,
                    );
                }
            }
        }
    }
    methods
});

fn method_of(path: &str) -> &'static str {
    if path.starts_with("/grpc.reflection.") {
        return "ServerReflectionInfo";
    }
    METHODS.get(path).copied().unwrap_or("other")
}

#[derive(Clone, Copy, Debug, Default)]
pub struct TimingLayer;

impl<S> tower::Layer<S> for TimingLayer {
    type Service = Timed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timed { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Timed<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for Timed<S>
where
    S: tower::Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = method_of(request.uri().path());
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            crate::metrics::record_grpc_duration(method, started.elapsed());
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::method_of;

    #[test]
    fn declared_methods_are_named_and_others_are_one_label() {
        assert_eq!(
            method_of("/switchyard.v1.Switchyard/SetRollout"),
            "SetRollout"
        );
        assert_eq!(method_of("/grpc.health.v1.Health/Check"), "Check");
        assert_eq!(method_of("/switchyard.v1.Switchyard/NoSuchMethod"), "other");
        assert_eq!(method_of("/anything/else"), "other");
    }
}
