//! Siege: how `clerk-sync serve` holds up against strangers and bad luck,
//! measured from outside, the same way for any build of the binary.
//!
//! It starts the given binary on a fresh database, runs one hostile
//! scenario against it on 127.0.0.1, and meanwhile sends genuine signed
//! deliveries, one at a time on fresh connections, timing each answer. Every
//! run is bounded in time and stops the server at the end.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example siege -- --scenario bodies --hostile 1000
//! cargo run --release --example siege -- --scenario trickle --hostile 1000
//! cargo run --release --example siege -- --scenario silent --hostile 1300
//! cargo run --release --example siege -- --scenario disk     # as root: mounts a tmpfs
//! cargo run --release --example siege -- --bin /path/to/other/clerk-sync --scenario bodies
//! cargo run --release --example siege -- --listen 127.0.0.1:18080 --via 127.0.0.1:18081 --scenario silent
//! ```
//!
//! With `--via`, strangers and deliveries go to a proxy (started by hand,
//! forwarding to `--listen`) instead of to clerk-sync itself.
//!
//! Scenarios:
//! - `bodies`: each hostile connection sends well-formed headers with a
//!   forged signature and `content-length: 1048576`, then no body; when the
//!   server closes it, it connects again at once.
//! - `trickle`: the same, but sending one byte of the body a second.
//! - `silent`: each hostile connection sends nothing at all, and is opened
//!   again as soon as the server closes it.
//! - `disk`: no strangers. The database lives on a 2 MiB tmpfs; 600
//!   deliveries of about 2.5 KB go over 16 connections; the file system then
//!   grows to 8 MiB and the refused ones are sent again, back to back, in
//!   rounds, until all land or a round lands none; then 600 new ones. Each
//!   step reports the sizes of the database file and its log.
//!
//! The report gives, for the genuine deliveries, how many were answered
//! `200`, how many within 2 s and within 15 s, and the latencies.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use clerk_sync::signature::Secrets;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const SECRET: &str = "whsec_c2llZ2UgbWVhc3VyZW1lbnQgc2VjcmV0IGtleSAwMQ==";
const PATH: &str = "/api/clerk-webhook";
/// The longest any one genuine delivery is waited for.
const ANSWER_LIMIT: Duration = Duration::from_secs(20);

#[derive(Parser, Debug)]
#[command(about = "Hostile scenarios against clerk-sync serve, with genuine deliveries timed")]
struct Args {
    /// The clerk-sync binary to measure.
    #[arg(long, default_value = "target/release/clerk-sync")]
    bin: PathBuf,
    #[arg(long, value_enum, default_value = "bodies")]
    scenario: Scenario,
    /// Hostile connections kept open at once.
    #[arg(long, default_value_t = 1000)]
    hostile: usize,
    /// Genuine deliveries sent while under attack.
    #[arg(long, default_value_t = 30)]
    genuine: usize,
    /// Time between genuine deliveries, in milliseconds.
    #[arg(long, default_value_t = 500)]
    every_ms: u64,
    /// How long the strangers get to settle in before the first genuine delivery, in seconds.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Show the server's log lines at this level (a `RUST_LOG` filter).
    #[arg(long)]
    server_log: Option<String>,
    /// Where clerk-sync listens (a fixed port, for a proxy in front).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Send everything here instead, to a proxy in front of `--listen`.
    #[arg(long)]
    via: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Scenario {
    Bodies,
    Trickle,
    Silent,
    Disk,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("siege: error: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("siege: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    if !args.bin.exists() {
        bail!(
            "no binary at {}: run `cargo build --release` or pass --bin",
            args.bin.display()
        );
    }
    if args.scenario == Scenario::Disk {
        return disk(args).await;
    }
    let dir = tempfile::tempdir()?;
    let server = Server::start(
        &args.bin,
        &dir.path().join("siege.db"),
        &args.listen,
        args.server_log.as_deref(),
    )?;
    let addr = args.via.unwrap_or(server.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let mut strangers = Vec::new();
    for _ in 0..args.hostile {
        let (stop, opened) = (stop.clone(), opened.clone());
        let scenario = args.scenario;
        strangers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                opened.fetch_add(1, Ordering::Relaxed);
                stranger(addr, scenario, &stop).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let secrets = Secrets::parse(SECRET)?;
    let mut latencies = Vec::new();
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..args.genuine {
        let started = Instant::now();
        let status = deliver(addr, &secrets, &format!("siege{i}"), 2500).await;
        let took = started.elapsed();
        *statuses.entry(status_text(status)).or_default() += 1;
        latencies.push((status, took));
        let pause = Duration::from_millis(args.every_ms).saturating_sub(took);
        tokio::time::sleep(pause).await;
    }
    stop.store(true, Ordering::Relaxed);
    for s in strangers {
        s.abort();
    }
    let connections = opened.load(Ordering::Relaxed);
    let exit = server.stop()?;
    println!(
        "scenario {:?}, {} hostile connections ({} opened in all), binary {}{}",
        args.scenario,
        args.hostile,
        connections,
        args.bin.display(),
        args.via
            .map_or_else(String::new, |v| format!(", through {v}"))
    );
    report(&latencies, &statuses);
    println!("server exit: {exit}");
    Ok(())
}

/// One hostile connection, until the server closes it (or 30 s pass).
async fn stranger(addr: SocketAddr, scenario: Scenario, stop: &AtomicBool) {
    let Ok(Ok(mut c)) =
        tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(addr)).await
    else {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return;
    };
    let ts = now_secs();
    if scenario != Scenario::Silent {
        let head = format!(
            "POST {PATH} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             svix-id: msg_forged{ts}\r\nsvix-timestamp: {ts}\r\n\
             svix-signature: v1,Zm9yZ2VkIHNpZ25hdHVyZSBmb3JnZWQgc2lnbmF0dXJlIQ==\r\n\
             content-length: 1048576\r\n\r\n"
        );
        if c.write_all(head.as_bytes()).await.is_err() {
            return;
        }
    }
    let (mut rd, mut wr) = c.into_split();
    let trickle = async {
        if scenario == Scenario::Trickle {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if wr.write_all(b"x").await.is_err() {
                    break;
                }
            }
        }
        std::future::pending::<()>().await;
    };
    let mut sink = [0u8; 4096];
    let read_to_end = async {
        while !stop.load(Ordering::Relaxed) {
            match rd.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            () = read_to_end => {}
            () = trickle => {}
        }
    })
    .await;
}

/// A signed `user.created` of about `size` bytes on a fresh connection;
/// the status, or `None` when no answer came within [`ANSWER_LIMIT`].
async fn deliver(addr: SocketAddr, secrets: &Secrets, id: &str, size: usize) -> Option<u16> {
    let body = user_created(id, size);
    let ts = now_secs();
    let signature = secrets.sign(id, ts, &body);
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         svix-id: {id}\r\nsvix-timestamp: {ts}\r\nsvix-signature: {signature}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let exchange = async {
        let mut c = TcpStream::connect(addr).await.ok()?;
        c.write_all(head.as_bytes()).await.ok()?;
        c.write_all(&body).await.ok()?;
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = c.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&got);
        text.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(ANSWER_LIMIT, exchange)
        .await
        .ok()
        .flatten()
}

fn user_created(id: &str, size: usize) -> Vec<u8> {
    let now = now_secs() * 1000;
    let head = format!(
        r#"{{"type":"user.created","object":"event","timestamp":{now},"data":{{"id":"user_{id}","object":"user","created_at":{now},"updated_at":{now},"first_name":"Siege","public_metadata":{{"pad":""#
    );
    let tail = r#""}}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "p".repeat(pad)).into_bytes()
}

fn status_text(status: Option<u16>) -> String {
    status.map_or_else(|| "no answer".to_owned(), |s| s.to_string())
}

fn report(
    latencies: &[(Option<u16>, Duration)],
    statuses: &std::collections::BTreeMap<String, usize>,
) {
    let ok: Vec<Duration> = latencies
        .iter()
        .filter(|(s, _)| *s == Some(200))
        .map(|(_, d)| *d)
        .collect();
    let within = |limit: Duration| ok.iter().filter(|d| **d <= limit).count();
    let mut all: Vec<Duration> = latencies.iter().map(|(_, d)| *d).collect();
    all.sort();
    let pick = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "genuine deliveries: {} sent; answers {:?}",
        latencies.len(),
        statuses
    );
    println!(
        "200 within 2 s: {} of {}; 200 within 15 s: {} of {}",
        within(Duration::from_secs(2)),
        latencies.len(),
        within(Duration::from_secs(15)),
        latencies.len()
    );
    println!(
        "latency ms: median {:.0}, p90 {:.0}, max {:.0}",
        pick(0.5),
        pick(0.9),
        pick(1.0)
    );
}

async fn disk(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        bail!("cannot mount a tmpfs (needs root)");
    }
    let unmount = Unmount(dir.path().to_owned());
    let db = dir.path().join("siege.db");
    let server = Server::start(&args.bin, &db, &args.listen, args.server_log.as_deref())?;
    let secrets = Arc::new(Secrets::parse(SECRET)?);
    let ids: Vec<String> = (0..600).map(|i| format!("disk{i}")).collect();
    let (landed, refused) = send_all(server.addr, &secrets, &ids, 16).await;
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    println!(
        "binary {}: 2 MiB file system, {} deliveries over 16 connections: {} answered 200, {} refused; database {} KiB, log {} KiB",
        args.bin.display(),
        ids.len(),
        landed,
        refused.len(),
        file_kib(&db),
        file_kib(&wal)
    );
    // As an operator would: some time passes before there is room again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = Command::new("mount")
        .args(["-o", "remount,size=8m"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !grown {
        bail!("cannot grow the tmpfs");
    }
    let mut left = refused;
    for round in 1..=5 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (landed, refused) = send_all(server.addr, &secrets, &left, 16).await;
        println!(
            "grown to 8 MiB, round {round}: {} sent again back to back: {landed} answered 200, {} refused; database {} KiB, log {} KiB",
            left.len(),
            refused.len(),
            file_kib(&db),
            file_kib(&wal)
        );
        let stuck = landed == 0;
        left = refused;
        if stuck {
            break;
        }
    }
    println!("in the end: {} of {} never landed", left.len(), ids.len());
    // And then the deliveries of the following hours, on the same 8 MiB.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later: Vec<String> = (0..600).map(|i| format!("later{i}")).collect();
    let (landed, refused) = send_all(server.addr, &secrets, &later, 16).await;
    println!(
        "then {} new deliveries: {landed} answered 200, {} refused; database {} KiB, log {} KiB",
        later.len(),
        refused.len(),
        file_kib(&db),
        file_kib(&wal)
    );
    let exit = server.stop()?;
    println!("server exit: {exit}");
    drop(unmount);
    Ok(())
}

/// Sends every id from `conns` concurrent senders; the count of 200s and the
/// ids refused (any other answer, or none).
async fn send_all(
    addr: SocketAddr,
    secrets: &Arc<Secrets>,
    ids: &[String],
    conns: usize,
) -> (usize, Vec<String>) {
    let queue = Arc::new(std::sync::Mutex::new(ids.to_vec()));
    let refused = Arc::new(std::sync::Mutex::new(Vec::new()));
    let landed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let (queue, refused, landed, secrets) = (
                queue.clone(),
                refused.clone(),
                landed.clone(),
                secrets.clone(),
            );
            tokio::spawn(async move {
                while let Some(id) = queue.lock().map(|mut q| q.pop()).ok().flatten() {
                    match deliver(addr, &secrets, &id, 2500).await {
                        Some(200) => {
                            landed.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => refused.lock().map(|mut r| r.push(id)).unwrap_or(()),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let refused = refused.lock().map(|r| r.clone()).unwrap_or_default();
    (landed.load(Ordering::Relaxed) as usize, refused)
}

fn file_kib(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len() / 1024)
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `clerk-sync serve` on a free port, stopped (SIGTERM, then kill) at the end.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(bin: &Path, db: &Path, listen: &str, log: Option<&str>) -> anyhow::Result<Server> {
        let show = log.is_some();
        let filter = log.map_or_else(
            || "clerk_sync::serve=info,error".to_owned(),
            |l| format!("clerk_sync::serve=info,{l}"),
        );
        let mut child = Command::new(bin)
            .args(["serve", "--listen", listen, "--db"])
            .arg(db)
            .env_clear()
            .env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if show {
                    println!("server: {line}");
                }
                if !sent {
                    if let Some(at) = line.find("listening on http://") {
                        let rest = &line[at + "listening on http://".len()..];
                        let end = rest.find(' ').unwrap_or(rest.len());
                        if let Ok(addr) = rest[..end].parse::<SocketAddr>() {
                            let _ = tx.send(addr);
                            sent = true;
                        }
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(addr) => Ok(Server { child, addr }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the server did not report its address within 10 s")
            }
        }
    }

    fn stop(mut self) -> anyhow::Result<String> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.to_string());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Ok("killed: no exit within 40 s of SIGTERM".to_owned());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
