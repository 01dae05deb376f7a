//! gRPC services made on their first request.
//!
//! Reflection decodes its descriptor sets into lookup tables when it is built: 1.2 MB of the
//! server's idle memory for the two versions, though most servers never answer a reflection
//! request. Wrapped in [`Lazy`], a service is built by the first request that reaches it, once,
//! and shared by every connection afterwards.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tonic::server::NamedService;

/// Reflection (v1 and v1alpha) over this server's services and the health service, built on
/// first use.
pub fn reflection() -> (
    Lazy<impl ReflectionService + use<>>,
    Lazy<impl ReflectionService + use<>>,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(switchyard_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // The descriptor sets are compiled in: `reflection_builds` proves they build.
    let v1 = Lazy::new(move || builder().build_v1().expect("reflection v1 builds"));
    let v1alpha = Lazy::new(move || {
        builder()
            .build_v1alpha()
            .expect("reflection v1alpha builds")
    });
    (v1, v1alpha)
}

/// What tonic's router asks of a service, named for the reflection services' unnameable types.
pub trait ReflectionService:
    tower::Service<
        axum::http::Request<tonic::body::Body>,
        Response = axum::http::Response<tonic::body::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> ReflectionService for S where
    S: tower::Service<
            axum::http::Request<tonic::body::Body>,
            Response = axum::http::Response<tonic::body::Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A service built by the first request that reaches it.
pub struct Lazy<S> {
    made: Arc<OnceLock<S>>,
    make: Arc<dyn Fn() -> S + Send + Sync>,
}

impl<S> Clone for Lazy<S> {
    fn clone(&self) -> Self {
        Lazy {
            made: self.made.clone(),
            make: self.make.clone(),
        }
    }
}

impl<S> Lazy<S> {
    pub fn new(make: impl Fn() -> S + Send + Sync + 'static) -> Self {
        Lazy {
            made: Arc::default(),
            make: Arc::new(make),
        }
    }

    /// Whether a request has built it yet.
    pub fn is_made(&self) -> bool {
        self.made.get().is_some()
    }
}

impl<S: NamedService> NamedService for Lazy<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, R> tower::Service<R> for Lazy<S>
where
    S: tower::Service<R> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    /// Ready at once: the services wrapped here (tonic's generated servers) are always ready,
    /// and the one this call uses may not exist yet.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> S::Future {
        let mut service = self.made.get_or_init(|| (self.make)()).clone();
        service.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compiled-in descriptor sets build both versions (`reflection` builds them with
    /// `expect` on first use), and nothing is built before a request.
    #[test]
    fn reflection_builds() {
        let (v1, v1alpha) = reflection();
        assert!(!v1.is_made() && !v1alpha.is_made());
        let _ = (v1.make)();
        let _ = (v1alpha.make)();
    }
}
