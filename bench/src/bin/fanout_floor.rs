//! The floor under SSE fan-out on this machine: N loopback TCP connections in one process, and
//! per round one write of an event's bytes to each connection's server end and one read of them
//! at its client end, with nothing else: no HTTP, no runtime, no parsing. Measures, per round,
//! the time from the first write to the moment the last connection has read the event, the
//! same "every watcher" figure `propagation --transport sse` reports against the server.
//!
//! What a server with one connection per watcher cannot do with less: one write per connection
//! (the kernel's TCP send, the loopback's receive path, the reader's wake-up) and one read per
//! connection (the copy out, the ACK back). Writers play the server's threads, readers the
//! watchers' (each reader an epoll loop over its share of the connections), all on the same
//! cores, as the server and the load tool share them.
//!
//! Usage: see BENCHMARKS.md ("SSE at 10,000 watchers").

use anyhow::{Context, bail, ensure};
use clap::Parser;
use mio::{Events, Interest, Poll, Token};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use switchyard_bench::{percentile, raise_file_limit, split};

#[derive(Parser)]
struct Args {
    /// Connections, each getting one event per round.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Rounds to measure.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    /// An event's bytes on the wire: the default is a change event of the propagation bench's
    /// migration as the server frames it (chunk size line, SSE lines, CRLF).
    #[arg(long, default_value_t = 1014)]
    bytes: usize,
    /// Threads writing (the server's side).
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// Threads reading, each an epoll loop over its share (the watchers' side).
    #[arg(long, default_value_t = 2)]
    readers: usize,
    /// Internal: run as the watchers' process, connecting to this port.
    #[arg(long, hide = true)]
    watch_port: Option<u16>,
}

/// The monotonic clock in nanoseconds: the same clock in both processes (`Instant` is not
/// comparable across them).
fn now_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the struct passed.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.connections > 0 && args.rounds > 0 && args.bytes > 0,
        "nothing to measure"
    );
    ensure!(
        args.writers > 0 && args.readers > 0,
        "--writers and --readers must be at least 1"
    );
    // Each side is its own process, as a server and its watchers are: each holds one end of
    // every connection, so each needs a descriptor per connection.
    raise_descriptor_limit(args.connections + 64)?;
    match args.watch_port {
        Some(port) => watch(&args, port),
        None => serve(&args),
    }
}

/// The server's side: accepts the watchers' connections, then per round writes the event to
/// each and waits until the watchers' process reports every connection has it.
fn serve(args: &Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    let port = listener.local_addr()?.port();
    let mut watchers = Command::new(std::env::current_exe()?)
        .args(["--watch-port", &port.to_string()])
        .args(["--connections", &args.connections.to_string()])
        .args(["--rounds", &args.rounds.to_string()])
        .args(["--bytes", &args.bytes.to_string()])
        .args(["--readers", &args.readers.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the watchers' process")?;
    let mut reports = BufReader::new(watchers.stdout.take().context("watchers' stdout")?).lines();

    // Accepted on a thread of its own, so that a watchers' process that fails part way (out of
    // descriptors, say) ends the run with its error instead of leaving an accept waiting.
    let connections = args.connections;
    let accepting = std::thread::spawn(move || -> std::io::Result<Vec<TcpStream>> {
        let mut servers = Vec::with_capacity(connections);
        for _ in 0..connections {
            let (server, _) = listener.accept()?;
            // As the server sets its sockets: an event goes out when written.
            server.set_nodelay(true)?;
            servers.push(server);
        }
        Ok(servers)
    });
    // The watchers' process says when all of its connections are open.
    if reports.next().transpose()?.is_none() {
        bail!(
            "the watchers' process ended before connecting: {}",
            watchers.wait()?
        );
    }
    let servers = accepting
        .join()
        .expect("accepting thread")
        .context("accepting")?;

    let event = vec![b'x'; args.bytes];
    let mut writers = Vec::new();
    for part in split(servers, args.writers) {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let event = event.clone();
        let handle = std::thread::spawn(move || -> std::io::Result<()> {
            let mut part = part;
            while go_rx.recv().is_ok() {
                for socket in &mut part {
                    socket.write_all(&event)?;
                }
            }
            Ok(())
        });
        writers.push((go_tx, handle));
    }

    let (mut every, mut receipts) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        let started = now_ns();
        for (go, _) in &writers {
            go.send(()).context("a writer stopped")?;
        }
        let mut last = started;
        for _ in 0..args.readers.min(args.connections) {
            let line = reports.next().context("the watchers' process ended")??;
            for at in line.split_ascii_whitespace() {
                let at: u64 = at.parse().context("a receipt time")?;
                receipts.push(Duration::from_nanos(at.saturating_sub(started)));
                last = last.max(at);
            }
        }
        every.push(Duration::from_nanos(last - started));
    }
    for (go, handle) in writers {
        drop(go);
        handle.join().expect("writer thread")?;
    }
    ensure!(watchers.wait()?.success(), "the watchers' process failed");

    every.sort();
    receipts.sort();
    println!(
        "connections={} rounds={} bytes={} writers={} readers={}",
        args.connections, args.rounds, args.bytes, args.writers, args.readers
    );
    println!(
        "receipt latency from the round's first write: p50={:?} p99={:?}",
        percentile(&receipts, 0.50),
        percentile(&receipts, 0.99)
    );
    println!(
        "every connection received: p50={:?} p99={:?} max={:?}",
        percentile(&every, 0.50),
        percentile(&every, 0.99),
        every.last().copied().unwrap_or_default()
    );
    Ok(())
}

/// The watchers' side: opens the connections, prints a line once they are, then each reader
/// prints, per round, when each of its connections had the whole event.
fn watch(args: &Args, port: u16) -> anyhow::Result<()> {
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let client = TcpStream::connect(("127.0.0.1", port)).context("connecting")?;
        client.set_nodelay(true)?;
        client.set_nonblocking(true)?;
        clients.push(client);
    }
    println!("connected");
    let readers: Vec<_> = split(clients, args.readers)
        .into_iter()
        .map(|part| {
            let (bytes, rounds) = (args.bytes, args.rounds);
            std::thread::spawn(move || read_rounds(part, bytes, rounds))
        })
        .collect();
    for reader in readers {
        reader.join().expect("reader thread")?;
    }
    Ok(())
}

/// Reads `rounds` events of `bytes` from each connection; after each round, prints when each
/// connection had its whole event.
fn read_rounds(sockets: Vec<TcpStream>, bytes: usize, rounds: usize) -> anyhow::Result<()> {
    let mut poll = Poll::new()?;
    let mut sockets: Vec<mio::net::TcpStream> = sockets
        .into_iter()
        .map(mio::net::TcpStream::from_std)
        .collect();
    for (i, socket) in sockets.iter_mut().enumerate() {
        poll.registry()
            .register(socket, Token(i), Interest::READABLE)?;
    }
    // Rounds wait for every connection, so a connection's total is exactly `round * bytes`
    // once it has the round's event.
    let mut received = vec![0usize; sockets.len()];
    let mut counted = vec![0usize; sockets.len()];
    let mut events = Events::with_capacity(1024);
    let mut buffer = [0u8; 4096];
    for round in 1..=rounds {
        let due = round * bytes;
        let mut times = Vec::with_capacity(sockets.len());
        while times.len() < sockets.len() {
            poll.poll(&mut events, None)?;
            for event in &events {
                let i = event.token().0;
                loop {
                    match sockets[i].read(&mut buffer) {
                        Ok(0) => bail!("connection {i} closed"),
                        Ok(n) => {
                            received[i] += n;
                            // A short read drained the socket: the next bytes raise a new
                            // edge, so no second read to see it empty (tokio reads the same way).
                            if n < buffer.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                // Counted once, when its event is whole (a spurious wake reads nothing).
                if received[i] == due && counted[i] < round {
                    counted[i] = round;
                    times.push(now_ns());
                }
            }
        }
        let line: Vec<String> = times.iter().map(u64::to_string).collect();
        // One write per line: the readers share stdout.
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", line.join(" "))?;
        out.flush()?;
    }
    Ok(())
}

/// Raises the soft descriptor limit to the hard one, and fails clearly if that is short of
/// `needed`.
fn raise_descriptor_limit(needed: usize) -> anyhow::Result<()> {
    let limit = raise_file_limit();
    if (limit as usize) < needed {
        bail!(
            "{needed} descriptors needed, the hard limit is {limit}: raise it (ulimit -Hn) or use \
             fewer --connections"
        );
    }
    Ok(())
}
