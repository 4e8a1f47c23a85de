//! Shared harness: spawn the real `clerk-sync` binary, talk HTTP to it, sign
//! deliveries independently of the binary, and read its SQLite file.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::Request;
use hyper_util::rt::TokioIo;
use ring::hmac;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The secret every test server is configured with unless a test says otherwise.
/// 32 random-looking bytes, `whsec_` + standard base64, as Clerk shows them.
pub const SECRET: &str = "whsec_Y2xlcmstc3luYyBpbnRlZ3JhdGlvbiB0ZXN0IGtleSE=";
/// A second endpoint's secret, for rotation tests.
pub const SECRET_B: &str = "whsec_c2Vjb25kIGVuZHBvaW50IHJvdGF0aW9uIGtleSAwMiE=";
/// A secret the server never knows.
pub const OTHER_SECRET: &str = "whsec_YW4gdW5yZWxhdGVkIHRoaXJkIHNlY3JldCBrZXkgMyE=";

pub const DEFAULT_PATH: &str = "/api/clerk-webhook";

const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

pub const BIN: &str = env!("CARGO_BIN_EXE_clerk-sync");

/// Read a fixture shipped with the tests, byte for byte.
pub fn fixture(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()))
}

pub fn fixture_json(rel: &str) -> Value {
    serde_json::from_slice(&fixture(rel)).expect("fixture is JSON")
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

// ---------------------------------------------------------------------------
// Signing (independent of the binary; anchored to published vectors in
// signatures.rs)
// ---------------------------------------------------------------------------

/// `v1,` + base64(HMAC-SHA256(base64decode(secret minus `whsec_`), "{id}.{ts}.{body}")).
pub fn sign(secret: &str, msg_id: &str, ts: &str, body: &[u8]) -> String {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key_bytes = STANDARD
        .decode(b64)
        .expect("test secrets are valid standard base64");
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(msg_id.as_bytes());
    ctx.update(b".");
    ctx.update(ts.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique Svix-style message id.
pub fn unique_msg_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("msg_it{}x{}x{}", std::process::id(), nanos, n)
}

/// A unique Clerk-style user id.
pub fn unique_user_id() -> String {
    unique_msg_id().replacen("msg_", "user_", 1)
}

/// One webhook delivery: id, timestamp, raw body and signature header.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: String,
    pub ts: String,
    pub body: Vec<u8>,
    pub sig: String,
}

impl Delivery {
    /// Signed with [`SECRET`], timestamp now, fresh id.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Self::with_secret(SECRET, body)
    }

    pub fn with_secret(secret: &str, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        let id = unique_msg_id();
        let ts = now_secs().to_string();
        let sig = sign(secret, &id, &ts, &body);
        Delivery { id, ts, body, sig }
    }

    /// Same id and body, new timestamp and signature (what a Svix retry looks like).
    pub fn resigned(&self, secret: &str) -> Self {
        let ts = now_secs().to_string();
        let sig = sign(secret, &self.id, &ts, &self.body);
        Delivery {
            id: self.id.clone(),
            ts,
            body: self.body.clone(),
            sig,
        }
    }

    /// Same id, another body, signed correctly with `secret`.
    pub fn same_id_new_body(&self, secret: &str, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        let ts = now_secs().to_string();
        let sig = sign(secret, &self.id, &ts, &body);
        Delivery {
            id: self.id.clone(),
            ts,
            body,
            sig,
        }
    }

    /// The three svix-* headers plus what Svix sends alongside.
    pub fn headers(&self) -> Vec<(String, Vec<u8>)> {
        let mut h = base_headers();
        h.push(("svix-id".into(), self.id.clone().into_bytes()));
        h.push(("svix-timestamp".into(), self.ts.clone().into_bytes()));
        h.push(("svix-signature".into(), self.sig.clone().into_bytes()));
        h
    }
}

/// Shorthand for [`Delivery::new`].
pub fn delivery(body: impl Into<Vec<u8>>) -> Delivery {
    Delivery::new(body)
}

/// Headers every request carries (content type and a Svix-like user agent).
pub fn base_headers() -> Vec<(String, Vec<u8>)> {
    vec![
        ("content-type".into(), b"application/json".to_vec()),
        ("user-agent".into(), b"Svix-Webhooks/1.0".to_vec()),
    ]
}

/// Build a header list from (name, value) string pairs plus the base headers.
pub fn hdrs(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    let mut h = base_headers();
    for (k, v) in pairs {
        h.push((k.to_string(), v.as_bytes().to_vec()));
    }
    h
}

// ---------------------------------------------------------------------------
// Clerk payloads
// ---------------------------------------------------------------------------

/// A realistic Clerk user object (shape of the OpenAPI example).
pub fn user_data(id: &str, created_at: i64, updated_at: i64) -> Value {
    let email_id = format!("idn_{}", id.trim_start_matches("user_"));
    json!({
        "object": "user",
        "id": id,
        "external_id": format!("ext-{id}"),
        "primary_email_address_id": email_id,
        "primary_phone_number_id": null,
        "primary_web3_wallet_id": null,
        "username": format!("name_{}", updated_at),
        "first_name": "Ada",
        "last_name": "Lovelace",
        "profile_image_url": "https://img.clerk.com/profile",
        "image_url": format!("https://img.clerk.com/{updated_at}"),
        "has_image": true,
        "public_metadata": {"plan": "pro"},
        "private_metadata": null,
        "unsafe_metadata": {},
        "email_addresses": [{
            "id": email_id,
            "object": "email_address",
            "email_address": format!("{}@example.org", id.to_lowercase()),
            "reserved": false,
            "verification": {"status": "verified", "strategy": "email_code"},
            "linked_to": [],
            "created_at": created_at,
            "updated_at": created_at
        }],
        "phone_numbers": [],
        "web3_wallets": [],
        "passkeys": [],
        "password_enabled": true,
        "two_factor_enabled": false,
        "external_accounts": [],
        "saml_accounts": [],
        "enterprise_accounts": [],
        "last_sign_in_at": null,
        "banned": false,
        "locked": false,
        "created_at": created_at,
        "updated_at": updated_at,
        "last_active_at": null
    })
}

/// The envelope Clerk posts.
pub fn envelope(kind: &str, data: Value, timestamp: i64) -> Value {
    json!({
        "data": data,
        "instance_id": "ins_integrationtests",
        "object": "event",
        "timestamp": timestamp,
        "type": kind
    })
}

pub fn to_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialize")
}

/// `user.created` / `user.updated` body; the envelope timestamp is `updated_at`.
pub fn user_event(kind: &str, data: &Value) -> Vec<u8> {
    let ts = data["updated_at"].as_i64().unwrap_or_else(now_ms);
    to_body(&envelope(kind, data.clone(), ts))
}

/// `user.deleted` body: `data` is only `{object, id, deleted}` (+ external_id).
pub fn deleted_event(id: &str, external_id: Option<&str>, timestamp: i64) -> Vec<u8> {
    let mut data = json!({"object": "user", "id": id, "deleted": true});
    if let Some(e) = external_id {
        data["external_id"] = json!(e);
    }
    to_body(&envelope("user.deleted", data, timestamp))
}

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

/// How to start a server. `Default` = the secret [`SECRET`] in the environment,
/// a fresh temporary database, every other setting at its default.
#[derive(Clone, Debug)]
pub struct Config {
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

impl Default for Config {
    fn default() -> Self {
        Config {
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

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub db_path: PathBuf,
    pub path: String,
    logs: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start() -> Server {
        Server::with(Config::default())
    }

    /// Start and wait (bounded) for the "listening on" line; panics with the
    /// collected output if the server does not come up.
    pub fn with(cfg: Config) -> Server {
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
        Server {
            child,
            addr,
            db_path,
            path: cfg.path.clone().unwrap_or_else(|| DEFAULT_PATH.to_string()),
            logs,
            exited: None,
            _dir: own_dir,
        }
    }

    /// Everything the process wrote to stderr and stdout so far (ANSI stripped).
    pub fn logs(&self) -> String {
        strip_ansi(&self.logs.lock().unwrap())
    }

    /// POST to an arbitrary path.
    pub async fn post(&self, path: &str, headers: &[(String, Vec<u8>)], body: &[u8]) -> Resp {
        request(self.addr, "POST", path, headers, body.to_vec()).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, &base_headers(), Vec::new()).await
    }

    /// POST `body` to the webhook path with `headers` sent byte for byte
    /// (values hyper's client would refuse to build included).
    pub async fn post_raw(&self, headers: &[(String, Vec<u8>)], body: &[u8]) -> Resp {
        let length = format!("content-length: {}", body.len());
        let head = raw_head(self.addr, &self.path, headers, &[&length]);
        raw_exchange(self.addr, &head, &[body]).await
    }

    /// POST a delivery to the configured webhook path.
    pub async fn deliver(&self, d: &Delivery) -> Resp {
        self.post(&self.path, &d.headers(), &d.body).await
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

    pub fn db(&self) -> Connection {
        open_db(&self.db_path)
    }
}

impl Drop for Server {
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

// ---------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Assert the body is a JSON object carrying a non-empty human-readable string.
    pub fn assert_json_reason(&self) {
        let v = self
            .json()
            .unwrap_or_else(|| panic!("{} body is not JSON: {:?}", self.status, self.text()));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("{} body is not a JSON object: {v}", self.status));
        assert!(
            obj.values()
                .any(|x| x.as_str().is_some_and(|s| !s.trim().is_empty())),
            "{} body has no human-readable reason: {v}",
            self.status
        );
    }
}

/// One HTTP/1.1 request on a fresh connection (hyper client), bounded in time.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, Vec<u8>)],
    body: Vec<u8>,
) -> Resp {
    let fut = async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http1 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (k, v) in headers {
            b = b.header(
                k.as_str(),
                HeaderValue::from_bytes(v).expect("valid header value"),
            );
        }
        let req = b.body(Full::new(Bytes::from(body))).expect("request");
        let res = sender.send_request(req).await.expect("send request");
        let status = res.status().as_u16();
        let bytes = res
            .into_body()
            .collect()
            .await
            .expect("read body")
            .to_bytes();
        Resp {
            status,
            body: bytes.to_vec(),
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} got no answer within {REQUEST_TIMEOUT:?}"))
}

/// A raw HTTP/1.1 exchange for requests hyper would not build (oversized or
/// chunked bodies the server may refuse early, odd header bytes). The whole
/// `head` must include the final CRLFCRLF. Write errors are ignored (the
/// server may answer and close before reading everything); then the answer
/// is read until EOF, error or the time limit.
pub async fn raw_exchange(addr: SocketAddr, head: &[u8], body_parts: &[&[u8]]) -> Resp {
    let head = head.to_vec();
    let parts: Vec<Vec<u8>> = body_parts.iter().map(|p| p.to_vec()).collect();
    let fut = async move {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut rd, mut wr) = stream.into_split();
        // Write in the background so a server that answers early (413, 400)
        // and stops reading cannot stall the exchange.
        let writer = tokio::spawn(async move {
            if wr.write_all(&head).await.is_err() {
                return wr;
            }
            for part in &parts {
                if wr.write_all(part).await.is_err() {
                    break;
                }
            }
            let _ = wr.flush().await;
            wr
        });
        let mut got = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&chunk[..n]);
                    if response_complete(&got) {
                        break;
                    }
                }
            }
        }
        writer.abort();
        parse_raw_response(&got)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("raw request got no complete answer within {REQUEST_TIMEOUT:?}"))
}

/// Build a raw request head.
pub fn raw_head(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, Vec<u8>)],
    extra: &[&str],
) -> Vec<u8> {
    let mut h =
        format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n").into_bytes();
    for (k, v) in headers {
        h.extend_from_slice(k.as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(v);
        h.extend_from_slice(b"\r\n");
    }
    for line in extra {
        h.extend_from_slice(line.as_bytes());
        h.extend_from_slice(b"\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split_head(raw: &[u8]) -> Option<(String, &[u8])> {
    let end = find(raw, b"\r\n\r\n")?;
    Some((
        String::from_utf8_lossy(&raw[..end]).into_owned(),
        &raw[end + 4..],
    ))
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn response_complete(raw: &[u8]) -> bool {
    let Some((head, rest)) = split_head(raw) else {
        return false;
    };
    if let Some(len) = header_value(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        return rest.len() >= len;
    }
    if header_value(&head, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return find(rest, b"0\r\n\r\n").is_some();
    }
    false
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(rest, b"\r\n") {
        let size_txt = String::from_utf8_lossy(&rest[..eol]);
        let size =
            usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        rest = &rest[eol + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[(size + 2).min(rest.len())..];
    }
    out
}

fn parse_raw_response(raw: &[u8]) -> Resp {
    let (head, rest) = split_head(raw).unwrap_or_else(|| {
        panic!(
            "no HTTP response head received; got {:?}",
            String::from_utf8_lossy(raw)
        )
    });
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let body = if let Some(len) =
        header_value(&head, "content-length").and_then(|v| v.parse::<usize>().ok())
    {
        rest[..len.min(rest.len())].to_vec()
    } else if header_value(&head, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Resp { status, body }
}

// ---------------------------------------------------------------------------
// Database
// ---------------------------------------------------------------------------

pub fn open_db(path: &Path) -> Connection {
    let c = Connection::open(path).expect("open database");
    c.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    c
}

/// The columns the contract defines for `users`, in contract order.
pub const USER_COLUMNS: &str = "clerk_id, email, first_name, last_name, username, image_url, external_id, created_at, updated_at, deleted_at, data";

#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub clerk_id: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub image_url: Option<String>,
    pub external_id: Option<String>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub data: Option<String>,
}

impl UserRow {
    pub fn data_json(&self) -> Option<Value> {
        self.data
            .as_deref()
            .map(|d| serde_json::from_str(d).expect("users.data is JSON"))
    }
}

pub fn user_row(c: &Connection, clerk_id: &str) -> Option<UserRow> {
    c.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE clerk_id = ?1"),
        [clerk_id],
        |r| {
            Ok(UserRow {
                clerk_id: r.get(0)?,
                email: r.get(1)?,
                first_name: r.get(2)?,
                last_name: r.get(3)?,
                username: r.get(4)?,
                image_url: r.get(5)?,
                external_id: r.get(6)?,
                created_at: r.get(7)?,
                updated_at: r.get(8)?,
                deleted_at: r.get(9)?,
                data: r.get(10)?,
            })
        },
    )
    .optional()
    .expect("query users")
}

/// Every contract column of every row, ordered by clerk_id, as raw SQLite values.
pub fn all_users(c: &Connection) -> Vec<Vec<SqlValue>> {
    let mut st = c
        .prepare(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY clerk_id"
        ))
        .expect("prepare");
    let rows = st
        .query_map([], |r| (0..11).map(|i| r.get::<_, SqlValue>(i)).collect())
        .expect("query");
    rows.map(|r| r.expect("row")).collect()
}

pub fn count(c: &Connection, table: &str) -> i64 {
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

/// (type, received_at) of a webhook_events row.
pub fn event_row(c: &Connection, id: &str) -> Option<(String, i64)> {
    c.query_row(
        "SELECT type, received_at FROM webhook_events WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .expect("query webhook_events")
}

pub fn event_count_for(c: &Connection, id: &str) -> i64 {
    c.query_row(
        "SELECT count(*) FROM webhook_events WHERE id = ?1",
        [id],
        |r| r.get(0),
    )
    .expect("count webhook_events")
}

/// Assert a response status with the body in the failure message.
#[track_caller]
pub fn assert_status(r: &Resp, want: u16, what: &str) {
    assert_eq!(
        r.status,
        want,
        "{what}: expected {want}, got {} with body {:?}",
        r.status,
        r.text()
    );
}

// ---------------------------------------------------------------------------
// Tiny seeded PRNG (splitmix64) for the randomized test.
// ---------------------------------------------------------------------------

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// One delivery on a fresh connection. Unlike [`request`], a connection cut
/// by a dying server is `None` instead of a panic.
pub async fn try_deliver(addr: SocketAddr, path: &str, d: &Delivery) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let mut req = Request::post(path).header("host", addr.to_string());
    for (k, v) in d.headers() {
        req = req.header(k, v);
    }
    let req = req.body(Full::new(Bytes::from(d.body.clone()))).ok()?;
    let res = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(req))
        .await
        .ok()?
        .ok()?;
    let status = res.status().as_u16();
    res.into_body().collect().await.ok()?;
    Some(status)
}

/// `(index of the delivery, status or None)`, shared by concurrent senders.
pub type Answers = Arc<Mutex<Vec<(usize, Option<u16>)>>>;

/// Sends every delivery from `conns` concurrent senders, each taking the
/// next one not yet sent, and records `(index, status)` in `results` as
/// answers arrive (`None`: the connection failed, and that sender stops).
/// Await the returned tasks to know all are done.
pub fn send_concurrently(
    addr: SocketAddr,
    path: &str,
    deliveries: Arc<Vec<Delivery>>,
    conns: usize,
    results: Answers,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next = Arc::new(AtomicU64::new(0));
    (0..conns)
        .map(|_| {
            let (deliveries, next, results, path) = (
                deliveries.clone(),
                next.clone(),
                results.clone(),
                path.to_owned(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    let Some(d) = deliveries.get(i) else { break };
                    let status = try_deliver(addr, &path, d).await;
                    results.lock().unwrap().push((i, status));
                    if status.is_none() {
                        break;
                    }
                }
            })
        })
        .collect()
}
