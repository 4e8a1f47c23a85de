//! The listening socket and the accept loop: connection limits, shedding,
//! timeouts, graceful stop.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;

use super::conns::{Conns, Watched};
use super::stall::StallGuard;
use super::{routes, App};
use crate::config::{DRAIN_TIMEOUT, HEADER_TIMEOUT, WRITE_STALL};
use crate::notify;

/// Connections served at once. Each costs a task, buffers and a file
/// descriptor; Svix opens a handful, a proxy in front a few dozen. When all
/// are taken, the quietest one waiting for its client makes room (see
/// [`super::conns`]).
pub const MAX_CONNECTIONS: usize = 1024;

/// Connections the kernel completes and queues before they are accepted:
/// as many as are served, so a burst as large as the limit waits in the
/// queue rather than having its handshakes dropped and retried seconds
/// later. (The kernel caps it at `net.core.somaxconn`.)
const BACKLOG: u32 = MAX_CONNECTIONS as u32;

/// hyper's read buffer per connection, and so the most a request's headers
/// may take (larger ones are refused with 431). hyper's default, ~400 KB,
/// times every connection is more memory than a webhook receiver needs.
const MAX_BUFFER: usize = 64 * 1024;

/// How often at most the log says that connections are being shed, or
/// that accepting one failed.
const SHED_LOG_EVERY: Duration = Duration::from_secs(60);

/// Binds `addr` (a name is looked up; its addresses are tried in turn)
/// with a listen queue as long as the connection limit.
///
/// # Errors
/// When no address of it can be bound.
pub async fn bind(addr: &str) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match bind_one(addr) {
            Ok(listener) => {
                warn_if_queue_capped();
                return Ok(listener);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the name resolved to no address",
        )
    }))
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std and tokio do: a restart can bind again at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The kernel silently shortens a listen queue longer than
/// `net.core.somaxconn` (128 before Linux 5.4).
fn warn_if_queue_capped() {
    let Ok(text) = std::fs::read_to_string("/proc/sys/net/core/somaxconn") else {
        return;
    };
    if let Ok(cap) = text.trim().parse::<u32>() {
        if cap < BACKLOG {
            tracing::warn!(
                somaxconn = cap,
                wanted = BACKLOG,
                "the kernel caps the listen queue below the connection limit; under a flood of \
                 connections some handshakes wait seconds for a retry (raise it with \
                 sysctl net.core.somaxconn={BACKLOG})"
            );
        }
    }
}

/// Accepts connections until `shutdown` resolves, then stops accepting and
/// lets in-flight requests finish.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_BUFFER)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let conns = Conns::new();
    // When the log last said that all connections were taken, or that an
    // accept failed: under a flood, once a minute is enough.
    let mut shed_logged: Option<Instant> = None;
    let mut accept_logged: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Usually out of file descriptors (EMFILE, ENFILE): a
                    // quiet connection gives one back; else back off
                    // instead of spinning.
                    if accept_logged.is_none_or(|at| at.elapsed() >= SHED_LOG_EVERY) {
                        tracing::warn!(error = %e, "accept failed");
                        accept_logged = Some(Instant::now());
                    } else {
                        tracing::debug!(error = %e, "accept failed again");
                    }
                    let out_of_files = matches!(e.raw_os_error(), Some(23 | 24));
                    let pause = if out_of_files && conns.shed_quietest() { 5 } else { 50 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // Every slot is taken: the quietest connection waiting for
                // its client goes. Should none be quiet enough, the
                // newcomer waits for the first that is, or for one to close.
                if shed_logged.is_none_or(|at| at.elapsed() >= SHED_LOG_EVERY) {
                    tracing::warn!(
                        connections = conns.len(),
                        "all connections taken; shedding the quietest to let new ones in"
                    );
                    shed_logged = Some(Instant::now());
                }
                let mut shed = conns.shed_quietest();
                let slot = loop {
                    tokio::select! {
                        slot = slots.clone().acquire_owned() => break slot.ok(),
                        () = tokio::time::sleep(Duration::from_millis(50)) => {
                            if !shed {
                                shed = conns.shed_quietest();
                            }
                        }
                        () = &mut shutdown => break None,
                    }
                };
                match slot {
                    Some(slot) => slot,
                    None => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let registered = conns.register();
        let conn = registered.conn().clone();
        let handle = registered.handle();
        let app = app.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            let (app, handle) = (app.clone(), handle.clone());
            async move {
                handle.request_started();
                req.extensions_mut().insert(handle.clone());
                let response = routes::handle(app, req).await;
                handle.request_done();
                response
            }
        });
        let stream = StallGuard::new(Watched::new(stream, conn.clone()), WRITE_STALL);
        let served = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            tokio::select! {
                ended = served => if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                () = conn.shed_requested() => tracing::debug!("connection shed"),
            }
            drop(registered);
            drop(slot);
        });
    }
    drop(listener);
    drop(app);
    if let Err(e) = notify::notify("STOPPING=1") {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("connections still open after the drain timeout"),
    }
}
