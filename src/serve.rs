//! `clerk-sync serve`: the composition root. A validated [`Config`] becomes
//! the store, the metrics and the HTTP app; systemd hears when it is ready.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::cli::ServeArgs;
use crate::config::Config;
use crate::http::body::BodyBudget;
use crate::http::{self, App};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::{notify, shutdown};

/// Runs the receiver until SIGTERM or SIGINT.
///
/// # Errors
/// Start-up failures: secrets, database, bind. Each message is one line.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let stop = shutdown::on_signal().context("cannot watch SIGTERM and SIGINT")?;
    let config = Config::from_args(&args)?;
    // Bound before the database is opened, so a start that fails for the
    // port (in use, say) leaves no new database file behind.
    let listener = http::server::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    run(config, listener, stop).await
}

/// Serves `config` on `listener` until `stop` resolves, then lets in-flight
/// deliveries finish and waits for the last commit.
///
/// # Errors
/// When the database cannot be opened.
pub async fn run(
    config: Config,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let metrics = Metrics::new();
    let (store, writer_thread) = Store::open(
        &config.db,
        config.busy_timeout,
        config.keep_days,
        metrics.clone(),
    )?;
    let app = Arc::new(App {
        path: config.path.clone(),
        tolerance: config.tolerance,
        max_body: config.max_body,
        bodies: BodyBudget::new(config.max_body),
        secrets: config.secrets,
        store,
        metrics,
    });
    tracing::info!(
        db = %config.db.display(),
        secrets = app.secrets.len(),
        "listening on http://{addr} (webhook path {})",
        config.path
    );
    if let Err(e) = notify::notify(&format!("READY=1\nSTATUS=listening on {addr}")) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
    let watchdog =
        notify::watchdog_interval().map(|every| tokio::spawn(watchdog(app.clone(), every)));

    http::server::run(listener, app, stop).await;

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

/// Pings systemd's watchdog while `/healthz` would answer 200, so a wedged
/// process, or one whose database file was removed or replaced, is restarted
/// rather than left accepting and failing.
async fn watchdog(app: Arc<App>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if app.store.health().await.is_ok() {
            if let Err(e) = notify::notify("WATCHDOG=1") {
                tracing::debug!(error = %e, "cannot ping the watchdog");
            }
        }
    }
}
