//! gRPC services made on their first request.
//!
//! Reflection decodes its descriptor sets into lookup tables when it is built: 1.2 MB of the
//! server's idle memory for the two versions, though most servers never answer a reflection
//! request. Wrapped in [`Lazy`], a service is built by the first request that reaches it, once,
//! and shared by every connection afterwards.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tonic::server::NamedService;

/// What reflection (v1 and v1alpha) describes: this server's services and the health service.
/// The sets are compiled in, so building from them cannot fail at run time (`reflection_builds`).
pub fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(switchyard_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::Service;

    /// The compiled-in descriptor sets build both versions (the server builds them with
    /// `expect` on first use).
    #[test]
    fn reflection_builds() {
        reflection().build_v1().unwrap();
        reflection().build_v1alpha().unwrap();
    }

    /// Nothing is built before a request; the first builds it, once, for every clone.
    #[tokio::test(flavor = "current_thread")]
    async fn a_lazy_service_is_built_once_by_its_first_request() {
        let builds = Arc::new(AtomicUsize::new(0));
        let counted = builds.clone();
        let mut service = Lazy::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            tower::service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n + 1) })
        });
        let mut other = service.clone();
        assert!(!service.is_made());
        assert_eq!(builds.load(Ordering::SeqCst), 0);
        assert_eq!(service.call(1).await.unwrap(), 2);
        assert_eq!(other.call(2).await.unwrap(), 3);
        assert!(other.is_made());
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }
}
