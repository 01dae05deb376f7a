//! Calls to the servers: one channel per configured server, requests carrying the token, the
//! servers tried in preference order, and the server's errors read by their code.

use crate::state::{Config, Shared};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use switchyard_proto::v1::switchyard_client::SwitchyardClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// A server to call, over its shared channel.
pub(crate) type Client = SwitchyardClient<Channel>;

/// One lazily connected channel per configured server.
pub(crate) fn channels(config: &Config) -> Arc<Vec<Channel>> {
    Arc::new(
        config
            .servers
            .iter()
            .map(|url| endpoint(config, url).connect_lazy())
            .collect(),
    )
}

fn endpoint(config: &Config, url: &str) -> Endpoint {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .expect("server URLs are checked by the builder")
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Notice a server that vanished without closing the connection.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(pem) = &config.tls_ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(tls)
            .expect("TLS configuration is valid");
    }
    endpoint
}

pub(crate) fn request<T>(shared: &Shared, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {}", shared.config.token).parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// What a round over the servers does when one refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnRefusal {
    /// Ask the next server anyway: what the client only reports (heartbeats, telemetry) may be
    /// taken by a replica another one refused (a token cache not yet refreshed, say).
    TryNext,
    /// Stop: the replicas share one store, so a refusal is the answer; the caller decides what
    /// it means (read again, give up).
    Stop,
}

/// Calls `call` on each server, the one the watch stream uses first, until one answers; the
/// last failure if none does.
pub(crate) async fn first_answer<T, Call, Fut>(
    shared: &Shared,
    on_refusal: OnRefusal,
    mut call: Call,
) -> Result<T, ServerError>
where
    Call: FnMut(Client) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut last = ServerError {
        kind: ErrorKind::Failed,
        message: "no server is configured".to_owned(),
    };
    for channel in preferred(shared) {
        match call(Client::new(channel)).await {
            Ok(answer) => return Ok(answer),
            Err(status) => {
                last = ServerError::from(status);
                if on_refusal == OnRefusal::Stop && last.kind.is_refusal() {
                    break;
                }
            }
        }
    }
    Err(last)
}

/// The channel of the server the watch stream uses first, then the others.
fn preferred(shared: &Shared) -> Vec<Channel> {
    let channels = &shared.channels;
    let current = shared.status().server;
    let first = shared
        .config
        .servers
        .iter()
        .position(|u| Some(u) == current.as_ref())
        .unwrap_or(0);
    (0..channels.len())
        .map(|i| channels[(first + i) % channels.len()].clone())
        .collect()
}

/// A failed call, as the server's `ErrorDetail` classifies it; the message is for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ServerError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// Rule 8: the migration changed since the version the request named; read it again.
    StaleVersion,
    /// A safety rule (its number) refused the change.
    RuleRefused(u32),
    /// The request does not apply to the migration's current state.
    NotApplicable,
    NotFound,
    InvalidArgument,
    /// The token is unknown or revoked, or its role does not allow the call.
    Denied,
    /// No answer, or a failure a later try may not meet: unreachable, unavailable, internal,
    /// or a code this build does not know.
    Failed,
}

impl ErrorKind {
    /// The server decided: asking again gets the same answer until the state changes.
    pub fn is_refusal(self) -> bool {
        self != ErrorKind::Failed
    }
}

impl From<tonic::Status> for ServerError {
    fn from(status: tonic::Status) -> Self {
        let detail = switchyard_proto::status::error_detail(&status).unwrap_or_default();
        let kind = match detail.code.as_str() {
            "stale_version" => ErrorKind::StaleVersion,
            "rule_refused" => ErrorKind::RuleRefused(detail.rule),
            "not_applicable" => ErrorKind::NotApplicable,
            "not_found" => ErrorKind::NotFound,
            "invalid_argument" => ErrorKind::InvalidArgument,
            "unauthenticated" | "permission_denied" => ErrorKind::Denied,
            // No detail: a transport failure, or an answer from something in between (a proxy,
            // an ingress) that decided by itself. Its status code still says whether asking
            // again could help.
            "" => match status.code() {
                tonic::Code::Aborted => ErrorKind::StaleVersion,
                tonic::Code::FailedPrecondition => ErrorKind::NotApplicable,
                tonic::Code::NotFound => ErrorKind::NotFound,
                tonic::Code::InvalidArgument => ErrorKind::InvalidArgument,
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => ErrorKind::Denied,
                _ => ErrorKind::Failed,
            },
            _ => ErrorKind::Failed,
        };
        ServerError {
            kind,
            message: status.message().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use switchyard_proto::v1 as pb;

    fn status(code: tonic::Code, detail_code: &str, rule: u32) -> tonic::Status {
        let detail = pb::ErrorDetail {
            code: detail_code.to_owned(),
            rule,
            current: None,
        };
        tonic::Status::with_details(code, "what went wrong", detail.encode_to_vec().into())
    }

    #[test]
    fn errors_are_read_by_their_code_not_their_message() {
        let read = |code, detail_code, rule| ServerError::from(status(code, detail_code, rule));
        let stale = read(tonic::Code::Aborted, "stale_version", 8);
        assert_eq!(stale.kind, ErrorKind::StaleVersion);
        assert_eq!(stale.message, "what went wrong");
        assert_eq!(
            read(tonic::Code::FailedPrecondition, "rule_refused", 3).kind,
            ErrorKind::RuleRefused(3)
        );
        assert_eq!(
            read(tonic::Code::PermissionDenied, "permission_denied", 0).kind,
            ErrorKind::Denied
        );
        assert_eq!(
            read(tonic::Code::Unavailable, "unavailable", 0).kind,
            ErrorKind::Failed
        );
        let transport = ServerError::from(tonic::Status::unavailable("connection refused"));
        assert_eq!(transport.kind, ErrorKind::Failed);
        assert!(!transport.kind.is_refusal());
        assert!(stale.kind.is_refusal());
    }

    #[test]
    fn a_status_without_detail_is_read_by_its_code() {
        let bare = |code| ServerError::from(tonic::Status::new(code, "from a proxy")).kind;
        assert_eq!(bare(tonic::Code::Unauthenticated), ErrorKind::Denied);
        assert_eq!(bare(tonic::Code::PermissionDenied), ErrorKind::Denied);
        assert_eq!(
            bare(tonic::Code::InvalidArgument),
            ErrorKind::InvalidArgument
        );
        assert_eq!(bare(tonic::Code::NotFound), ErrorKind::NotFound);
        assert_eq!(
            bare(tonic::Code::FailedPrecondition),
            ErrorKind::NotApplicable
        );
        assert_eq!(bare(tonic::Code::Aborted), ErrorKind::StaleVersion);
        assert_eq!(bare(tonic::Code::Unavailable), ErrorKind::Failed);
        assert!(!bare(tonic::Code::Unavailable).is_refusal());
    }
}
