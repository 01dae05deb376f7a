//! Connections cannot starve the server: silent, slowloris, slow-body and idle connections are
//! closed after their timeouts; at the connection cap or the file limit a newcomer displaces an
//! idle connection, so `/healthz` keeps answering; watch streams have their own cap and do not
//! count against the connection cap. The real binary, on loopback, under `prlimit`.

mod common;

use common::{Served, serve_with, serve_with_file_limit, terminate};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TOKEN: &str = "connections-test-admin-token-0123";

/// A fresh SQLite directory per test.
fn store(name: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-connections-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("switchyard.db").display());
    (dir, url)
}

fn addr(served: &Served) -> String {
    served.http.trim_start_matches("http://").to_owned()
}

fn connect(addr: &str) -> TcpStream {
    let socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    socket
}

/// Reads until the server closes the connection (or `limit` passes: a failure). Returns what
/// was read and how long the close took.
fn read_until_closed(socket: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => read.extend_from_slice(&buf[..n]),
            // A reset is a close too (the server dropped a socket with unread input).
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the server kept the connection open past {limit:?} ({e}); read so far: {}",
                String::from_utf8_lossy(&read)
            ),
        }
    }
    (
        String::from_utf8_lossy(&read).into_owned(),
        started.elapsed(),
    )
}

/// One `GET /healthz` on a new connection; the whole answer.
fn healthz(addr: &str) -> String {
    let mut socket = connect(addr);
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    answer
}

/// `GET path` with the admin token on a new connection; the whole answer.
fn get(addr: &str, path: &str) -> String {
    let mut socket = connect(addr);
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    answer
}

/// The value of a Prometheus sample line starting with `prefix` (0 when absent).
fn metric(addr: &str, prefix: &str) -> f64 {
    let page = get(addr, "/metrics");
    page.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[test]
fn silent_slowloris_slow_body_and_idle_connections_are_closed() {
    let (dir, url) = store("timeouts");
    let served = serve_with(
        &url,
        Some(TOKEN),
        &[
            "--request-header-timeout",
            "1s",
            "--request-body-timeout",
            "1s",
            "--idle-timeout",
            "2s",
        ],
    );
    let addr = addr(&served);
    // Generous bound: the sweeper enforces a timeout within a quarter of it, the machine is
    // loaded; the test is that the close comes, not its exact time.
    let bound = Duration::from_secs(15);

    let mut silent = connect(&addr);
    let mut slowloris = connect(&addr);
    slowloris
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let mut slow_body = connect(&addr);
    write!(
        slow_body,
        "POST /v1/migrations HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"key\":"
    )
    .unwrap();
    let mut idle = connect(&addr);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 12];
    idle.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let answered = Instant::now();

    let (said, took) = read_until_closed(&mut silent, bound);
    assert!(said.is_empty(), "a silent connection is closed unanswered");
    assert!(
        took >= Duration::from_millis(500),
        "closed too early: {took:?}"
    );

    let (said, _) = read_until_closed(&mut slowloris, bound);
    assert!(said.is_empty(), "a half-sent head is not answered: {said}");

    let (said, _) = read_until_closed(&mut slow_body, bound);
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(said.contains("\"code\":\"request_timeout\""), "{said}");
    assert!(said.contains("--request-body-timeout"), "{said}");
    assert!(
        said.to_ascii_lowercase().contains("connection: close"),
        "{said}"
    );

    read_until_closed(&mut idle, bound);
    let idled = answered.elapsed();
    assert!(
        idled >= Duration::from_millis(1900),
        "an idle keep-alive connection lives for its idle timeout (2 s) first: {idled:?}"
    );

    // Nothing was written by the slow body: the migration does not exist.
    assert!(get(&addr, "/v1/migrations").contains("\"migrations\":[]"));
    for reason in ["header_timeout", "idle_timeout"] {
        let closed = metric(
            &addr,
            &format!(
                "switchyard_connections_closed_total{{listener=\"http\",reason=\"{reason}\"}}"
            ),
        );
        assert!(closed >= 1.0, "{reason}: {closed}");
    }
    terminate(served);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Past the file limit's budget, silent and slowloris connections are displaced by newcomers,
/// and health checks keep being answered; the soft limit was raised to the hard one.
#[test]
fn a_flood_of_connections_past_the_file_limit_leaves_healthz_answering() {
    let (dir, url) = store("flood");
    // Soft 256, hard 384: the server raises its soft limit to 384; its budget for
    // connections is that less what it keeps back for the store and files.
    let served = serve_with_file_limit("256:384", &url, Some(TOKEN), &[]);
    let addr = addr(&served);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", served.child.id())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        open_files.split_whitespace().nth(3),
        Some("384"),
        "soft limit raised to the hard one: {open_files}"
    );

    // Three times more silent and slowloris connections than the server has descriptors.
    let mut flood = Vec::new();
    for i in 0..1_200 {
        let mut socket = TcpStream::connect(&addr).unwrap();
        if i % 4 == 0 {
            let _ = socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n");
        }
        flood.push(socket);
        if i % 100 == 99 {
            let answer = healthz(&addr);
            assert!(answer.starts_with("HTTP/1.1 200"), "after {i}: {answer}");
        }
    }
    for _ in 0..20 {
        let answer = healthz(&addr);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let displaced = metric(
        &addr,
        "switchyard_connections_closed_total{listener=\"http\",reason=\"displaced\"}",
    );
    assert!(displaced >= 800.0, "displaced {displaced}");
    // The server kept its descriptors: it never ran out (it would log and back off).
    let open = metric(&addr, "switchyard_open_connections{listener=\"http\"}");
    assert!(open < 384.0, "open connections {open}");
    drop(flood);
    terminate(served);
    let _ = std::fs::remove_dir_all(&dir);
}

/// When every connection at the cap is busy, a newcomer is told so (503) rather than left
/// hanging; watch streams neither count against the connection cap nor exceed their own.
#[test]
fn caps_refuse_clearly_and_watches_are_counted_apart() {
    let (dir, url) = store("caps");
    let served = serve_with(
        &url,
        Some(TOKEN),
        &["--max-connections", "2", "--max-watch-streams", "2"],
    );
    let addr = addr(&served);

    let watch = |addr: &str| {
        let mut socket = connect(addr);
        write!(
            socket,
            "GET /v1/watch HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        socket.read_exact(&mut head).unwrap();
        (socket, String::from_utf8_lossy(&head).into_owned())
    };
    let (first, status) = watch(&addr);
    assert_eq!(status, "HTTP/1.1 200");
    let (second, status) = watch(&addr);
    assert_eq!(status, "HTTP/1.1 200");
    // Two watches open, the connection cap is 2: API requests still get in.
    assert!(get(&addr, "/v1/migrations").starts_with("HTTP/1.1 200"));
    let third = get(&addr, "/v1/watch");
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    assert!(third.contains("--max-watch-streams"), "{third}");
    assert!(
        third.to_ascii_lowercase().contains("retry-after: 1"),
        "{third}"
    );
    // A closed watch frees its slot (once the server has seen the close).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_again, status) = watch(&addr);
        if status == "HTTP/1.1 200" {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        std::thread::yield_now();
    }
    drop(second);

    // Two requests in progress (bodies not yet sent) fill the cap; a third connection is
    // refused with a 503 it can read, and the two are not disturbed.
    let busy = |addr: &str| {
        let mut socket = connect(addr);
        write!(
            socket,
            "POST /v1/migrations HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        )
        .unwrap();
        socket
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (_a, _b) = loop {
        // Wait until the watches' connections are gone, then fill the cap.
        let (a, b) = (busy(&addr), busy(&addr));
        // Both heads are read once a probe connection finds no room.
        let mut probe = connect(&addr);
        probe
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = probe.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let mut answer = String::new();
        let _ = probe.read_to_string(&mut answer);
        if answer.starts_with("HTTP/1.1 503") {
            assert!(
                answer.contains("no room for another connection"),
                "{answer}"
            );
            break (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "never refused at the cap: {answer}"
        );
    };
    terminate(served);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A silent connection on the gRPC port is closed after the header timeout as well.
#[test]
fn a_silent_grpc_connection_is_closed() {
    let (dir, url) = store("grpc");
    let served = serve_with(&url, Some(TOKEN), &["--request-header-timeout", "1s"]);
    let mut silent = connect(&served.grpc);
    // The server speaks first on HTTP/2 (its SETTINGS frame); then, hearing nothing, closes.
    let (_, took) = read_until_closed(&mut silent, Duration::from_secs(15));
    assert!(took >= Duration::from_millis(500), "{took:?}");
    terminate(served);
    let _ = std::fs::remove_dir_all(&dir);
}
