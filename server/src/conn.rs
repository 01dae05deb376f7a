//! What each listener's connections are doing, so that none holds a file descriptor for nothing.
//!
//! Every accepted connection is registered and its socket wrapped in [`Tracked`], which notes
//! when bytes arrive. A sweeper closes a connection that is between requests and has either
//! started a request's head without finishing it within the header timeout (a slowloris client,
//! or a silent one: a new connection counts as having started), or stayed idle past the idle
//! timeout. At the connection cap, or when the process's file descriptors run short, a new
//! connection displaces the oldest one that has no request in progress; only when every
//! connection is busy is the newcomer refused. Connections carrying a watch stream do not count
//! against the cap (watch streams have their own, in the hub): a fleet of watchers must not
//! lock the API out, nor the API the watchers.
//!
//! On the gRPC listener requests are not seen one by one (tonic owns the connection), so a
//! connection counts as in use once it has sent its first bytes: silent ones are closed and
//! displaced, the rest are left to HTTP/2 keep-alive.

use futures::task::AtomicWaker;
use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The limits of one listener.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// How long a request's head may take to arrive: from accepting the connection for its
    /// first request, from the first byte for a later one.
    pub header_timeout: Duration,
    /// How long a connection may sit between requests.
    pub idle_timeout: Duration,
    /// Open connections not carrying a watch stream.
    pub max_connections: usize,
}

/// File descriptors the listeners may use together: the process's limit less what the store,
/// the listeners and the log need. Shared, because running out on one listener starves both.
pub struct FdBudget {
    open: AtomicUsize,
    limit: usize,
}

/// Descriptors kept back from connections: database pool, listeners, files, DNS.
const FD_RESERVE: u64 = 128;

impl FdBudget {
    /// Raises the soft file limit to the hard limit first, as a server holding many
    /// connections should; the budget is what the resulting limit leaves.
    pub fn from_process_limit() -> Arc<Self> {
        let limit = raise_file_limit();
        Arc::new(Self {
            open: AtomicUsize::new(0),
            limit: limit.saturating_sub(FD_RESERVE).max(16) as usize,
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// The soft `RLIMIT_NOFILE`, after raising it to the hard limit (where allowed).
#[cfg(unix)]
fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
            tracing::warn!(
                soft = limit.rlim_cur,
                hard = limit.rlim_max,
                "could not raise the open-file limit"
            );
        }
    }
    limit.rlim_cur
}

#[cfg(not(unix))]
fn raise_file_limit() -> u64 {
    // Windows has no per-process descriptor limit of this kind.
    u64::MAX
}

/// Why a connection was closed by the server (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    HeaderTimeout,
    IdleTimeout,
    Displaced,
}

impl CloseReason {
    fn as_str(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Displaced => "displaced",
        }
    }
}

/// The connections of one listener.
pub struct Connections {
    listener: &'static str,
    limits: ConnLimits,
    /// On gRPC, a connection's first bytes mark it in use for good (see the module comment).
    sees_requests: bool,
    budget: Arc<FdBudget>,
    epoch: Instant,
    next_id: AtomicU64,
    /// By id, which is accept order: the first evictable entry is the oldest.
    table: Mutex<BTreeMap<u64, Arc<Conn>>>,
    /// Connections with at least one watch stream open.
    watching: AtomicUsize,
    /// Connections told to close whose sockets are not closed yet; see [`Connections::settled`].
    closing: AtomicUsize,
    closed: tokio::sync::Notify,
}

/// Connections told to close may wait for their sockets to close before more are accepted:
/// each displacement admits a newcomer before its victim's task has run, so without a bound a
/// burst of newcomers would take descriptors faster than their victims return them.
const MAX_PENDING_CLOSES: usize = 32;

impl Connections {
    pub fn new(
        listener: &'static str,
        limits: ConnLimits,
        sees_requests: bool,
        budget: Arc<FdBudget>,
    ) -> Arc<Self> {
        metrics::gauge!("switchyard_open_connections", "listener" => listener).set(0.0);
        Arc::new(Self {
            listener,
            limits,
            sees_requests,
            budget,
            epoch: Instant::now(),
            next_id: AtomicU64::new(1),
            table: Mutex::new(BTreeMap::new()),
            watching: AtomicUsize::new(0),
            closing: AtomicUsize::new(0),
            closed: tokio::sync::Notify::new(),
        })
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        // The table holds no invariant a panic could break halfway.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Registers a new connection, displacing the oldest idle one when full. `None`: full,
    /// and every connection is in use; the caller closes the socket.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut table = self.table();
        let counted = table.len() - self.watching.load(Relaxed).min(table.len());
        let full = counted >= self.limits.max_connections
            || self.budget.open.load(Relaxed) >= self.budget.limit;
        if full {
            let oldest_idle = table.values().find(|c| c.is_idle() && !c.closing());
            match oldest_idle {
                Some(victim) => self.close(victim, CloseReason::Displaced),
                None => {
                    metrics::counter!("switchyard_connections_refused_total", "listener" => self.listener)
                        .increment(1);
                    return None;
                }
            }
        }
        let now = self.now_ms();
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Relaxed),
            epoch: self.epoch,
            sees_requests: self.sees_requests,
            busy: AtomicU32::new(0),
            watches: AtomicU32::new(0),
            idle_since: AtomicU64::new(now),
            // The first request's head is due from the moment of accepting.
            head_since: AtomicU64::new(now + 1),
            closing: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        table.insert(conn.id, conn.clone());
        self.budget.open.fetch_add(1, Relaxed);
        metrics::gauge!("switchyard_open_connections", "listener" => self.listener)
            .set(table.len() as f64);
        Some(Admitted {
            conn,
            registry: self.clone(),
        })
    }

    /// Waits until few enough closed connections still hold their sockets (the accept loop
    /// calls this before accepting).
    pub async fn settled(&self) {
        while self.closing.load(Relaxed) > MAX_PENDING_CLOSES {
            let closed = self.closed.notified();
            if self.closing.load(Relaxed) <= MAX_PENDING_CLOSES {
                return;
            }
            closed.await;
        }
    }

    fn close(&self, conn: &Conn, reason: CloseReason) {
        if conn.closing.swap(true, Relaxed) {
            return;
        }
        self.closing.fetch_add(1, Relaxed);
        conn.waker.wake();
        metrics::counter!("switchyard_connections_closed_total",
            "listener" => self.listener, "reason" => reason.as_str())
        .increment(1);
    }

    /// Closes connections past their header or idle timeout.
    pub fn sweep(&self) {
        let now = self.now_ms();
        let table = self.table();
        for conn in table.values() {
            if !conn.is_idle() || conn.closing() {
                continue;
            }
            let head = conn.head_since.load(Relaxed);
            if head != 0 {
                if now.saturating_sub(head - 1) >= self.limits.header_timeout.as_millis() as u64 {
                    self.close(conn, CloseReason::HeaderTimeout);
                }
            } else if now.saturating_sub(conn.idle_since.load(Relaxed))
                >= self.limits.idle_timeout.as_millis() as u64
            {
                self.close(conn, CloseReason::IdleTimeout);
            }
        }
    }

    /// How often to sweep: often enough that a timeout is enforced within a quarter of itself.
    pub fn sweep_interval(&self) -> Duration {
        (self.limits.header_timeout.min(self.limits.idle_timeout) / 4)
            .clamp(Duration::from_millis(25), Duration::from_secs(1))
    }

    /// Sweeps until `stop` turns true.
    pub async fn sweep_until(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.sweep_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sweep(),
                _ = crate::hub::stopped(&mut stop) => return,
            }
        }
    }
}

/// A registered connection; dropping it (with the socket) unregisters it.
pub struct Admitted {
    conn: Arc<Conn>,
    registry: Arc<Connections>,
}

impl Admitted {
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut table = self.registry.table();
        table.remove(&self.conn.id);
        if self.conn.closing() {
            self.registry.closing.fetch_sub(1, Relaxed);
            self.registry.closed.notify_waiters();
        }
        self.registry.budget.open.fetch_sub(1, Relaxed);
        metrics::gauge!("switchyard_open_connections", "listener" => self.registry.listener)
            .set(table.len() as f64);
    }
}

/// One connection's activity.
pub struct Conn {
    id: u64,
    epoch: Instant,
    sees_requests: bool,
    /// Requests whose response has not finished (on gRPC: 1 once the connection has spoken).
    busy: AtomicU32,
    watches: AtomicU32,
    /// Milliseconds since the registry's epoch when the last response finished.
    idle_since: AtomicU64,
    /// Milliseconds since the epoch, plus one, when the next request's head began to arrive;
    /// 0 while no head is pending.
    head_since: AtomicU64,
    closing: AtomicBool,
    /// The task reading the socket, woken to see `closing`.
    waker: AtomicWaker,
}

impl Conn {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn is_idle(&self) -> bool {
        self.busy.load(Relaxed) == 0 && self.watches.load(Relaxed) == 0
    }

    fn closing(&self) -> bool {
        self.closing.load(Relaxed)
    }

    /// A request's head has arrived; the connection is busy until the guard drops (when its
    /// response has been written, or abandoned).
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.busy.fetch_add(1, Relaxed);
        self.head_since.store(0, Relaxed);
        RequestGuard(self.clone())
    }

    fn saw_bytes(&self) {
        if self.busy.load(Relaxed) != 0 {
            return;
        }
        if self.sees_requests {
            if self.head_since.load(Relaxed) == 0 {
                self.head_since.store(self.now_ms() + 1, Relaxed);
            }
        } else {
            self.busy.store(1, Relaxed);
            self.head_since.store(0, Relaxed);
        }
    }
}

pub struct RequestGuard(Arc<Conn>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Relaxed) == 1 {
            self.0.idle_since.store(self.0.now_ms(), Relaxed);
        }
    }
}

/// Marks a connection as carrying a watch stream for as long as it lives.
pub struct WatchMark {
    conn: Arc<Conn>,
    registry: Arc<Connections>,
}

impl Connections {
    pub fn mark_watch(self: &Arc<Self>, conn: &Arc<Conn>) -> WatchMark {
        if conn.watches.fetch_add(1, Relaxed) == 0 {
            self.watching.fetch_add(1, Relaxed);
        }
        WatchMark {
            conn: conn.clone(),
            registry: self.clone(),
        }
    }
}

impl Drop for WatchMark {
    fn drop(&mut self) {
        if self.conn.watches.fetch_sub(1, Relaxed) == 1 {
            self.registry.watching.fetch_sub(1, Relaxed);
            self.conn.idle_since.store(self.conn.now_ms(), Relaxed);
        }
    }
}

/// Where a request came in: its connection and the registry it belongs to (a request
/// extension, so a watch handler can mark its connection).
#[derive(Clone)]
pub struct ConnHandle {
    pub conn: Arc<Conn>,
    pub registry: Arc<Connections>,
}

impl ConnHandle {
    pub fn mark_watch(&self) -> WatchMark {
        self.registry.mark_watch(&self.conn)
    }
}

/// A socket that reports arriving bytes to its connection's record, and fails its next read
/// once the sweeper closes the connection.
pub struct Tracked<T> {
    io: T,
    admitted: Admitted,
    vectored: bool,
}

impl<T> Tracked<T> {
    pub fn new(io: T, admitted: Admitted) -> Self {
        Self {
            io,
            admitted,
            vectored: true,
        }
    }

    /// Tells the protocol above to write from one buffer. HTTP/2 (h2) then copies each DATA
    /// frame under 1 KiB into its write buffer, where the frames of many streams leave in one
    /// write; with vectored writes it copies only those under 256 bytes and writes each longer
    /// one on its own, which at a watch fan-out is one write per stream (a change's message is
    /// 350 bytes in the fan-out benchmark, with a description, owner and services).
    pub fn without_vectored_writes(mut self) -> Self {
        self.vectored = false;
        self
    }

    pub fn handle(&self) -> ConnHandle {
        ConnHandle {
            conn: self.admitted.conn.clone(),
            registry: self.admitted.registry.clone(),
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

fn closed_by_server() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed by the server (timeout or displaced)",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let conn = self.admitted.conn.clone();
        conn.waker.register(cx.waker());
        if conn.closing() {
            return Poll::Ready(Err(closed_by_server()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            conn.saw_bytes();
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored && self.io.is_write_vectored()
    }
}

/// On gRPC, the connection's handle reaches handlers as tonic's connect info.
#[derive(Clone)]
pub struct GrpcConnectInfo {
    pub handle: ConnHandle,
    pub tcp: tonic::transport::server::TcpConnectInfo,
}

impl tonic::transport::server::Connected for Tracked<tokio::net::TcpStream> {
    type ConnectInfo = GrpcConnectInfo;

    fn connect_info(&self) -> GrpcConnectInfo {
        GrpcConnectInfo {
            handle: self.handle(),
            tcp: self.io.connect_info(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max_connections: usize, budget: usize) -> Arc<Connections> {
        Connections::new(
            "test",
            ConnLimits {
                header_timeout: Duration::from_secs(3600),
                idle_timeout: Duration::from_secs(3600),
                max_connections,
            },
            true,
            Arc::new(FdBudget {
                open: AtomicUsize::new(0),
                limit: budget,
            }),
        )
    }

    #[test]
    fn a_full_listener_displaces_its_oldest_idle_connection() {
        let r = registry(2, 100);
        let first = r.admit().unwrap();
        let second = r.admit().unwrap();
        let _busy = second.conn().begin_request();
        let third = r.admit().expect("the idle first connection makes room");
        assert!(
            first.conn().closing(),
            "the oldest idle connection is closed"
        );
        assert!(!second.conn().closing() && !third.conn().closing());
        // Now every live connection is busy (the first is on its way out): refused.
        let _busy3 = third.conn().begin_request();
        drop(first);
        assert!(r.admit().is_none());
    }

    #[test]
    fn watching_connections_do_not_count_against_the_cap() {
        let r = registry(1, 100);
        let watcher = r.admit().unwrap();
        let _request = watcher.conn().begin_request();
        let _mark = r.mark_watch(watcher.conn());
        let api = r.admit().expect("the watcher is not counted");
        assert!(!watcher.conn().closing());
        drop(api);
    }

    #[test]
    fn the_descriptor_budget_bounds_every_connection() {
        let r = registry(100, 2);
        let a = r.admit().unwrap();
        let b = r.admit().unwrap();
        let _ga = a.conn().begin_request();
        let _gb = b.conn().begin_request();
        assert!(r.admit().is_none(), "no descriptors left and nothing idle");
    }

    #[test]
    fn the_sweeper_closes_a_silent_connection_but_not_a_busy_one() {
        let r = Connections::new(
            "test",
            ConnLimits {
                header_timeout: Duration::ZERO,
                idle_timeout: Duration::from_secs(3600),
                max_connections: 10,
            },
            true,
            Arc::new(FdBudget {
                open: AtomicUsize::new(0),
                limit: 10,
            }),
        );
        let silent = r.admit().unwrap();
        let busy = r.admit().unwrap();
        let _request = busy.conn().begin_request();
        r.sweep();
        assert!(silent.conn().closing());
        assert!(!busy.conn().closing());
    }
}
