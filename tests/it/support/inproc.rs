//! The in-process harness: `clerk_sync::serve::run` on a tokio runtime of
//! its own thread, so it answers whatever the test's thread is doing (a
//! blocking SQLite query, a `clerk-sync send` waited for), and it stops
//! through a oneshot instead of a signal.
//!
//! No tracing subscriber is installed, so nothing the server logs can be
//! read here; nor are there signals, exit codes, systemd notifications, a
//! command line or an environment of its own. Tests that need any of these
//! use [`super::process`].

use std::future::Future as _;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::mpsc;
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::Duration;

use clerk_sync::config::Config;
use clerk_sync::signature::{Secrets, DEFAULT_TOLERANCE};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{Endpoint, DEFAULT_PATH, SECRET};

const START_TIMEOUT: Duration = Duration::from_secs(10);
/// As long as a process gets to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// After a stop that did not finish in time: how long the forced end (every
/// task dropped with the runtime) may take.
const ABORT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to configure a server. `Default` is what `clerk-sync serve` runs
/// with when only the secret [`SECRET`] is given, on a fresh temporary
/// database.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The secrets' text, as `CLERK_WEBHOOK_SIGNING_SECRET` would hold it.
    pub secrets: String,
    pub tolerance: u64,
    pub max_body: u64,
    pub path: String,
    pub busy_timeout: Duration,
    /// Days of `webhook_events` and `changes` kept; 0 keeps everything.
    pub keep_days: u32,
    /// Use this database instead of a fresh one (restart tests).
    pub db: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            secrets: SECRET.to_string(),
            tolerance: DEFAULT_TOLERANCE,
            // `serve`'s defaults for --max-body, --busy-timeout and --keep-days.
            max_body: 1_048_576,
            path: DEFAULT_PATH.to_string(),
            busy_timeout: Duration::from_millis(5000),
            keep_days: 30,
            db: None,
        }
    }
}

/// A server running in this process. Dropping it stops it as [`InProc::stop`]
/// does, and waits for it.
pub struct InProc {
    endpoint: Endpoint,
    stop: Option<oneshot::Sender<()>>,
    abort: Option<oneshot::Sender<()>>,
    done: mpsc::Receiver<Result<(), String>>,
    thread: Option<JoinHandle<()>>,
    stopped: Option<Result<(), String>>,
    _dir: Option<tempfile::TempDir>,
}

/// A server with the default [`Settings`].
pub fn start_default() -> InProc {
    start(Settings::default())
}

/// Binds 127.0.0.1:0 and starts serving; returns once the database is open
/// and connections are accepted. Panics with the reason if it cannot start.
pub fn start(settings: Settings) -> InProc {
    let (db_path, dir) = match &settings.db {
        Some(p) => (p.clone(), None),
        None => {
            let dir = tempfile::tempdir().expect("tempdir");
            (dir.path().join("clerk.db"), Some(dir))
        }
    };
    let config = Config {
        listen: "127.0.0.1:0".to_string(),
        db: db_path.clone(),
        path: settings.path.clone(),
        secrets: Secrets::parse(&settings.secrets).expect("the test's secrets parse"),
        tolerance: settings.tolerance,
        max_body: settings.max_body,
        busy_timeout: settings.busy_timeout,
        keep_days: settings.keep_days,
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (abort_tx, abort_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<SocketAddr, String>>();
    let (done_tx, done_rx) = mpsc::channel::<Result<(), String>>();
    let thread = std::thread::Builder::new()
        .name("clerk-sync in-process".into())
        .spawn(move || {
            let result = serve(config, stop_rx, abort_rx, ready_tx);
            let _ = done_tx.send(result);
        })
        .expect("spawn the server thread");
    let addr = match ready_rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(addr)) => addr,
        Ok(Err(e)) => panic!("clerk-sync did not start: {e}"),
        Err(_) => {
            let _ = thread.join();
            panic!("clerk-sync did not start within {START_TIMEOUT:?}");
        }
    };
    assert!(
        addr.ip().is_loopback(),
        "server must bind 127.0.0.1, got {addr}"
    );
    InProc {
        endpoint: Endpoint {
            addr,
            db_path,
            path: settings.path,
        },
        stop: Some(stop_tx),
        abort: Some(abort_tx),
        done: done_rx,
        thread: Some(thread),
        stopped: None,
        _dir: dir,
    }
}

/// The server thread: a runtime shaped like the binary's, the listener
/// bound as `serve` binds it, then `run` until the stop (or, failing that,
/// the abort). The runtime is shut down before this returns, as it is
/// before the process exits.
fn serve(
    config: Config,
    stop: oneshot::Receiver<()>,
    abort: oneshot::Receiver<()>,
    ready: mpsc::Sender<Result<SocketAddr, String>>,
) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.saturating_sub(1).max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build a runtime: {e}"))?;
    let result = runtime.block_on(async move {
        let listener = match TcpListener::bind(&config.listen).await {
            Ok(l) => l,
            Err(e) => {
                let e = format!("cannot listen on {}: {e}", config.listen);
                let _ = ready.send(Err(e.clone()));
                return Err(e);
            }
        };
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let stop = async move {
            // A dropped sender stops it too.
            let _ = stop.await;
        };
        let mut run = std::pin::pin!(clerk_sync::serve::run(config, listener, stop));
        // Its first poll opens the database and reaches the accept loop:
        // from then on it is ready, as the process is once it logs its address.
        match std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await {
            Poll::Ready(result) => {
                let e = match result {
                    Ok(()) => "it stopped at once".to_string(),
                    Err(e) => format!("{e:#}"),
                };
                let _ = ready.send(Err(e.clone()));
                return Err(e);
            }
            Poll::Pending => {
                let _ = ready.send(Ok(addr));
            }
        }
        let aborted = async move {
            if abort.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = &mut run => result.map_err(|e| format!("{e:#}")),
            () = aborted => Err(format!("did not stop within {STOP_TIMEOUT:?}")),
        }
    });
    drop(runtime);
    result
}

impl InProc {
    /// Stops the server as a stop signal would (no new connections,
    /// in-flight deliveries finish, the last commit is waited for) and waits,
    /// bounded, for it; then gives what `run` returned. A panic in it is an
    /// `Err` too.
    pub fn stop(&mut self) -> Result<(), String> {
        if let Some(result) = &self.stopped {
            return result.clone();
        }
        let result = match self.finish(STOP_TIMEOUT) {
            Some(result) => result,
            None => {
                self.force();
                panic!("clerk-sync did not stop within {STOP_TIMEOUT:?}");
            }
        };
        self.stopped = Some(result.clone());
        result
    }

    /// Sends the stop and waits up to `limit` for the thread to end; `None`
    /// if it did not.
    fn finish(&mut self, limit: Duration) -> Option<Result<(), String>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = match self.done.recv_timeout(limit) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => return None,
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("the server thread panicked".into()),
        };
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                return Some(Err("the server thread panicked".into()));
            }
        }
        Some(result)
    }

    /// Ends a server that did not stop: its runtime is dropped with every
    /// task on it.
    fn force(&mut self) {
        if let Some(abort) = self.abort.take() {
            let _ = abort.send(());
        }
        if self.done.recv_timeout(ABORT_TIMEOUT).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
        self.stopped = Some(Err("forced to stop".into()));
    }
}

impl Deref for InProc {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        if self.stopped.is_some() {
            return;
        }
        match self.finish(STOP_TIMEOUT) {
            Some(Ok(())) => {}
            Some(Err(e)) => eprintln!("clerk-sync in-process server failed: {e}"),
            None => {
                self.force();
                eprintln!("clerk-sync did not stop within {STOP_TIMEOUT:?}; forced");
            }
        }
    }
}
