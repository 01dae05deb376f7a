//! Every error answer of the HTTP server has the documented JSON body `{code, message}` with
//! `Content-Type: application/json` — including the ones axum writes by itself (405, unknown
//! routes, path and query rejections) — and the routes that are not JSON keep their content
//! types. Requests reqwest would not send (or would normalise) are written on a raw socket.
//! Errors do not depend on the database, so these run on SQLite only.

use reqwest::StatusCode;
use std::net::SocketAddr;
use switchyard_proto::json::ErrorBody;
use switchyard_tests::{Db, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw answer: status, headers (lower-case names) and body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as the documented error, after checking its content type.
    fn error(&self, what: &str) -> ErrorBody {
        let content_type = self.header("content-type").unwrap_or("");
        assert!(
            content_type.starts_with("application/json"),
            "{what}: content type {content_type:?}, body {:?}",
            String::from_utf8_lossy(&self.body)
        );
        let body: ErrorBody = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{what}: not an error body ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        });
        assert!(
            !body.code.is_empty() && !body.message.is_empty(),
            "{what}: {body:?}"
        );
        body
    }
}

/// Writes `head` (the request line and headers, without the blank line) on a new connection
/// and reads the answer until the server closes it.
async fn raw(addr: SocketAddr, head: &[u8], body: &[u8]) -> Raw {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = head.to_vec();
    request.extend_from_slice(format!("\r\nContent-Length: {}", body.len()).as_bytes());
    request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    request.extend_from_slice(body);
    // The server may answer and close before it has read everything (a refused head or body):
    // a failed write or a reset after the answer are expected, the answer is what counts.
    let _ = stream.write_all(&request).await;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = stream.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&answer)));
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Raw {
        status,
        headers,
        body: answer[split + 4..].to_vec(),
    }
}

fn authorized(srv: &TestServer, request_line: &str) -> Vec<u8> {
    format!(
        "{request_line}\r\nHost: switchyard\r\nAuthorization: Bearer {}",
        srv.token
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_not_allowed_names_the_allowed_methods() {
    let srv = TestServer::start(Db::Sqlite).await;
    let addr = srv.server.http_addr;
    for (request_line, method, allowed) in [
        (
            "DELETE /v1/migrations HTTP/1.1",
            "DELETE",
            &["GET", "POST"][..],
        ),
        ("POST /v1/snapshot HTTP/1.1", "POST", &["GET"][..]),
        ("PATCH /healthz HTTP/1.1", "PATCH", &["GET"][..]),
        (
            "GET /v1/migrations/m/backfill/checkpoint HTTP/1.1",
            "GET",
            &["PUT"][..],
        ),
    ] {
        let answer = raw(addr, &authorized(&srv, request_line), b"").await;
        assert_eq!(answer.status, 405, "{request_line}");
        let allow = answer.header("allow").unwrap_or_default().to_owned();
        let body = answer.error(request_line);
        assert_eq!(body.code, "method_not_allowed", "{request_line}");
        assert!(body.message.contains(method), "{request_line}: {body:?}");
        for m in allowed {
            assert!(allow.contains(m), "{request_line}: Allow {allow:?}");
            assert!(body.message.contains(m), "{request_line}: {body:?}");
        }
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_assets_are_json_404s() {
    let srv = TestServer::start(Db::Sqlite).await;
    let addr = srv.server.http_addr;
    for path in [
        "/nope",
        "/v1/nope",
        "/v1/migrations/m/nope",
        "/assets/nope.js",
        "/v1/migrations/unknown",
    ] {
        let line = format!("GET {path} HTTP/1.1");
        let answer = raw(addr, &authorized(&srv, &line), b"").await;
        assert_eq!(answer.status, 404, "{path}");
        assert_eq!(answer.error(path).code, "not_found", "{path}");
    }
    let unknown_route = raw(addr, &authorized(&srv, "GET /v1/nope HTTP/1.1"), b"").await;
    assert!(
        unknown_route
            .error("/v1/nope")
            .message
            .contains("/openapi.json"),
        "says where the routes are described"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_path_parameters_and_queries_are_json_400s() {
    let srv = TestServer::start(Db::Sqlite).await;
    let addr = srv.server.http_addr;
    for (line, phrase) in [
        // Percent-encoded bytes that are not UTF-8, in a `{key}` and in an `{id}`.
        ("GET /v1/migrations/%FF%FE HTTP/1.1", "UTF-8"),
        ("POST /v1/tokens/%C3%28/revoke HTTP/1.1", "UTF-8"),
        // A token id that is not a number.
        ("POST /v1/tokens/abc/revoke HTTP/1.1", "allowed a number"),
        // Query strings that do not parse, or name unknown parameters.
        ("GET /v1/migrations/m/audit?limit=many HTTP/1.1", "limit"),
        (
            "GET /v1/migrations/m/traffic?minutes=-1 HTTP/1.1",
            "minutes",
        ),
        ("GET /v1/watch?since=x HTTP/1.1", "since"),
        ("GET /v1/lifecycle?days=3 HTTP/1.1", "complete_for_days"),
    ] {
        let answer = raw(addr, &authorized(&srv, line), b"").await;
        assert_eq!(answer.status, 400, "{line}");
        let body = answer.error(line);
        assert_eq!(body.code, "invalid_argument", "{line}");
        assert!(body.message.contains(phrase), "{line}: {body:?}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_the_wrong_type_or_size_are_json_errors() {
    let srv = TestServer::start(Db::Sqlite).await;
    let addr = srv.server.http_addr;
    let mut head = authorized(&srv, "POST /v1/migrations HTTP/1.1");
    head.extend_from_slice(b"\r\nContent-Type: text/plain");
    let wrong_type = raw(addr, &head, br#"{"key": "m"}"#).await;
    assert_eq!(wrong_type.status, 400);
    let body = wrong_type.error("text/plain body");
    assert_eq!(body.code, "invalid_argument");
    assert!(
        body.message.contains("Content-Type: application/json"),
        "{body:?}"
    );

    let mut head = authorized(&srv, "POST /v1/migrations HTTP/1.1");
    head.extend_from_slice(b"\r\nContent-Type: application/json");
    let huge = format!(r#"{{"key": "{}"}}"#, "k".repeat(100 * 1024));
    let too_large = raw(addr, &head, huge.as_bytes()).await;
    assert_eq!(too_large.status, 413);
    let body = too_large.error("100 KiB body");
    assert_eq!(body.code, "payload_too_large");
    assert!(body.message.contains("65536 bytes"), "{body:?}");
    srv.stop().await;
}

/// JSON has one kind of number, and to the OpenAPI document (JSON Schema) `2.0` is the integer 2:
/// a client whose JSON library writes whole numbers as floats must not be refused; a fraction
/// still is, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_numbers_written_as_floats_are_integers() {
    let srv = TestServer::start(Db::Sqlite).await;
    let (status, body) = srv
        .post(
            "/v1/migrations",
            serde_json::json!({ "key": "errors.floats", "soak_seconds": 604800.0,
                "shadow_sample_bp": 250.0, "reason": "floats" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["soak_seconds"], 604800);
    assert_eq!(body["shadow_sample_bp"], 250);

    let (status, body) = srv
        .post(
            "/v1/migrations",
            serde_json::json!({ "key": "errors.fraction", "soak_seconds": 604800.5,
                "reason": "a fraction" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("soak_seconds"),
        "{body}"
    );

    // Parsed exactly: the default fast float parser reads this one a quarter off, a fraction.
    let zeros =
        serde_json::json!({ "reads": 0, "writes": 0, "errors": 0, "latency": vec![0u64; 16] });
    let (status, body) = srv
        .post(
            "/v1/clients/telemetry",
            serde_json::json!({ "service": "errors", "instance_id": "floats", "entries": [{
                "key": "errors.floats", "minute_ms": 0.0, "old": zeros, "new": zeros,
                "comparisons": 1939122125615575.0, "mismatches": 0,
                "evaluations_without_entity": 0, "fallback_evaluations": 0 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_that_are_not_json_keep_their_content_types() {
    let srv = TestServer::start(Db::Sqlite).await;
    let http = reqwest::Client::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/healthz", "text/plain"),
        ("/readyz", "text/plain"),
        ("/metrics", "text/plain"),
        ("/openapi.json", "application/json"),
    ] {
        let r = http
            .get(format!("{}{path}", srv.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with(kind), "{path}: {ct}");
    }
    srv.stop().await;
}

/// The limitation the README documents: hyper answers a request it cannot parse (a malformed
/// request line, a URI over 65534 bytes, a head over its ~400 KiB buffer) itself, before any
/// service runs, with a status line and no body. If this starts failing, hyper learnt to do
/// better: update the README's API section.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_cannot_parse_get_a_bare_status() {
    let srv = TestServer::start(Db::Sqlite).await;
    let addr = srv.server.http_addr;
    let long_uri = format!("GET /v1/{} HTTP/1.1", "a".repeat(70 * 1024));
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: switchyard\r\nX-Big: {}",
        "b".repeat(500 * 1024)
    );
    for (what, head, status) in [
        ("malformed request line", "NOT HTTP AT ALL".to_owned(), 400),
        ("URI too long", long_uri, 414),
        ("headers too large", big_header, 431),
    ] {
        let answer = raw(addr, head.as_bytes(), b"").await;
        assert_eq!(answer.status, status, "{what}");
        assert!(answer.body.is_empty(), "{what}: {:?}", answer.body);
    }
    srv.stop().await;
}
