//! A future that resolves when the process is asked to stop.
//!
//! systemd sends SIGTERM; a terminal sends SIGINT. Either one starts the
//! graceful shutdown in [`crate::http::server::run`].

use std::future::Future;

/// Starts listening for SIGTERM and SIGINT now, so a signal that comes while
/// the server is still starting is not lost (nor fatal), and returns a
/// future that resolves on the first of them.
///
/// # Errors
/// When the signal handlers cannot be installed.
#[cfg(unix)]
pub fn on_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
        }
    })
}

/// Resolves on Ctrl-C.
///
/// # Errors
/// Never, on this platform; the signature matches the Unix one.
#[cfg(not(unix))]
pub fn on_signal() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
