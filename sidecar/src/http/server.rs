//! The HTTP server: an accept loop over hyper that bounds what a client can hold.
//!
//! warp's built-in server has no read timeouts, no connection cap and no way to close a
//! connection that stalls mid-request, so a few hundred idle sockets exhausted the file
//! descriptors and a half-sent request held SIGTERM for the whole grace period. Here:
//!
//! - **header read**: an HTTP/1 request whose head has started arriving must be
//!   complete within `http.header_read_timeout`;
//! - **idle**: a connection with no request in progress is closed after
//!   `http.idle_timeout` (hyper counts both with one timer, so they are kept here);
//! - **body read**: a body must arrive within `http.body_read_timeout` of its head (408);
//! - **cap**: at most `http.max_connections` open, lowered to fit `RLIMIT_NOFILE`. A
//!   connection beyond it makes room by closing the oldest *stalled* one (idle, or still
//!   sending its request), so probes and writes get in while junk connections are held;
//!   only when every connection is busy handling a complete request is it refused;
//! - **shutdown**: the listener keeps accepting for `http.shutdown_drain` (writes get
//!   503 + Retry-After, `/readyz` 503, instead of connection refused), then closes; every
//!   connection is asked to close after its current response, and those still stalled
//!   `http.shutdown_drain` later are closed. Requests being handled finish.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::{Mutex, MutexGuard};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use warp::http::{Request, StatusCode, header};
use warp::reply::Response;

use super::reply;
use crate::config::HttpConfig;
use crate::telemetry::metrics::Metrics;

/// Descriptors kept free for DuckDB, Redis, ClickHouse, S3 and the runtime itself.
const FD_RESERVE: u64 = 64;

/// Why the server closed a connection (the `reason` label of
/// `tradestore_http_connections_closed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum CloseReason {
    HeaderTimeout = 1,
    IdleTimeout = 2,
    Evicted = 3,
    Shutdown = 4,
}

impl CloseReason {
    fn label(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Evicted => "evicted",
            CloseReason::Shutdown => "shutdown",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => CloseReason::HeaderTimeout,
            2 => CloseReason::IdleTimeout,
            3 => CloseReason::Evicted,
            _ => CloseReason::Shutdown,
        }
    }
}

/// The timeouts and the cap, as configured (the cap already fitted to the fd limit).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    header_read: Duration,
    body_read: Duration,
    idle: Duration,
    drain: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Limits {
    /// The configured limits, with `max_connections` lowered so that the open
    /// connections plus [`FD_RESERVE`] fit the process's file descriptor limit, and
    /// each drain phase at most a quarter of `shutdown_grace`.
    pub fn new(cfg: &HttpConfig, shutdown_grace: Duration) -> Self {
        let fd_room = nofile_limit().map_or(usize::MAX, |n| n.saturating_sub(FD_RESERVE).max(16) as usize);
        Limits {
            header_read: cfg.header_read_timeout,
            body_read: cfg.body_read_timeout,
            idle: cfg.idle_timeout,
            drain: cfg.shutdown_drain.min(shutdown_grace / 4),
            max_connections: cfg.max_connections.min(fd_room),
        }
    }
}

/// The soft `RLIMIT_NOFILE`, if it is finite.
fn nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    (ok && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Milliseconds since the server started: cheap to keep in an atomic.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64 + 1
    }
}

/// What one connection is doing, updated by its socket, its requests and its bodies.
struct Activity {
    clock: Clock,
    /// Requests handed to the routes and not answered yet.
    in_request: AtomicUsize,
    /// Of those, requests whose body has fully arrived: real work, never cut short.
    processing: AtomicUsize,
    /// When the connection last had nothing to do (opened, or a response finished).
    idle_since_ms: AtomicU64,
    /// When the first bytes of a request whose head is not complete arrived (0: none).
    partial_since_ms: AtomicU64,
    /// An HTTP/2 connection: control frames flow between requests, so bytes arriving
    /// do not start a request head; only the idle timeout applies between streams.
    http2: AtomicBool,
    close: Notify,
    close_reason: AtomicU8,
}

impl Activity {
    fn new(clock: Clock) -> Self {
        Activity {
            clock,
            in_request: AtomicUsize::new(0),
            processing: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(clock.now_ms()),
            partial_since_ms: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            close: Notify::new(),
            close_reason: AtomicU8::new(0),
        }
    }

    /// Bytes arrived from the client: between HTTP/1 requests, they start a request head.
    fn bytes_arrived(&self, bytes: &[u8], first: bool) {
        // The HTTP/2 connection preface starts with `PRI ` (RFC 9113 section 3.4).
        if first && bytes.starts_with(b"PRI ") {
            self.http2.store(true, Ordering::SeqCst);
        }
        if !self.http2.load(Ordering::SeqCst) && self.in_request.load(Ordering::SeqCst) == 0 {
            let _ = self.partial_since_ms.compare_exchange(0, self.clock.now_ms(), Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// Stalled: nothing is being worked on, so closing loses no work (idle, a request
    /// head or body still arriving).
    fn is_stalled(&self) -> bool {
        self.processing.load(Ordering::SeqCst) == 0
    }

    /// When the connection must be closed if nothing happens, and why; `None` while a
    /// request is in progress (its body has its own deadline).
    fn deadline_ms(&self, limits: &Limits) -> Option<(u64, CloseReason)> {
        if self.in_request.load(Ordering::SeqCst) > 0 {
            return None;
        }
        match self.partial_since_ms.load(Ordering::SeqCst) {
            0 => Some((
                self.idle_since_ms.load(Ordering::SeqCst) + limits.idle.as_millis() as u64,
                CloseReason::IdleTimeout,
            )),
            since => Some((since + limits.header_read.as_millis() as u64, CloseReason::HeaderTimeout)),
        }
    }

    /// Asks the connection's task to drop the connection.
    fn close(&self, reason: CloseReason) {
        self.close_reason.store(reason as u8, Ordering::SeqCst);
        self.close.notify_one();
    }
}

/// Resolves when the connection has been left waiting past its deadline.
async fn watchdog(activity: &Activity, limits: &Limits) -> CloseReason {
    loop {
        let now = activity.clock.now_ms();
        // Never sleep longer than the header timeout: a request head that starts
        // arriving during the sleep has a deadline at least that far away, so it is
        // seen in time (deadlines move only later otherwise).
        let wake_within = limits.header_read.as_millis() as u64;
        let wait_ms = match activity.deadline_ms(limits) {
            Some((at, reason)) if at <= now => return reason,
            Some((at, _)) => (at - now).min(wake_within),
            // A request is in progress; deadlines start again after it.
            None => wake_within,
        };
        tokio::time::sleep(Duration::from_millis(wait_ms.max(1))).await;
    }
}

/// One request's share of its connection's [`Activity`], held by the request's body
/// and by the future answering it; the last one dropped ends the request.
struct RequestState {
    conn: Arc<Activity>,
    body_done: AtomicBool,
    body_timed_out: AtomicBool,
}

impl RequestState {
    fn begin(conn: Arc<Activity>) -> Arc<Self> {
        conn.in_request.fetch_add(1, Ordering::SeqCst);
        conn.partial_since_ms.store(0, Ordering::SeqCst);
        Arc::new(RequestState { conn, body_done: AtomicBool::new(false), body_timed_out: AtomicBool::new(false) })
    }

    fn body_complete(&self) {
        if !self.body_done.swap(true, Ordering::SeqCst) {
            self.conn.processing.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for RequestState {
    fn drop(&mut self) {
        if self.body_done.load(Ordering::SeqCst) {
            self.conn.processing.fetch_sub(1, Ordering::SeqCst);
        }
        self.conn.idle_since_ms.store(self.conn.clock.now_ms(), Ordering::SeqCst);
        self.conn.in_request.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request body that must arrive in full before its deadline.
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    state: Arc<RequestState>,
}

/// The error a late body ends with; the answer is replaced by a 408.
#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body not received in time")
    }
}

impl std::error::Error for BodyTimeout {}

impl Body for TimedBody {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.state.body_complete();
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                if this.inner.is_end_stream() {
                    this.state.body_complete();
                }
                Poll::Ready(Some(frame.map_err(Into::into)))
            }
            Poll::Pending => {
                ready!(this.deadline.as_mut().poll(cx));
                this.state.body_timed_out.store(true, Ordering::SeqCst);
                Poll::Ready(Some(Err(Box::new(BodyTimeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that reports when bytes arrive (to start the header-read clock).
struct WatchedStream {
    inner: TcpStream,
    activity: Arc<Activity>,
    read_before: bool,
}

impl AsyncRead for WatchedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            let first = !std::mem::replace(&mut self.read_before, true);
            self.activity.bytes_arrived(&buf.filled()[before..], first);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The routes as a service (what `warp::service` makes of them; its type is unnameable).
trait Routes:
    Service<Request<TimedBody>, Response = Response, Error = Infallible, Future: Send> + Clone + Send + Sync + 'static
{
}

impl<T> Routes for T where
    T: Service<Request<TimedBody>, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The open connections, oldest first.
struct Registry {
    next_id: u64,
    open: BTreeMap<u64, Arc<Activity>>,
}

/// State shared by the accept loop and every connection task.
struct Shared {
    limits: Limits,
    metrics: Arc<Metrics>,
    clock: Clock,
    registry: Mutex<Registry>,
    /// Flips to true when connections should close after their current response.
    closing: watch::Sender<bool>,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock()
    }

    /// Registers a new connection, first making room if the cap is reached; `None`
    /// when every open connection is doing real work.
    fn admit(&self) -> Option<(u64, Arc<Activity>)> {
        let mut reg = self.registry();
        if reg.open.len() >= self.limits.max_connections && !Self::evict_one(&mut reg) {
            return None;
        }
        let id = reg.next_id;
        reg.next_id += 1;
        let activity = Arc::new(Activity::new(self.clock));
        reg.open.insert(id, activity.clone());
        self.metrics.http_open_connections.set(reg.open.len() as i64);
        Some((id, activity))
    }

    /// Closes the oldest stalled connection, preferring one with no request at all.
    fn evict_one(reg: &mut Registry) -> bool {
        let victim = reg
            .open
            .iter()
            .filter(|(_, a)| a.is_stalled())
            .min_by_key(|(id, a)| (a.in_request.load(Ordering::SeqCst) > 0, **id))
            .map(|(id, _)| *id);
        match victim.and_then(|id| reg.open.remove(&id)) {
            Some(a) => {
                a.close(CloseReason::Evicted);
                true
            }
            None => false,
        }
    }

    fn forget(&self, id: u64) {
        let mut reg = self.registry();
        reg.open.remove(&id);
        self.metrics.http_open_connections.set(reg.open.len() as i64);
    }

    fn open_connections(&self) -> usize {
        self.registry().open.len()
    }

    /// Closes every connection that is not handling a complete request.
    fn close_stalled(&self) {
        for a in self.registry().open.values().filter(|a| a.is_stalled()) {
            a.close(CloseReason::Shutdown);
        }
    }
}

/// Serves `routes` on `listener` until `stop` is cancelled, then drains (see the module
/// documentation) and returns once every connection is closed.
pub async fn serve<F>(listener: TcpListener, routes: F, limits: Limits, metrics: Arc<Metrics>, stop: CancellationToken)
where
    F: warp::Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let shared = Arc::new(Shared {
        limits,
        metrics,
        clock: Clock(Instant::now()),
        registry: Mutex::new(Registry { next_id: 0, open: BTreeMap::new() }),
        closing: watch::Sender::new(false),
    });
    let service = warp::service(routes);
    accept_until(&listener, &shared, &service, stop.cancelled()).await;
    tracing::info!(drain = ?limits.drain, "shutdown: still accepting while the drain lasts; writes get 503");
    accept_until(&listener, &shared, &service, tokio::time::sleep(limits.drain)).await;
    drop(listener);
    shared.closing.send_replace(true);
    if !wait_closed(&shared, limits.drain).await {
        tracing::info!(open = shared.open_connections(), "closing connections stalled mid-request");
        shared.close_stalled();
    }
    // What is left is handling complete requests; lifecycle.shutdown_grace bounds it.
    wait_closed(&shared, Duration::MAX).await;
}

/// Accepts connections until `until` resolves.
async fn accept_until(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    service: &impl Routes,
    until: impl std::future::Future,
) {
    let mut until = std::pin::pin!(until);
    loop {
        let accepted = tokio::select! {
            _ = &mut until => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => start_connection(shared, service, stream),
            Err(e) => accept_failed(shared, &e).await,
        }
    }
}

/// Out of descriptors: close a stalled connection so the next accept can succeed;
/// other accept errors concern one connection only.
async fn accept_failed(shared: &Shared, e: &io::Error) {
    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
        tracing::warn!(error = %e, open = shared.open_connections(), "out of file descriptors; closing a stalled connection");
        if !Shared::evict_one(&mut shared.registry()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        tracing::debug!(error = %e, "accept failed");
    }
}

fn start_connection(shared: &Arc<Shared>, service: &impl Routes, stream: TcpStream) {
    let Some((id, activity)) = shared.admit() else {
        shared.metrics.http_connections_rejected.inc();
        tracing::debug!(max = shared.limits.max_connections, "connection refused: every connection is busy");
        return;
    };
    let (shared, service) = (shared.clone(), service.clone());
    tokio::spawn(async move {
        let closed = serve_connection(&shared, service, stream, &activity).await;
        if let Some(reason) = closed {
            shared.metrics.http_connections_closed.with_label_values(&[reason.label()]).inc();
            tracing::debug!(reason = reason.label(), "connection closed by the server");
        }
        shared.forget(id);
    });
}

/// Runs one connection to its end; returns why the server cut it short, if it did.
async fn serve_connection(
    shared: &Shared,
    service: impl Routes,
    stream: TcpStream,
    activity: &Arc<Activity>,
) -> Option<CloseReason> {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(WatchedStream { inner: stream, activity: activity.clone(), read_before: false });
    let (conn_activity, body_read, metrics) = (activity.clone(), shared.limits.body_read, shared.metrics.clone());
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        answer(service.clone(), req, RequestState::begin(conn_activity.clone()), body_read, metrics.clone())
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // The header clock is ours (see the module docs): hyper's would also cut idle
    // keep-alive connections at the header timeout.
    builder.http1().header_read_timeout(None);
    let conn = builder.serve_connection(io, svc);
    let mut conn = std::pin::pin!(conn);
    let mut closing = shared.closing.subscribe();
    let mut asked_to_close = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    // Resets, malformed requests: the client's business, not an error here.
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return None;
            }
            reason = watchdog(activity, &shared.limits) => return Some(reason),
            () = activity.close.notified() => {
                return Some(CloseReason::from_u8(activity.close_reason.load(Ordering::SeqCst)));
            }
            _ = closing.wait_for(|c| *c), if !asked_to_close => {
                asked_to_close = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Hands one request to the routes, its body on a deadline; a body that did not
/// arrive in time is answered 408 and the connection closed.
async fn answer(
    mut service: impl Routes,
    req: Request<Incoming>,
    state: Arc<RequestState>,
    body_read: Duration,
    metrics: Arc<Metrics>,
) -> Result<Response, Infallible> {
    if req.body().is_end_stream() {
        state.body_complete();
    }
    let deadline = Box::pin(tokio::time::sleep(body_read));
    let req = req.map(|inner| TimedBody { inner, deadline, state: state.clone() });
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let mut response = service.call(req).await?;
    if state.body_timed_out.load(Ordering::SeqCst) {
        metrics.http_connections_closed.with_label_values(&["body_timeout"]).inc();
        response = reply::error(StatusCode::REQUEST_TIMEOUT, "timeout", BodyTimeout.to_string());
        response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    super::note_client_error(&metrics, &method, &path, response.status());
    Ok(response)
}

/// Waits until no connection is open, at most `within`; true when none is.
async fn wait_closed(shared: &Shared, within: Duration) -> bool {
    let deadline = Instant::now().checked_add(within);
    while shared.open_connections() > 0 {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}
