//! The HTTP listener: accepts connections, registers each with the connection limits
//! (`crate::conn`), and serves it with hyper (HTTP/1.1, and HTTP/2 with prior knowledge on
//! plaintext). Written out rather than `axum::serve`, which has no timeouts and no cap: it is
//! where a request's body gets its deadline and a connection learns it is carrying a request.

use super::Api;
use crate::conn::{Admitted, ConnHandle, Connections, RequestGuard, Tracked};
use crate::hub::stopped;
use axum::body::{Body, Bytes, HttpBody};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long to wait before accepting again after `accept` failed (out of descriptors,
/// typically): long enough not to spin, short enough that a freed descriptor is used soon.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a client refused for lack of room reads before the socket closes (plaintext only:
/// on TLS nothing can be said before a handshake).
static FULL_RESPONSE: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let body = r#"{"code":"unavailable","message":"the server has no room for another connection; retry shortly"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub connections: Arc<Connections>,
    pub body_timeout: Duration,
}

/// Serves until `stop` turns true, then stops accepting and lets each connection finish its
/// requests (the caller bounds how long by aborting this task, which drops every connection).
pub async fn serve(
    listener: Listener,
    router: Api,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Listener {
        tcp,
        tls,
        connections,
        body_timeout,
    } = listener;
    let mut tasks = JoinSet::new();
    tasks.spawn(connections.clone().sweep_until(stop.clone()));
    let mut stopping = stop.clone();
    loop {
        tokio::select! {
            // Accepting pauses while displaced connections still hold their descriptors.
            accepted = async {
                connections.settled().await;
                tcp.accept().await
            } => match accepted {
                Ok((socket, _peer)) => {
                    let _ = socket.set_nodelay(true);
                    let Some(admitted) = connections.admit() else {
                        if tls.is_none() {
                            // Best effort: a socket just accepted has room for this.
                            let _ = socket.try_write(&FULL_RESPONSE);
                        }
                        continue;
                    };
                    let one = Connection {
                        router: router.clone(),
                        body_timeout,
                        stop: stop.clone(),
                    };
                    tasks.spawn(one.run(socket, admitted, tls.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reaps finished connections so the set does not grow with every one served.
            Some(_) = tasks.join_next() => {}
            _ = stopped(&mut stopping) => break,
        }
    }
    drop(tcp);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

struct Connection {
    router: Api,
    body_timeout: Duration,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(self, socket: TcpStream, admitted: Admitted, tls: Option<TlsAcceptor>) {
        let io = Tracked::new(socket, admitted);
        let handle = io.handle();
        match tls {
            None => self.drive(io, handle).await,
            // The sweeper bounds the handshake like a request's head: its socket fails once
            // the header timeout passes.
            Some(acceptor) => match acceptor.accept(io).await {
                Ok(stream) => self.drive(stream, handle).await,
                Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
            },
        }
    }

    async fn drive<I>(mut self, io: I, handle: ConnHandle)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = PerConnection {
            router: self.router.clone(),
            handle,
            body_timeout: self.body_timeout,
        };
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::trace!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stopped(&mut self.stop), if !draining => {
                    // Finishes the request in progress, closes the connection after it.
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The router as one connection's service: marks the connection busy for each request until
/// its response has been written, gives the request body its deadline, and lets handlers reach
/// the connection ([`connection`]: a watch marks it as carrying a stream).
#[derive(Clone)]
struct PerConnection {
    router: Api,
    handle: ConnHandle,
    body_timeout: Duration,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<axum::response::Response, Infallible>> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for PerConnection {
    type Response = axum::response::Response;
    type Error = Infallible;
    // Boxed: hyper keeps one in-flight future per connection for the connection's life, so an
    // unboxed one (the router's future with its request) would cost every connection, an idle
    // SSE watch among them, its size (~0.6 KiB measured) to save one allocation per request.
    type Future = ResponseFuture;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let busy = self.handle.conn.begin_request();
        let timeout = self.body_timeout;
        let request = request.map(|body| Body::new(DeadlineBody::new(body, timeout)));
        // Cloning the router clones an `Arc`.
        let router = self.router.clone();
        Box::pin(CONNECTION.scope(self.handle.clone(), async move {
            let response = router.oneshot(request).await?;
            Ok(response.map(|body| Body::new(UntilWritten { body, _busy: busy })))
        }))
    }
}

tokio::task_local! {
    /// The connection a request came on, while its answer is being made. A task-local rather
    /// than a request extension: only the watch handler reads it, and the extension cost every
    /// request an allocation and a growth of its extensions table.
    static CONNECTION: ConnHandle;
}

/// The connection the request being answered came on (`None` outside this listener, as in
/// tests that call the router directly).
pub(crate) fn connection() -> Option<ConnHandle> {
    CONNECTION.try_with(ConnHandle::clone).ok()
}

/// A response body that keeps its connection marked busy until hyper has written all of it
/// (or dropped it with the connection).
struct UntilWritten {
    body: Body,
    _busy: RequestGuard,
}

impl HttpBody for UntilWritten {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The request body did not arrive within the server's `--request-body-timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} (the server's --request-body-timeout)", switchyard_domain::time::format_duration(*.0))]
pub struct BodyTimedOut(pub Duration);

/// A request body that must arrive whole within a deadline, counted from the first time the
/// handler waits for it: a client trickling a body a byte at a time cannot hold a connection
/// (and a handler) for longer.
struct DeadlineBody {
    body: Incoming,
    timeout: Duration,
    // Made on the first wait only: most bodies are empty or already buffered.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DeadlineBody {
    fn new(body: Incoming, timeout: Duration) -> Self {
        Self {
            body,
            timeout,
            deadline: None,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
