//! The CLI's HTTP client: one call per API route, answers parsed into the typed bodies of
//! `switchyard_proto::json`, errors mapped to exit codes.

use super::args::Remote;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use switchyard_proto::json;
use tokio_rustls::rustls;

/// A failed command with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
    /// The server's error body, printed as is with `--json`.
    pub body: Option<Value>,
}

impl Failure {
    pub(super) fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
            body: None,
        }
    }

    /// The server's error body, when it is one.
    pub(super) fn error_body(&self) -> Option<json::ErrorBody> {
        self.body
            .as_ref()
            .and_then(|b| json::ErrorBody::deserialize(b).ok())
    }
}

/// A successful answer: typed for rendering, and as the server sent it for `--json`.
pub(super) struct Answer<T> {
    pub body: T,
    pub json: Value,
}

pub struct Client {
    http: reqwest::Client,
    remote: Remote,
}

impl Client {
    pub fn new(mut remote: Remote) -> Result<Self, Failure> {
        // `SWITCHYARD_TOKEN=` (set but empty) is no token, not a malformed one.
        remote.token = remote.token.filter(|t| !t.trim().is_empty());
        let server = remote.server.trim();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(Failure::usage(format!(
                "--server {server:?} has no scheme: use http://{server} (or https://{server} for a \
                 server with TLS)"
            )));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        if let Some(path) = &remote.tls_ca {
            let pem = std::fs::read(path).map_err(|e| {
                Failure::usage(format!(
                    "cannot read the CA certificate {}: {e}",
                    path.display()
                ))
            })?;
            let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                Failure::usage(format!("{} is not a PEM certificate: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(ca);
        }
        let http = builder
            .build()
            .map_err(|e| Failure::usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self { http, remote })
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Answer<T>, Failure> {
        let url = format!("{}{}", self.remote.server.trim_end_matches('/'), path);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.remote.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| Failure {
            code: 3,
            message: unreachable(&self.remote, &e),
            body: None,
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return match T::deserialize(&value) {
                Ok(body) => Ok(Answer { body, json: value }),
                Err(e) => Err(Failure {
                    code: 3,
                    message: format!("the server's answer to {path} is not understood: {e}"),
                    body: None,
                }),
            };
        }
        let error = json::ErrorBody::deserialize(&value).ok();
        let message = error.as_ref().map_or_else(
            || format!("server answered {status}"),
            |e| e.message.clone(),
        );
        // The commonest first-run mistake, said as what to do.
        let message = if status.as_u16() == 401 && self.remote.token.is_none() {
            format!("no token: set SWITCHYARD_TOKEN or pass --token (the server said: {message})")
        } else {
            message
        };
        let code = match status.as_u16() {
            401 | 403 => 3,
            400 | 404 | 413 => 2,
            409 | 422 => 1,
            _ => 3,
        };
        let prefix = match error.and_then(|e| e.rule) {
            Some(_) if code == 1 => "refused: ",
            _ => "",
        };
        Err(Failure {
            code,
            message: format!("{prefix}{message}"),
            body: Some(value),
        })
    }

    pub(super) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Answer<T>, Failure> {
        self.call::<(), T>(reqwest::Method::GET, path, None).await
    }

    pub(super) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Answer<T>, Failure> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub(super) async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Answer<T>, Failure> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub(super) async fn delete<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Answer<T>, Failure> {
        self.call(reqwest::Method::DELETE, path, None::<&()>).await
    }

    pub(super) async fn migration(&self, key: &str) -> Result<Answer<json::Migration>, Failure> {
        self.get(&format!("/v1/migrations/{}", path_segment(key)?))
            .await
    }

    pub(super) async fn expected_version(
        &self,
        key: &str,
        given: Option<u64>,
    ) -> Result<u64, Failure> {
        match given {
            Some(v) => Ok(v),
            None => Ok(self.migration(key).await?.body.record.version),
        }
    }
}

/// Why the server could not be reached. reqwest's own text ("error sending request for url")
/// says nothing: the cause is down its source chain (refused connection, TLS handshake,
/// certificate), so the whole chain is printed, with what to do about the certificate problems
/// people run into when they make their own.
fn unreachable(remote: &Remote, error: &reqwest::Error) -> String {
    let mut causes: Vec<String> = Vec::new();
    let mut hint = None;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        hint = hint.or_else(|| rustls_error(e).and_then(|tls| certificate_hint(remote, tls)));
        let text = e.to_string();
        // Wrappers often repeat their source's text (an io::Error shows the error it holds).
        if !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        next = e.source();
    }
    let mut message = format!(
        "cannot reach the server at {}: {}",
        remote.server,
        causes.join(": ")
    );
    if let Some(hint) = hint {
        message.push_str("\nhint: ");
        message.push_str(&hint);
    }
    message
}

/// The TLS error in a chain link: rustls hands it to hyper inside an `io::Error` (in another
/// `io::Error`, as it happens), whose `source()` skips the error it holds; so it is looked for
/// in what each `io::Error` holds.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let held = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    rustls_error(held)
}

/// What to do about a certificate the client refused.
fn certificate_hint(remote: &Remote, error: &rustls::Error) -> Option<String> {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(cert) = error else {
        return None;
    };
    let host = reqwest::Url::parse(&remote.server)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| remote.server.clone());
    let ca = match &remote.tls_ca {
        Some(path) => format!("--tls-ca {}", path.display()),
        None => "--tls-ca (not given: only the system's CAs are trusted)".to_owned(),
    };
    Some(match cert {
        C::NotValidForName | C::NotValidForNameContext { .. } => format!(
            "the server's certificate is not issued for {host}, the host in --server: the name \
             or IP address in the URL must be in the certificate's subjectAltName (e.g. \
             `-addext subjectAltName=DNS:localhost,IP:127.0.0.1`), or use a name it lists"
        ),
        C::UnknownIssuer => format!(
            "the server's certificate is not signed by a certificate {ca} trusts: give the CA \
             certificate that signed the server's certificate (for a self-signed server \
             certificate, that certificate itself)"
        ),
        C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
            "the server's certificate is outside its validity period: renew it, or check this \
             machine's clock"
                .to_owned()
        }
        // webpki's CaUsedAsEndEntity reaches rustls as an opaque `Other`: known by its name.
        C::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
            "the server presents a CA certificate (basicConstraints CA:TRUE, what `openssl req \
             -x509` makes by default) as its own: serve a certificate signed by that CA instead \
             (give the CA to --tls-ca, the signed certificate to serve --tls-cert), or make the \
             self-signed one with `-addext basicConstraints=critical,CA:FALSE`"
                .to_owned()
        }
        _ => format!(
            "{ca} must be the CA certificate that signed the server's certificate, and the host \
             in --server must be in its subjectAltName"
        ),
    })
}

/// Rejects keys that would change the URL path; the server validates the exact form.
pub(super) fn path_segment(key: &str) -> Result<&str, Failure> {
    if key.is_empty() || key.contains(['/', '?', '#', '%']) {
        return Err(Failure::usage(format!(
            "invalid migration key {key:?}: allowed a-z, 0-9, '.', '_' and '-'"
        )));
    }
    Ok(key)
}

pub(super) fn url_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
