//! The connections being served, and which to shed when they are all taken.
//!
//! Every connection is one of [`MAX_CONNECTIONS`](super::server) slots.
//! A stranger can take a slot for the price of a TCP handshake and hold it
//! by saying nothing (no headers, or headers and then no body), so once all
//! slots are taken the quietest connection that is waiting for its client
//! is closed to let the newcomer in. A connection whose request is being
//! worked on (verified, written, answered) is never shed: once a delivery
//! is in, it gets its answer.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// A connection must have been quiet (nothing read or written) this long
/// before it may be shed, so one whose answer has just gone out, or that is
/// being served right now, is not cut while it is in use.
const MIN_QUIET: Duration = Duration::from_millis(250);

/// Waiting for its client: for the next request's headers, or between
/// requests.
const WAITING: u8 = 0;
/// Reading a body, which a client can leave unsent.
const BODY: u8 = 1;
/// Inside a handler, past its body: verifying, writing, answering.
const WORKING: u8 = 2;
/// Chosen to be closed.
const SHED: u8 = 3;

/// Every connection being served.
pub(super) struct Conns {
    epoch: Instant,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

/// One connection's state, shared by its task, its stream and the registry.
pub struct Conn {
    epoch: Instant,
    /// Milliseconds from `epoch` to the last byte read or written.
    last_active: AtomicU64,
    phase: AtomicU8,
    shed: Notify,
}

/// A request's handle on its connection, in the request's extensions.
#[derive(Clone)]
pub struct ConnHandle(Arc<Conn>);

/// Takes the connection out of the registry when its task ends.
pub(super) struct Registered {
    conns: Arc<Conns>,
    id: u64,
    conn: Arc<Conn>,
}

impl Conns {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Adds a connection just accepted; it counts as active now.
    pub(super) fn register(self: &Arc<Self>) -> Registered {
        let conn = Arc::new(Conn {
            epoch: self.epoch,
            last_active: AtomicU64::new(0),
            phase: AtomicU8::new(WAITING),
            shed: Notify::new(),
        });
        conn.touch();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, conn.clone());
        Registered {
            conns: self.clone(),
            id,
            conn,
        }
    }

    /// Closes the connection that has waited longest for its client, among
    /// those quiet for at least [`MIN_QUIET`]. `false` when there is none:
    /// every connection is busy or was active a moment ago.
    pub(super) fn shed_quietest(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let now = ms_since(self.epoch);
        let quiet_enough = now.saturating_sub(millis(MIN_QUIET));
        // A victim may turn busy between the look and the shedding; then
        // the next quietest is tried.
        let mut candidates: Vec<(u64, u64, &Arc<Conn>)> = open
            .iter()
            .filter(|(_, c)| matches!(c.phase.load(Ordering::Acquire), WAITING | BODY))
            .map(|(id, c)| (c.last_active.load(Ordering::Relaxed), *id, c))
            .filter(|(last, _, _)| *last <= quiet_enough)
            .collect();
        // Among equally quiet ones, the oldest first.
        candidates.sort_unstable_by_key(|(last, id, _)| (*last, *id));
        candidates.into_iter().any(|(_, _, c)| c.shed())
    }

    /// How many connections are open.
    pub(super) fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Registered {
    pub(super) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    pub(super) fn handle(&self) -> ConnHandle {
        ConnHandle(self.conn.clone())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.conns
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Conn {
    fn touch(&self) {
        self.last_active
            .store(ms_since(self.epoch), Ordering::Relaxed);
    }

    /// Marks the connection shed, unless it is busy, and wakes its task.
    fn shed(&self) -> bool {
        let shed = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                matches!(p, WAITING | BODY).then_some(SHED)
            })
            .is_ok();
        if shed {
            self.shed.notify_one();
        }
        shed
    }

    /// Resolves once the connection has been chosen to be closed.
    pub(super) async fn shed_requested(&self) {
        self.shed.notified().await;
    }

    fn set(&self, from: &[u8], to: u8) -> bool {
        self.phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                from.contains(&p).then_some(to)
            })
            .is_ok()
    }

    /// A request came in: its handler runs.
    pub(super) fn request_started(&self) {
        self.set(&[WAITING], WORKING);
    }

    /// The handler is done: the connection waits for its client again.
    pub(super) fn request_done(&self) {
        self.set(&[WORKING, BODY], WAITING);
    }
}

impl ConnHandle {
    /// A request came in: its handler runs.
    pub(super) fn request_started(&self) {
        self.0.request_started();
    }

    /// The handler is done: the connection waits for its client again.
    pub(super) fn request_done(&self) {
        self.0.request_done();
    }

    /// The request is now waiting for its body, which the client may never
    /// send: the connection may be shed meanwhile.
    pub fn reading_body(&self) {
        self.0.set(&[WORKING], BODY);
    }

    /// The body is in and the request is worked on: the connection is no
    /// longer shed. `false` if it was shed first; the request must then
    /// stop without starting anything, since nobody will hear its answer.
    #[must_use]
    pub fn body_done(&self) -> bool {
        self.0.set(&[BODY, WORKING], WORKING)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ms_since(epoch: Instant) -> u64 {
    millis(epoch.elapsed())
}

/// A stream that records, on its connection, when bytes last moved.
pub(super) struct Watched<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, conn: Arc<Conn>) -> Self {
        Self { inner, conn }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.touch();
        }
        polled
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

    fn age(conn: &Conn, by: Duration) {
        let now = conn.last_active.load(Ordering::Relaxed);
        conn.last_active
            .store(now.saturating_sub(millis(by)), Ordering::Relaxed);
    }

    #[test]
    fn the_quietest_waiting_connection_is_shed_and_a_busy_one_never() {
        // A registry that has run for a minute, so ages can be faked.
        let epoch = Instant::now()
            .checked_sub(Duration::from_secs(60))
            .unwrap_or_else(Instant::now);
        let conns = Arc::new(Conns {
            epoch,
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        let busy = conns.register();
        let quiet = conns.register();
        let quieter = conns.register();
        let fresh = conns.register();
        age(busy.conn(), Duration::from_secs(30));
        age(quiet.conn(), Duration::from_secs(5));
        age(quieter.conn(), Duration::from_secs(9));
        busy.conn().request_started();
        quieter.conn().request_started();
        quieter.handle().reading_body();

        assert!(conns.shed_quietest());
        assert_eq!(quieter.conn().phase.load(Ordering::Acquire), SHED);
        assert!(!quieter.handle().body_done(), "a shed request stops");
        assert!(conns.shed_quietest());
        assert_eq!(quiet.conn().phase.load(Ordering::Acquire), SHED);
        // Left: one busy, one active a moment ago.
        assert!(!conns.shed_quietest());
        assert_eq!(busy.conn().phase.load(Ordering::Acquire), WORKING);
        assert_eq!(fresh.conn().phase.load(Ordering::Acquire), WAITING);
        assert_eq!(conns.len(), 4);
        drop(fresh);
        assert_eq!(conns.len(), 3);
    }

    #[test]
    fn a_body_that_arrived_first_keeps_its_connection() {
        let conns = Conns::new();
        let c = conns.register();
        c.conn().request_started();
        c.handle().reading_body();
        assert!(c.handle().body_done());
        age(c.conn(), Duration::from_secs(1));
        assert!(!c.conn().shed(), "busy");
        c.conn().request_done();
        assert!(c.conn().shed(), "waiting again");
    }
}
