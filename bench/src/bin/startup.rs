//! Start and idle: how long `switchyard serve` takes from process start to answering
//! `GET /readyz` on a fresh embedded SQLite store, and how much memory it holds once idle.
//!
//! Each run starts the binary on a new store in a temporary directory and polls `/readyz` on a
//! fresh connection every 200 µs from the moment of `spawn`; the time to the first 200 is the
//! start time. After the last run the server is left idle for `--idle` and its VmRSS read.

use anyhow::{Context, bail};
use clap::Parser;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// The server binary.
    #[arg(long, default_value = "target/release/switchyard")]
    binary: String,
    /// Starts measured (a fresh store each).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// How long the last server idles before its memory is read.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    idle: Duration,
    #[arg(long, default_value_t = 18_181)]
    port: u16,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut times = Vec::with_capacity(args.runs);
    let mut last: Option<(Child, tempdir::Dir)> = None;
    for run in 0..args.runs {
        if let Some((mut child, _dir)) = last.take() {
            child.kill().ok();
            child.wait().ok();
        }
        let dir = tempdir::Dir::new(run)?;
        let started = Instant::now();
        let mut child = Command::new(&args.binary)
            .args([
                "serve",
                "--http-addr",
                &format!("127.0.0.1:{}", args.port),
                "--grpc-addr",
                "127.0.0.1:0",
                "--database-url",
                &format!("sqlite://{}/switchyard.db", dir.path()),
            ])
            .env("SWITCHYARD_ADMIN_TOKEN", "bench-admin-token-0123456789")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", args.binary))?;
        loop {
            if ready(args.port) {
                times.push(started.elapsed());
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("the server exited with {status} before it was ready");
            }
            if started.elapsed() > Duration::from_secs(10) {
                child.kill().ok();
                bail!("not ready within 10 s");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        last = Some((child, dir));
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "start to ready over {} runs: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        times.len(),
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    if let Some((mut child, _dir)) = last {
        std::thread::sleep(args.idle);
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
        for field in ["VmRSS:", "VmHWM:", "RssAnon:", "RssFile:"] {
            if let Some(line) = status.lines().find(|l| l.starts_with(field)) {
                println!("idle {line}");
            }
        }
        child.kill().ok();
        child.wait().ok();
    }
    Ok(())
}

/// Whether `GET /readyz` answers 200 now (on a new connection).
fn ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let request =
        format!("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).is_ok() && answer.starts_with(b"HTTP/1.1 200")
}

/// A temporary directory removed when dropped.
mod tempdir {
    pub struct Dir(std::path::PathBuf);

    impl Dir {
        pub fn new(run: usize) -> anyhow::Result<Dir> {
            let path = std::env::temp_dir()
                .join(format!("switchyard-startup-{}-{run}", std::process::id()));
            std::fs::create_dir_all(&path)?;
            Ok(Dir(path))
        }

        pub fn path(&self) -> &str {
            self.0.to_str().unwrap_or_default()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
