//! `clerk-sync serve`: wiring the database, the writer and the HTTP server,
//! and stopping gracefully.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::cli::ServeArgs;
use crate::metrics::Metrics;
use crate::routes::{self, App};
use crate::writer::Writer;
use crate::{config, db, notify, shutdown};

/// A client must finish sending its request headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// In-flight deliveries get this long to finish after a stop signal; under
/// systemd's default stop timeout.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

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
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
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
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
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
