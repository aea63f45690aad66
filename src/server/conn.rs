//! The accept loop and each client connection's lifetime: at most `server.max_connections`
//! open, the header and idle timeouts, and graceful shutdown.
//!
//! `axum::serve` offers none of these, and hyper's own `header_read_timeout` also runs while
//! a kept-alive connection waits for its next request, so it cannot tell a slow head (closed
//! after seconds) from an idle connection a proxy keeps for reuse (closed after a minute or
//! more). Each connection therefore keeps one [`Activity`]: its I/O marks when a request's
//! head begins, its service marks when a request is in hand, and the connection's task closes
//! it when the deadline of its current phase passes.

use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::ServerConfig;
use crate::metrics::{ConnectionClose, Registry};

/// The connection settings of `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `server.header_timeout`.
    pub header: Duration,
    /// `server.idle_timeout`.
    pub idle: Duration,
    /// `server.max_connections`.
    pub max_connections: usize,
}

impl From<&ServerConfig> for Limits {
    fn from(server: &ServerConfig) -> Self {
        Self {
            header: server.header_timeout,
            idle: server.idle_timeout,
            max_connections: server.max_connections,
        }
    }
}

/// Serves `router` on `listener` until `stop` is cancelled; then stops accepting, lets every
/// connection finish the request it is in (idle ones close at once) and returns when all are
/// closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    counters: Arc<Registry>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let shed = Arc::new(Notify::new());
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    accept_failed(err, &stop).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let Some(slot) = take_slot(&slots, &shed, &counters, limits.header, &stop).await else {
            // Shutting down, or no place came free in time: the connection is dropped.
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            router.clone(),
            limits,
            Shared {
                counters: counters.clone(),
                shed: shed.clone(),
                stop: stop.clone(),
            },
            slot,
        ));
    }
    // Closing the listener refuses new connections while the open ones finish.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Files Sluice needs besides client connections: the database (a pool, or SQLite's files),
/// Slack connections, the listener, logs.
const OTHER_FILES: u64 = 128;

/// Raises this process's soft limit of open files to its hard limit, as Go programs do at
/// start: systemd's default, inherited by services and often by containers, is a soft 1,024
/// (hard 524,288), and every client connection is a file. Warns when `max_connections` does
/// not fit in the limit with room for the rest; returns the limit in force (`None`:
/// unlimited).
pub fn raise_open_files_limit(max_connections: usize) -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(err) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(error = %err, "server: cannot raise the open-files limit");
        }
    }
    let current = getrlimit(Resource::Nofile).current;
    if let Some(files) = current
        && max_connections as u64 + OTHER_FILES > files
    {
        tracing::warn!(
            open_files_limit = files,
            max_connections,
            "server: server.max_connections does not fit in the open-files limit with room for \
             the database and Slack: raise LimitNOFILE (ulimit -n) or lower server.max_connections"
        );
    }
    current
}

/// A free connection place. At the limit, idle kept-alive connections are asked to close
/// and the place is awaited for up to `wait`.
async fn take_slot(
    slots: &Arc<Semaphore>,
    shed: &Notify,
    counters: &Registry,
    wait: Duration,
    stop: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(slot) = slots.clone().try_acquire_owned() {
        return Some(slot);
    }
    let times = counters
        .http_connection_limit_reached
        .fetch_add(1, Ordering::Relaxed)
        + 1;
    // Logged the 1st, 2nd, 4th, 8th… time, so that a flood of connections cannot flood the log.
    if times.is_power_of_two() {
        tracing::warn!(
            times,
            "server: server.max_connections reached; closing idle connections to make room"
        );
    }
    shed.notify_waiters();
    tokio::select! {
        slot = tokio::time::timeout(wait, slots.clone().acquire_owned()) => slot.ok()?.ok(),
        _ = stop.cancelled() => None,
    }
}

/// An accept error: a connection that went away before it was accepted is nothing; anything
/// else (out of file descriptors: `EMFILE`) is logged and retried after a second, when
/// connections may have closed.
async fn accept_failed(err: io::Error, stop: &CancellationToken) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "server: accept failed; retrying in 1 s");
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        _ = stop.cancelled() => {}
    }
}

/// What every connection task shares.
struct Shared {
    counters: Arc<Registry>,
    /// Signalled when `max_connections` is reached: idle kept-alive connections close.
    shed: Arc<Notify>,
    stop: CancellationToken,
}

/// Serves one connection until it closes, its header or idle deadline passes, it is shed,
/// or (after `stop`) it has finished its request.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    shared: Shared,
    _slot: OwnedSemaphorePermit,
) {
    let counters = &shared.counters;
    counters.http_connections.fetch_add(1, Ordering::Relaxed);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let in_hand = activity.request_started();
            let answer = router.clone().oneshot(req);
            async move {
                let response = answer.await;
                drop(in_hand);
                response
            }
        })
    };
    let mut conn = pin!(
        hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            // The deadlines below replace hyper's, which cannot tell idle from slow.
            .header_read_timeout(None)
            .serve_connection(io, service)
    );
    let mut stopping = false;
    let closed = loop {
        let phase = activity.phase();
        let deadline = phase.deadline(&limits);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "server: connection ended with an error");
                }
                break None;
            }
            _ = activity.changed.notified() => {}
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                break Some(phase.timeout_reason());
            }
            _ = shared.shed.notified(), if phase.is_idle_between_requests() => {
                break Some(ConnectionClose::Shed);
            }
            _ = shared.stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Some(why) = closed {
        tracing::debug!(reason = why.label(), "server: closing a connection");
        counters.connection_closed(why);
    }
    counters.http_connections.fetch_sub(1, Ordering::Relaxed);
}

/// Where a connection stands, as far as its deadlines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in hand: waiting for one since `since` (the connection's opening, or the
    /// previous answer), its head begun at `head_started`.
    Waiting {
        since: Instant,
        kept_alive: bool,
        head_started: Option<Instant>,
    },
    /// A request is being handled; its body and total time have their own timeouts (tower
    /// layers in [`crate::server::app`]).
    Busy,
}

impl Phase {
    /// When the connection is closed if nothing changes; `None` while a request is in hand.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        match *self {
            Phase::Busy => None,
            // The first request's head must be complete within the header timeout of the
            // connection's opening: a connection that never sends one is not kept for long.
            Phase::Waiting {
                since,
                kept_alive: false,
                ..
            } => Some(since + limits.header),
            Phase::Waiting {
                head_started: Some(started),
                ..
            } => Some(started + limits.header),
            Phase::Waiting { since, .. } => Some(since + limits.idle),
        }
    }

    /// Why a passed deadline closes the connection.
    fn timeout_reason(&self) -> ConnectionClose {
        if self.is_idle_between_requests() {
            ConnectionClose::IdleTimeout
        } else {
            ConnectionClose::HeaderTimeout
        }
    }

    /// A kept-alive connection with nothing of its next request yet: closing it loses nothing.
    fn is_idle_between_requests(&self) -> bool {
        matches!(
            self,
            Phase::Waiting {
                kept_alive: true,
                head_started: None,
                ..
            }
        )
    }
}

/// A connection's [`Phase`], shared by its I/O, its service and its task.
struct Activity {
    phase: Mutex<Phase>,
    /// Wakes the connection's task to look at a new phase.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Waiting {
                since: Instant::now(),
                kept_alive: false,
                head_started: None,
            }),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
        self.changed.notify_one();
    }

    /// Bytes arrived: while waiting, the next request's head has begun.
    fn bytes_read(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Phase::Waiting {
            head_started: started @ None,
            ..
        } = &mut *phase
        {
            *started = Some(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// A request's head is complete and handed to the router; the connection waits again when
    /// the returned guard is dropped (the answer is ready, or the request was abandoned).
    fn request_started(self: &Arc<Self>) -> InHand {
        self.set(Phase::Busy);
        InHand(self.clone())
    }
}

/// A request in hand on a connection; see [`Activity::request_started`].
struct InHand(Arc<Activity>);

impl Drop for InHand {
    fn drop(&mut self) {
        self.0.set(Phase::Waiting {
            since: Instant::now(),
            kept_alive: true,
            head_started: None,
        });
    }
}

/// A connection's socket, telling its [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header: Duration::from_secs(5),
        idle: Duration::from_secs(75),
        max_connections: 1,
    };

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        use rustix::process::{Resource, getrlimit};
        let hard = getrlimit(Resource::Nofile).maximum;
        assert_eq!(raise_open_files_limit(1), hard);
        assert_eq!(getrlimit(Resource::Nofile).current, hard);
    }

    #[test]
    fn each_phase_has_its_deadline() {
        let t0 = Instant::now();
        let fresh = Phase::Waiting {
            since: t0,
            kept_alive: false,
            head_started: None,
        };
        assert_eq!(fresh.deadline(&LIMITS), Some(t0 + LIMITS.header));
        assert_eq!(fresh.timeout_reason(), ConnectionClose::HeaderTimeout);
        assert!(!fresh.is_idle_between_requests());

        let idle = Phase::Waiting {
            since: t0,
            kept_alive: true,
            head_started: None,
        };
        assert_eq!(idle.deadline(&LIMITS), Some(t0 + LIMITS.idle));
        assert_eq!(idle.timeout_reason(), ConnectionClose::IdleTimeout);
        assert!(idle.is_idle_between_requests());

        let t1 = t0 + Duration::from_secs(60);
        let next_head = Phase::Waiting {
            since: t0,
            kept_alive: true,
            head_started: Some(t1),
        };
        assert_eq!(next_head.deadline(&LIMITS), Some(t1 + LIMITS.header));
        assert_eq!(next_head.timeout_reason(), ConnectionClose::HeaderTimeout);
        assert_eq!(Phase::Busy.deadline(&LIMITS), None);
    }

    #[test]
    fn a_request_in_hand_lifts_the_deadline_until_it_is_answered() {
        let activity = Arc::new(Activity::new());
        activity.bytes_read();
        assert!(matches!(
            activity.phase(),
            Phase::Waiting {
                kept_alive: false,
                head_started: Some(_),
                ..
            }
        ));
        let in_hand = activity.request_started();
        assert_eq!(activity.phase(), Phase::Busy);
        // Body bytes read while a request is in hand do not start a head.
        activity.bytes_read();
        assert_eq!(activity.phase(), Phase::Busy);
        let answered = Instant::now();
        drop(in_hand);
        let Phase::Waiting {
            since,
            kept_alive: true,
            head_started: None,
        } = activity.phase()
        else {
            panic!(
                "not waiting as a kept-alive connection: {:?}",
                activity.phase()
            );
        };
        assert!(since >= answered);
        // The next request's first byte starts its head.
        activity.bytes_read();
        assert!(!activity.phase().is_idle_between_requests());
    }
}
