//! `clerk-sync serve`: wiring the database, the writer and the HTTP server,
//! and stopping gracefully.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Sleep;

use crate::cli::ServeArgs;
use crate::metrics::Metrics;
use crate::routes::{self, App};
use crate::writer::Writer;
use crate::{config, db, notify, shutdown};

/// A client must finish sending its request headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A client that takes none of its answer for this long is cut off: without
/// it, one that pipelines requests and never reads holds its connection and
/// a socket buffer forever, and enough of them use up the process's files.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// In-flight deliveries get this long to finish after a stop signal; under
/// systemd's default stop timeout.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Connections served at once. Each costs a task, buffers and a file
/// descriptor; Svix opens a handful, a proxy in front a few dozen.
const MAX_CONNECTIONS: usize = 1024;

/// hyper's read buffer per connection, and so the most a request's headers
/// may take (larger ones are refused with 431). hyper's default, ~400 KB,
/// times every connection is more memory than a webhook receiver needs.
const MAX_BUFFER: usize = 64 * 1024;

/// Runs the receiver until SIGTERM or SIGINT.
///
/// # Errors
/// Start-up failures: secrets, database, bind. Each message is one line.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let stop = shutdown::on_signal().context("cannot watch SIGTERM and SIGINT")?;
    let secrets = config::load_secrets(args.secrets.secret_file.as_deref())?;
    let busy = Duration::from_millis(args.busy_timeout);
    let conn = db::open_writer(&args.db, busy)?;
    let file = db::DbFile::open(&args.db)
        .with_context(|| format!("cannot examine {}", args.db.display()))?;
    let readers = db::read_pool(&args.db, busy)?;
    let metrics = Metrics::new(args.db.clone());
    let (writer, writer_thread) = Writer::spawn(conn, file.clone(), metrics.clone(), busy)
        .context("cannot start the database writer")?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let app = Arc::new(App {
        path: args.path.clone(),
        secrets,
        tolerance: args.tolerance,
        max_body: args.max_body,
        writer,
        readers,
        file,
        metrics,
        bodies: routes::BodyBudget::new(args.max_body),
    });
    tracing::info!(
        db = %args.db.display(),
        secrets = app.secrets.len(),
        "listening on http://{addr} (webhook path {})",
        args.path
    );
    if let Err(e) = notify::notify(&format!("READY=1\nSTATUS=listening on {addr}")) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
    let watchdog =
        notify::watchdog_interval().map(|every| tokio::spawn(watchdog(app.clone(), every)));

    run(listener, app, stop).await;

    if let Some(task) = watchdog {
        task.abort();
    }
    // The writer ends once the last handle is gone and its queue is empty;
    // waiting for it means the last acknowledged batch is on disk.
    let joined = tokio::task::spawn_blocking(move || writer_thread.join());
    if tokio::time::timeout(Duration::from_secs(10), joined)
        .await
        .is_err()
    {
        tracing::warn!("database writer did not finish in time");
    }
    tracing::info!("stopped");
    Ok(())
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

/// Pings systemd's watchdog while `/healthz` would answer 200, so a wedged
/// process, or one whose database file was removed or replaced, is restarted
/// rather than left accepting and failing.
async fn watchdog(app: Arc<App>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if routes::check_health(&app).await.is_ok() {
            if let Err(e) = notify::notify("WATCHDOG=1") {
                tracing::debug!(error = %e, "cannot ping the watchdog");
            }
        }
    }
}

/// A stream whose writes fail once the peer has taken nothing for `limit`.
/// The timer exists only while a write waits, so answers that go out at
/// once cost nothing extra.
struct StallGuard<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> StallGuard<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After the inner write said Pending: Pending still, or the error once
    /// the stall has lasted `limit`.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took none of its answer in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(done) => {
                self.stalled = None;
                Poll::Ready(done)
            }
            Poll::Pending => self.stall(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(cx, polled)
    }
}
