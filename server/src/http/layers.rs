//! The two layers every HTTP request passes through: [`JsonErrors`] around the whole router and
//! [`Telemetry`] around each route. Written as plain tower services rather than
//! `middleware::from_fn` closures: those box the inner service and two futures per request,
//! which showed in the server-side decide's profile; these add no allocation to a request
//! that needs no rewriting.

use super::NO_SUCH_ROUTE;
use crate::app::MAX_BODY_BYTES;
use crate::error::ApiError;
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tower::{Layer, Service};

/// The most of a non-JSON error body read to become a message; axum's rejections are one line.
const MAX_REJECTION_TEXT: usize = 4096;

/// Every error answer carries the documented `{code, message}` JSON body. Handlers and our
/// extractors already answer with `ApiError`; this catches what axum writes by itself before or
/// instead of a handler — a 405 (empty, with `Allow`), a path parameter that is not UTF-8 or
/// does not parse (plain text), and any other plain-text or empty rejection — and rewrites it
/// through `ApiError`, keeping its status and headers (`Allow` among them). One place, so a route
/// added later is covered without doing anything.
#[derive(Clone)]
pub struct JsonErrors<S> {
    inner: S,
}

#[derive(Clone, Copy)]
pub(super) struct JsonErrorsLayer;

impl<S> Layer<S> for JsonErrorsLayer {
    type Service = JsonErrors<S>;

    fn layer(&self, inner: S) -> JsonErrors<S> {
        JsonErrors { inner }
    }
}

impl<S> Service<Request> for JsonErrors<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = JsonErrorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        JsonErrorsFuture {
            method: request.method().clone(),
            // A shared-buffer clone, not a copy: only read if the answer needs rewriting.
            uri: request.uri().clone(),
            inner: self.inner.call(request),
            rewriting: None,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct JsonErrorsFuture<F> {
        #[pin]
        inner: F,
        method: Method,
        uri: Uri,
        // Only an answer to rewrite (rare) makes this, to read its body.
        rewriting: Option<BoxFuture<'static, Response>>,
    }
}

impl<F, E> Future for JsonErrorsFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.rewriting.is_none() {
            let response = ready!(this.inner.poll(cx))?;
            if !needs_rewriting(&response) {
                return Poll::Ready(Ok(response));
            }
            let (method, uri) = (std::mem::take(this.method), std::mem::take(this.uri));
            *this.rewriting = Some(Box::pin(rewrite(method, uri, response)));
        }
        let rewriting = this.rewriting.as_mut().expect("set above");
        rewriting.as_mut().poll(cx).map(Ok)
    }
}

/// An error answer without the JSON body.
fn needs_rewriting(response: &Response) -> bool {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    !is_json && (status.is_client_error() || status.is_server_error())
}

async fn rewrite(method: Method, uri: Uri, response: Response) -> Response {
    let path = uri.path();
    let status = response.status();
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_REJECTION_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let said = |fallback: &str| {
        if text.is_empty() {
            fallback.to_owned()
        } else {
            text.clone()
        }
    };
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .replace(',', ", ");
            ApiError::MethodNotAllowed(format!(
                "{method} is not allowed on {path}; allowed: {allowed}"
            ))
        }
        StatusCode::NOT_FOUND => ApiError::NotFound(said(NO_SUCH_ROUTE)),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(format!(
            "request body is too large: allowed up to {MAX_BODY_BYTES} bytes"
        )),
        StatusCode::SERVICE_UNAVAILABLE => {
            ApiError::Unavailable(said("unavailable; retry shortly"))
        }
        // A status no variant names (none today: axum's JSON rejections go through `ApiJson`)
        // keeps its status below, with the code of its class.
        s if s.is_client_error() => {
            ApiError::invalid(said(s.canonical_reason().unwrap_or("bad request")))
        }
        _ => ApiError::Internal(format!("{status} from {method} {path}: {text}")),
    };
    let mut rewritten = error.into_response();
    *rewritten.status_mut() = status;
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().append(name, value.clone());
        }
    }
    rewritten
}

/// Each request's metrics and trace: counted by route and status and timed by route and
/// method (`crate::metrics::record_http`), and run in a `request` span (method, route, URI)
/// that logs its answer at debug level (`RUST_LOG=switchyard_server::http=debug`). Inside the
/// router, where the matched route is known. One clock read at each end serves both.
#[derive(Clone)]
pub(super) struct Telemetry<S> {
    inner: S,
}

#[derive(Clone, Copy)]
pub(super) struct TelemetryLayer;

impl<S> Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;

    fn layer(&self, inner: S) -> Telemetry<S> {
        Telemetry { inner }
    }
}

impl<S> Service<Request> for Telemetry<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // Only the methods routes answer: any other is one label value, not one per spelling.
        let method = match *request.method() {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::HEAD => "HEAD",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        // The matched route is an `Arc<str>`: cloned, not copied.
        let route = request.extensions().get::<MatchedPath>().cloned();
        // Disabled (the default level), making the span is a check of a cached flag.
        let span = tracing::debug_span!(
            "request",
            method = %request.method(),
            route = route.as_ref().map_or("unmatched", MatchedPath::as_str),
            uri = %request.uri(),
        );
        let inner = {
            let _in_span = span.enter();
            self.inner.call(request)
        };
        Observed {
            started: Instant::now(),
            route,
            method,
            span,
            inner,
        }
    }
}

pin_project_lite::pin_project! {
    pub(super) struct Observed<F> {
        #[pin]
        inner: F,
        started: Instant,
        route: Option<MatchedPath>,
        method: &'static str,
        span: tracing::Span,
    }
}

impl<F, E> Future for Observed<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _in_span = this.span.enter();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let elapsed = this.started.elapsed();
            let route = this.route.as_ref().map_or("unmatched", MatchedPath::as_str);
            let status = response.status().as_u16();
            crate::metrics::record_http(route, this.method, status, elapsed);
            tracing::debug!(status, latency_ms = elapsed.as_secs_f64() * 1e3, "answered");
        }
        Poll::Ready(result)
    }
}
