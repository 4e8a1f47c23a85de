//! The binary harness: spawn the real `clerk-sync`, wait for the address it
//! logs, collect its output, send it signals and read its exit status; and
//! one-shot runs of the other subcommands.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Endpoint, DEFAULT_PATH, SECRET};

const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub const BIN: &str = env!("CARGO_BIN_EXE_clerk-sync");

/// How to start a server. `Default` = the secret [`SECRET`] in the environment,
/// a fresh temporary database, every other setting at its default.
#[derive(Clone, Debug)]
pub struct Options {
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub tolerance: Option<u64>,
    pub max_body: Option<u64>,
    pub path: Option<String>,
    pub busy_timeout_ms: Option<u64>,
    /// Use this database instead of a fresh one (restart tests).
    pub db: Option<PathBuf>,
    pub extra_env: Vec<(String, String)>,
    /// Pass `--listen` and `--db` as flags (true) or leave them to the caller's env.
    pub listen_and_db_flags: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            secret_env: Some(SECRET.to_string()),
            secret_file: None,
            tolerance: None,
            max_body: None,
            path: None,
            busy_timeout_ms: None,
            db: None,
            extra_env: Vec::new(),
            listen_and_db_flags: true,
        }
    }
}

/// A `Command` for the binary with a clean, predictable environment.
pub fn base_command(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CLERK_")
            || k == "WEBHOOK_SECRET"
            || k == "SIGNING_SECRET"
            || k == "RUST_LOG"
        {
            cmd.env_remove(&k);
        }
    }
    cmd.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .current_dir(cwd)
        .stdin(Stdio::null());
    cmd
}

/// Remove ANSI escape sequences so log assertions see plain text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c2 in chars.by_ref() {
                    if ('@'..='~').contains(&c2) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn parse_listen_line(line: &str) -> Option<SocketAddr> {
    let marker = "listening on http://";
    let at = line.find(marker)? + marker.len();
    let rest = &line[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A running `clerk-sync serve`, killed when dropped unless it exited.
pub struct Process {
    child: Child,
    endpoint: Endpoint,
    logs: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
    _dir: Option<tempfile::TempDir>,
}

impl Process {
    pub fn start() -> Process {
        Process::with(Options::default())
    }

    /// Start and wait (bounded) for the "listening on" line; panics with the
    /// collected output if the server does not come up.
    pub fn with(cfg: Options) -> Process {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db_path, own_dir) = match &cfg.db {
            Some(p) => (p.clone(), None),
            None => (dir.path().join("clerk.db"), Some(dir)),
        };
        let cwd = db_path.parent().expect("db has a parent").to_path_buf();
        let mut cmd = base_command(&cwd);
        cmd.arg("serve");
        if cfg.listen_and_db_flags {
            cmd.arg("--listen").arg("127.0.0.1:0");
            cmd.arg("--db").arg(&db_path);
        }
        if let Some(p) = &cfg.path {
            cmd.arg("--path").arg(p);
        }
        if let Some(t) = cfg.tolerance {
            cmd.arg("--tolerance").arg(t.to_string());
        }
        if let Some(m) = cfg.max_body {
            cmd.arg("--max-body").arg(m.to_string());
        }
        if let Some(b) = cfg.busy_timeout_ms {
            cmd.arg("--busy-timeout").arg(b.to_string());
        }
        if let Some(f) = &cfg.secret_file {
            cmd.arg("--secret-file").arg(f);
        }
        if let Some(s) = &cfg.secret_env {
            cmd.env("CLERK_WEBHOOK_SIGNING_SECRET", s);
        }
        for (k, v) in &cfg.extra_env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn clerk-sync");

        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let stderr = child.stderr.take().expect("stderr piped");
        let stdout = child.stdout.take().expect("stdout piped");
        spawn_log_reader(stderr, logs.clone(), tx.clone());
        spawn_log_reader(stdout, logs.clone(), tx);

        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(a) => break a,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    panic!(
                        "clerk-sync exited before listening ({status:?}); output:\n{}",
                        logs.lock().unwrap()
                    );
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Give the readers a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "clerk-sync exited before listening ({status}); output:\n{}",
                    logs.lock().unwrap()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "clerk-sync did not log `listening on http://` within {START_TIMEOUT:?}; output:\n{}",
                    logs.lock().unwrap()
                );
            }
        };
        assert!(
            addr.ip().is_loopback(),
            "server must bind 127.0.0.1, got {addr}"
        );
        Process {
            child,
            endpoint: Endpoint {
                addr,
                db_path,
                path: cfg.path.clone().unwrap_or_else(|| DEFAULT_PATH.to_string()),
            },
            logs,
            exited: None,
            _dir: own_dir,
        }
    }

    /// Everything the process wrote to stderr and stdout so far (ANSI stripped).
    pub fn logs(&self) -> String {
        strip_ansi(&self.logs.lock().unwrap())
    }

    /// [`Process::logs`] once a line matches `wanted`, or as they are after
    /// `limit`: a line written as an answer goes out may still be on its way
    /// through the pipe when the answer arrives.
    pub fn logs_once(&self, wanted: impl Fn(&str) -> bool, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let logs = self.logs();
            if logs.lines().any(&wanted) || Instant::now() > deadline {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send `signal` (e.g. "-TERM") without waiting.
    pub fn send_signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill {signal} failed");
    }

    /// Wait, bounded, for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let status = wait_bounded(&mut self.child, STOP_TIMEOUT).unwrap_or_else(|| {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "clerk-sync did not exit within {STOP_TIMEOUT:?}; output:\n{}",
                self.logs()
            )
        });
        self.exited = Some(status);
        // Let the reader threads drain the last lines.
        std::thread::sleep(Duration::from_millis(50));
        status
    }

    /// Send `signal` and wait, bounded, for the exit status.
    pub fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        self.send_signal(signal);
        self.wait_exit()
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal_and_wait("-TERM")
    }
}

impl Deref for Process {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn_log_reader<R: Read + Send + 'static>(
    stream: R,
    logs: Arc<Mutex<String>>,
    tx: mpsc::Sender<SocketAddr>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        let mut sent = false;
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if !sent {
                        if let Some(a) = parse_listen_line(&strip_ansi(&line)) {
                            let _ = tx.send(a);
                            sent = true;
                        }
                    }
                    logs.lock().unwrap().push_str(&line);
                }
            }
        }
    });
}

pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Output of a run that is expected to end on its own (refusals, --help).
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run the binary to completion (bounded: 10 s), capturing both streams.
pub fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> Finished {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = base_command(dir.path());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    finish(cmd, args)
}

/// Run `cmd` to completion (bounded: 10 s), capturing both streams.
pub fn finish(mut cmd: Command, args: &[&str]) -> Finished {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn clerk-sync");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = match wait_bounded(&mut child, Duration::from_secs(10)) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("clerk-sync {args:?} did not finish within 10 s (it should have refused to start or printed help)");
        }
    };
    let stdout = strip_ansi(&String::from_utf8_lossy(&t_out.join().unwrap()));
    let stderr = strip_ansi(&String::from_utf8_lossy(&t_err.join().unwrap()));
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// Whether the tests run as root (the permission and mount tests need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uid = s.lines().find(|l| l.starts_with("Uid:"))?;
            Some(uid.split_whitespace().nth(1)? == "0")
        })
        .unwrap_or(false)
}

/// Where `program` is on the PATH, if it is.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
