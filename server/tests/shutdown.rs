//! Shutdown: SIGTERM stops the server within its drain period even while a client holds a
//! half-sent request (graceful shutdown alone would wait on it forever).

mod common;

use common::serve_with;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn sigterm_stops_within_the_drain_period_despite_a_half_sent_request() {
    let dir = std::env::temp_dir().join(format!("switchyard-shutdown-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let database_url = format!("sqlite://{}", dir.join("switchyard.db").display());
    let served = serve_with(&database_url, None, &["--shutdown-drain", "1s"]);
    let addr = served.http.trim_start_matches("http://").to_owned();

    // A request whose headers never end, held open.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    // The server is serving (so the stalled connection has been accepted before the signal).
    let mut probe = TcpStream::connect(&addr).unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    probe.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Wait for the exit, bounded: without a drain limit it never comes.
    let pid = served.child.id();
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut served = served;
        let _ = exited.send(served.child.wait());
    });
    let Ok(exit) = exit.recv_timeout(Duration::from_secs(20)) else {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!(
            "still running {:?} after SIGTERM with a 1 s drain period",
            signalled.elapsed()
        );
    };
    let exit = exit.unwrap();
    assert!(exit.success(), "serve exited with {exit:?}");
    drop(stalled);
    let _ = std::fs::remove_dir_all(&dir);
}
