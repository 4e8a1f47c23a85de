//! The accept loop: connection limits, timeouts, graceful stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::stall::StallGuard;
use super::{routes, App};
use crate::config::{DRAIN_TIMEOUT, HEADER_TIMEOUT, WRITE_STALL};
use crate::notify;

/// Connections served at once. Each costs a task, buffers and a file
/// descriptor; Svix opens a handful, a proxy in front a few dozen.
const MAX_CONNECTIONS: usize = 1024;

/// hyper's read buffer per connection, and so the most a request's headers
/// may take (larger ones are refused with 431). hyper's default, ~400 KB,
/// times every connection is more memory than a webhook receiver needs.
const MAX_BUFFER: usize = 64 * 1024;

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
    tokio::pin!(shutdown);
    loop {
        // A free slot first: at the limit, new connections wait in the
        // listen queue until one closes (idle ones close within 10 s).
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Usually out of file descriptors; back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = service_fn(move |req| routes::handle(app.clone(), req));
                let stream = StallGuard::new(stream, WRITE_STALL);
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
            () = &mut shutdown => break,
        }
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
